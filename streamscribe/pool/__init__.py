"""A shared decode pool on Ray Serve, so that session front-ends scale apart from the models.

Sessions (WebSockets, VAD, agreement, turns) stay in front-end processes; their stateless
`DecodeRequest`s go to model replicas of one Ray Serve deployment (`deployment`), reached
through `client.RayPoolTranscriber`, which is just another `Transcriber`. `ray` is optional:
nothing here is imported unless `--decoder ray` or `streamscribe pool` is used.
"""

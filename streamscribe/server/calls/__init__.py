"""Call transcription, ACS-style: jobs over REST, a call's audio in, transcripts pushed out.

`routes.py` is the HTTP/WebSocket surface; `job.py` the job's state machine and actions;
`media.py` the call's audio, one engine stream per participant (on `stream/host.py`'s services);
`push.py` the outbound socket and callbacks to the customer's endpoints.
"""

from streamscribe.server.calls import routes

routers = [routes.router]

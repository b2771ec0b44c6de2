"""The one live-stream core: every dialect's socket session runs through `loop.py`.

`loop.py` receives, feeds the dialect and the runner, and sends through its own ordered outbox;
`wire.py` is the one place that sends, refuses and closes; `host.py` is what every live stream
(a socket's session, a call's participant) gets from the server: books, registry, recording,
back-pressure, turn writes, the latency hook.
"""

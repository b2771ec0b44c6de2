"""A token or key passed in a URL (as browsers must) never appears in the server's log."""

from __future__ import annotations

import contextlib
import time

import websockets


async def test_a_token_in_the_url_is_not_logged(server):
    secret = "tok-must-not-be-logged-7f3a9"
    with contextlib.suppress(Exception):
        async with websockets.connect(
            f"{server.ws}/v3/ws?sample_rate=16000&token={secret}", open_timeout=10
        ) as ws:
            await ws.recv()
    time.sleep(0.5)
    log = server.log.read_text()
    assert "token=***" in log  # the request was logged...
    assert secret not in log  # ...without its credential

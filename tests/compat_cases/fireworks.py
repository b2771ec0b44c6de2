"""Matrix row: Fireworks streaming, driven by a client written from the protocol document
(tests/drivers/fireworks_client.py; Fireworks publishes no Python SDK for this endpoint)."""

from __future__ import annotations

import asyncio
import json

from drivers.fireworks_client import PATH, stream
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from compat_cases import BadOutcome, Outcome


def kind(message: dict) -> str:
    if "checkpoint_id" in message:
        return f"checkpoint:{message['checkpoint_id']}"
    if "error" in message:
        return "error"
    return "update" if "segments" in message else "other"


class FireworksCase:
    name = "fireworks"
    first = "update"
    last = "checkpoint:final"
    clean_close = 1000
    bad_code = 1003

    def stream(self, server, speech) -> Outcome:
        streamed = asyncio.run(stream(server.ws, speech.pcm16(), speed=3.0))
        return Outcome(
            transcript=streamed.transcript,
            messages=[kind(m) for m in streamed.messages],
            close_code=streamed.close_code,
        )

    def bad_input(self, server) -> BadOutcome:
        async def run() -> BadOutcome:
            async with connect(f"{server.ws}{PATH}?language=en", open_timeout=10) as ws:
                await ws.send("this is not JSON")
                error = ""
                try:
                    async for raw in ws:
                        error = raw
                except ConnectionClosed:
                    pass
            message = json.loads(error) if error else {}
            return BadOutcome(ws.close_code or 0, message.get("error", {}).get("message", ""))

        return asyncio.run(run())


CASE = FireworksCase()

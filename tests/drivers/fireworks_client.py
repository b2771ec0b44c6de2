"""A Fireworks streaming client written from the protocol document (no official SDK exists).

It does what the Fireworks cookbook and the LiveKit plugin do (shared/protocols/
fireworks-streaming.md §3, §6): 16 kHz PCM16 in binary frames at real-time pace, barriers as
JSON text, every update upserted into the segment state by integer id, and on the echo of the
`"final"` checkpoint (or trace) the client closes the socket itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

PATH = "/v1/audio/transcriptions/streaming"


@dataclass
class Streamed:
    messages: list[dict[str, Any]] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)  # seconds since the first frame
    segments: dict[int, dict[str, Any]] = field(default_factory=dict)  # upserted by id
    sent_at: dict[str, float] = field(default_factory=dict)  # barrier -> when it was sent
    close_code: int | None = None
    close_reason: str = ""
    client_closed: bool = False  # the client closed after the final echo (the normal end)

    @property
    def updates(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if "segments" in m]

    @property
    def transcript(self) -> str:
        return " ".join(self.segments[k]["text"] for k in sorted(self.segments)).strip()

    def echo_index(self, key: str, value: Any) -> int:
        return next(i for i, m in enumerate(self.messages) if m.get(key) == value)


def frames(pcm: bytes, chunk_ms: int = 50) -> list[bytes]:
    step = 32 * chunk_ms
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


async def stream(
    base: str,
    pcm: bytes,
    *,
    query: str = "language=en",
    headers: dict[str, str] | None = None,
    chunk_ms: int = 50,
    speed: float = 1.0,
    barriers: Sequence[tuple[float, dict[str, Any]]] = (),
    final: dict[str, Any] | None = None,
    timeout: float = 90.0,
) -> Streamed:
    """Stream `pcm`, send each barrier once `at` seconds of audio are out, then the final one."""
    out = Streamed()
    final = final if final is not None else {"checkpoint_id": "final"}
    url = f"{base}{PATH}?{query}" if query else f"{base}{PATH}"
    t0 = time.monotonic()
    async with websockets.connect(url, additional_headers=headers or {}, open_timeout=10) as ws:

        async def send() -> None:
            pending = sorted(barriers, key=lambda b: b[0])
            for k, chunk in enumerate(frames(pcm, chunk_ms)):
                sent_s = k * chunk_ms / 1000
                while pending and pending[0][0] <= sent_s:
                    message = pending.pop(0)[1]
                    out.sent_at[json.dumps(message)] = time.monotonic() - t0
                    await ws.send(json.dumps(message))
                delay = t0 + sent_s / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await ws.send(chunk)
            for _, message in pending:
                await ws.send(json.dumps(message))
            out.sent_at[json.dumps(final)] = time.monotonic() - t0
            await ws.send(json.dumps(final))

        async def receive() -> None:
            async for raw in ws:
                message = json.loads(raw)
                out.messages.append(message)
                out.received_at.append(time.monotonic() - t0)
                if message.get("checkpoint_id") == "final" or message.get("trace_id") == "final":
                    out.client_closed = True
                    await ws.close()
                    return
                for segment in message.get("segments") or []:
                    out.segments[segment["id"]] = segment

        sender = asyncio.create_task(send())
        try:
            await asyncio.wait_for(receive(), timeout)
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender
    out.close_code = ws.close_code
    out.close_reason = ws.close_reason or ""
    return out

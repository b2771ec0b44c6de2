"""The request-head bounds count only bytes of heads, never bodies (uvicorn protocol, no socket).

A read that holds a whole request (its head and a body longer than the head limit) is not a head:
uploads on a kept-alive connection were refused 431 when the server read one in a single chunk.
"""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.server import ServerState

from streamscribe.server.uvicorn_protocols import RequestDeadlineHttp


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


async def _app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def protocol() -> tuple[RequestDeadlineHttp, Transport]:
    config = uvicorn.Config(_app, log_config=None)
    config.load()
    proto = RequestDeadlineHttp(config, ServerState(), app_state={})
    transport = Transport()
    proto.connection_made(transport)
    return proto, transport


def request(body_bytes: int) -> bytes:
    head = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % body_bytes
    return head + b"x" * body_bytes


async def test_whole_requests_with_long_bodies_in_one_read_are_not_heads():
    proto, transport = protocol()
    for _ in range(3):
        proto.data_received(request(200_000))  # head + body past the 64 KiB head limit
        await asyncio.sleep(0.01)
    assert b" 431 " not in transport.written and not transport.closed, transport.written[:200]


async def test_a_head_still_growing_past_the_limit_is_refused():
    proto, transport = protocol()
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
    for _ in range(3):
        proto.data_received(b"a" * 40_000)
    assert transport.written.startswith(b"HTTP/1.1 431 "), transport.written[:200]
    assert transport.closed

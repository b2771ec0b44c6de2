"""uvicorn protocol subclasses that bound what a hostile client can make the server hold.

- `FlowControlledWebSocket`: stop reading from a client whose send buffer is full (a client
  that floods pings and never reads the pongs would otherwise grow memory without bound), and
  answer a handshake the WebSocket layer refused (e.g. an over-long request head) at once
  instead of leaving the client waiting.
- `RequestDeadlineHttp`: bound every request head before any work is done for it: its size
  (request target, header count, total bytes; 414/431 answered at once, the rest never read)
  and the time it may take to arrive (slowloris), so neither huge nor half-open heads can pile
  up. WebSocket handshakes are HTTP requests until their head is complete, so the same bounds
  hold for them. `bounded(settings)` makes a subclass carrying the configured limits (uvicorn
  builds protocols from a class).

httptools accumulates a header's value inside the parser until the value ends, so the head's
size is counted here from the raw bytes received, not from the parser's callbacks.
"""

from __future__ import annotations

import contextlib
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

HEAD_DEADLINE_S = 10.0
MAX_HEAD_BYTES = 64 * 1024
MAX_LINE_BYTES = 32 * 1024
MAX_HEADERS = 100


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a refused head."""


_REASONS = {414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class FlowControlledWebSocket(WebSocketsSansIOProtocol):
    def pause_writing(self) -> None:
        super().pause_writing()
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if not self.read_paused:
            self.transport.resume_reading()

    async def receive(self):  # type: ignore[override]
        message = await self.queue.get()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            if self.writable.is_set():  # never resume reading while the peer is not reading
                self.transport.resume_reading()
        return message

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()


class RequestDeadlineHttp(HttpToolsProtocol):
    head_deadline_s: float = HEAD_DEADLINE_S
    max_head_bytes: int = MAX_HEAD_BYTES
    max_line_bytes: int = MAX_LINE_BYTES
    max_headers: int = MAX_HEADERS

    @classmethod
    def bounded(cls, settings: Any) -> type[RequestDeadlineHttp]:
        """A subclass with the limits of `settings` (a `Settings`)."""
        return type(
            cls.__name__,
            (cls,),
            {
                "head_deadline_s": settings.request_head_timeout_seconds,
                "max_head_bytes": settings.max_request_head_bytes,
                "max_line_bytes": settings.max_request_line_bytes,
                "max_headers": settings.max_request_headers,
            },
        )

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head = False  # inside a request head that is not complete yet
        self._began = False  # a request began inside the chunk being parsed
        self._completed = False  # a request head ended inside the chunk being parsed
        self._raw_bytes = 0  # bytes of chunks that lay wholly inside the head
        self._head_bytes = 0  # the head's fields as parsed
        self._header_count = 0
        self._refused = False
        self._head_deadline = None
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.head_deadline_s, self.transport.close)

    def _disarm_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _refuse(self, status: int, limit: str) -> None:
        """Answer `status` naming the limit, and read nothing more from this connection."""
        if self._refused:
            raise _Refused
        self._refused = True
        self._disarm_deadline()
        body = (
            f"{_REASONS[status].decode()}: {limit}. Send a smaller request "
            "(the server's limits are STREAMSCRIBE_MAX_REQUEST_* settings).\n"
        ).encode()
        head = b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n" % (
            status,
            _REASONS[status],
        )
        head += b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        self.transport.write(head + body)
        self.transport.close()
        self.logger.warning("refused a request head: %s", limit)
        raise _Refused

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # a refused head was answered already
            super().send_400_response(msg)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._began = self._completed = False
        super().data_received(data)
        if self._refused or not self._in_head or self._began or self._completed:
            return
        # the whole chunk went to a head that is still incomplete (a chunk where a request began
        # or a head ended also holds another request's bytes: the next chunk is counted, and the
        # parsed fields are bounded by `on_header` anyway)
        self._raw_bytes += len(data)
        if self._raw_bytes > self.max_head_bytes:
            with contextlib.suppress(_Refused):
                self._refuse(431, f"request head over {self.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._began = True
        self._raw_bytes = 0
        self._header_count = 0
        self._head_bytes = 0
        self._arm_deadline()  # the next request of a kept-alive connection gets a deadline too

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_line_bytes:
            self._refuse(414, f"request target over {self.max_line_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._header_count > self.max_headers:
            self._refuse(431, f"more than {self.max_headers} header fields")
        elif self._head_bytes > self.max_head_bytes:
            self._refuse(431, f"request head over {self.max_head_bytes} bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return  # no work at all for a refused head
        self._disarm_deadline()
        self._in_head = False
        self._completed = True
        self._raw_bytes = 0
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)

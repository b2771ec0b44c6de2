"""uvicorn protocol subclasses that bound what a hostile client can make the server hold.

- `FlowControlledWebSocket`: stop reading from a client whose send buffer is full (a client
  that floods pings and never reads the pongs would otherwise grow memory without bound), and
  answer a handshake the WebSocket layer refused (e.g. an over-long request head) at once
  instead of leaving the client waiting.
- `RequestDeadlineHttp`: close connections that have not finished sending their request head
  within a deadline (slowloris), so half-open handshakes cannot pile up.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

HEAD_DEADLINE_S = 10.0


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
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline = self.loop.call_later(HEAD_DEADLINE_S, self.transport.close)

    def on_headers_complete(self) -> None:
        self._head_deadline.cancel()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        deadline = getattr(self, "_head_deadline", None)
        if deadline is not None:
            deadline.cancel()
        super().connection_lost(exc)

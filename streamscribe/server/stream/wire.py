"""The one place that writes to a client's socket: frames, refusals and closes.

Every live route refuses the same way (after the upgrade: the dialect's error frames, then its
close code; before it: an HTTP status with the dialect's body), and every session sends the
same way (each frame bounded in time, a peer that stops reading is gone, a close ends sending,
close codes other than 1000 are counted). Dialects decide *what* to send; this module only sends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketState

from streamscribe.protocols.common import Close, Outgoing, close_reason
from streamscribe.server.metrics import Metrics

SEND_TIMEOUT_S = 10.0  # a client that stops reading is treated as gone after this


class Wire:
    """A client socket that sends a dialect's frames until one of them closes it."""

    def __init__(self, ws: WebSocket, metrics: Metrics | None) -> None:
        self.ws = ws
        self.metrics = metrics
        self.closed = False

    async def send(self, outgoing: list[Outgoing]) -> None:
        """Send frames in order; a `Close` closes the socket and ends sending for good."""
        for out in outgoing:
            if self.closed:
                return
            try:
                if isinstance(out, Close):
                    self.closed = True
                    if out.code != 1000 and self.metrics is not None:
                        self.metrics.errors.labels(str(out.code)).inc()
                    await asyncio.wait_for(self.ws.close(out.code, out.reason), SEND_TIMEOUT_S)
                    return
                await asyncio.wait_for(self.ws.send_text(out.text), SEND_TIMEOUT_S)
            except Exception:  # the peer went away mid-send
                self.closed = True
                return

    @property
    def open(self) -> bool:
        return not self.closed and self.ws.application_state == WebSocketState.CONNECTED

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket if nothing closed it yet (the reason cut to fit a close frame)."""
        if self.open:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(code, close_reason(reason)), SEND_TIMEOUT_S)
        self.closed = True


async def refuse(ws: WebSocket, metrics: Metrics, outgoing: list[Outgoing]) -> None:
    """Refuse an accepted socket: the dialect's error frames, then its close."""
    await Wire(ws, metrics).send(outgoing)


async def deny(
    ws: WebSocket,
    metrics: Metrics,
    status: int,
    body: Any,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Refuse the upgrade itself with an HTTP status and a JSON body, as some clouds do."""
    metrics.errors.labels(str(status)).inc()
    try:
        await ws.send_denial_response(JSONResponse(body, status, headers=dict(headers or {})))
    except RuntimeError:  # an ASGI server without the denial extension: a bare policy close
        with contextlib.suppress(Exception):
            await ws.close(1008)

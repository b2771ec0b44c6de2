"""Azure Speech SDK routes (`SpeechConfig(host="ws://HOST:PORT")`, as for a Speech container).

One WebSocket route per path the SDK's recognizers open (`protocols.azure_usp.PATHS`): refuse
bad credentials before the upgrade (HTTP 401: the SDK's `AuthenticationFailure`), accept with
subprotocol `USP`, read up to the first request's `speech.context` (it says what the session
is: conversation with speakers, translation, a language), admit, and hand over to the shared
live-stream loop. Everything USP is in `protocols.azure_usp`.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, WebSocket

from streamscribe.errors import PeerError, ProtocolError
from streamscribe.events import ErrorKind
from streamscribe.protocols import azure_usp, azure_usp_handshake
from streamscribe.server.admission import check_admission
from streamscribe.server.auth import authenticate_stream
from streamscribe.server.state import ServerState
from streamscribe.server.stream.loop import run_session
from streamscribe.server.stream.wire import deny, refuse

router = APIRouter()

CONTEXT_TIMEOUT_S = 10.0  # the SDK sends speech.config and speech.context at once


async def usp(ws: WebSocket) -> None:
    state: ServerState = ws.app.state.streamscribe
    query = dict(ws.query_params)
    try:
        principal = await authenticate_stream(
            state, azure_usp_handshake.credentials(ws.headers, query), query
        )
    except ProtocolError as exc:
        body = {"error": {"code": "Unauthorized", "message": exc.reason}}
        await deny(ws, state.metrics, 401, body)
        return
    offered = [p.strip() for p in ws.scope.get("subprotocols", [])]
    await ws.accept(subprotocol="USP" if "USP" in offered else None)
    try:
        dialect = azure_usp.UspProtocol(azure_usp_handshake.parse_handshake(ws.url.path, query))
        if not await _read_context(ws, dialect):
            return
        config = dialect.session_config()
        await check_admission(state, principal)
    except ProtocolError as exc:
        await refuse(ws, state.metrics, azure_usp.UspProtocol(_NO_HANDSHAKE).error(exc))
        return
    await run_session(ws, dialect, config, state, "azure-speech", principal)


_NO_HANDSHAKE = azure_usp_handshake.Handshake("/", None, False)


async def _read_context(ws: WebSocket, dialect: azure_usp.UspProtocol) -> bool:
    """Feed the dialect the frames before the first request's context (False: the client left)."""
    deadline = time.monotonic() + CONTEXT_TIMEOUT_S
    while dialect.awaiting_context:
        try:
            message = await asyncio.wait_for(ws.receive(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise PeerError(
                ErrorKind.BAD_REQUEST,
                f"No speech.context within {CONTEXT_TIMEOUT_S:.0f} s of connecting",
            ) from None
        if message["type"] == "websocket.disconnect":
            return False
        if message.get("text") is not None:
            dialect.receive_text(message["text"])
        elif message.get("bytes") is not None:
            dialect.receive_bytes(message["bytes"])
    return True


for _path in azure_usp_handshake.PATHS:
    router.add_api_websocket_route(_path, usp)

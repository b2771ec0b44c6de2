"""Deepgram live route `/v1/listen` (WebSocket).

The live route authenticates (`Authorization: Token KEY` or `Bearer TOKEN`, or a browser's
`Sec-WebSocket-Protocol: token, KEY`), reads the options and checks admission and the model
before the upgrade, refusing with Deepgram's HTTP status and JSON body; then it hands the socket
to the shared live-stream loop. The wire is `protocols/deepgram*.py`; pre-recorded requests on
the same path and temporary tokens are `deepgram_http.py`.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from streamscribe.errors import ProtocolError
from streamscribe.protocols import deepgram
from streamscribe.protocols.deepgram_options import (
    handshake_credentials,
    http_error,
    session_config,
)
from streamscribe.server.admission import check_admission, session_scheduler
from streamscribe.server.auth import authenticate_stream as authenticate
from streamscribe.server.state import ServerState
from streamscribe.server.stream.loop import run_session
from streamscribe.server.stream.wire import deny

router = APIRouter()


@router.websocket("/v1/listen")
async def listen_live(ws: WebSocket) -> None:
    state: ServerState = ws.app.state.streamscribe
    items = ws.query_params.multi_items()
    headers, subprotocol = handshake_credentials(ws.headers, ws.scope.get("subprotocols", []))
    try:
        principal = await authenticate(state, headers, dict(items), "POST /v1/auth/grant")
        options = deepgram.parse_options(items)
        await check_admission(state, principal)
        await session_scheduler(state, session_config(options))  # no model fits: a 400 here
    except ProtocolError as exc:
        await _deny(ws, state, exc)
        return
    await ws.accept(subprotocol=subprotocol)
    # without encoding=, the dialect waits for the first frame's WAV header (AWAITING_FORMAT)
    config = session_config(options)
    dialect = deepgram.DeepgramProtocol(config, options)
    await run_session(ws, dialect, config, state, "deepgram", principal)


async def _deny(ws: WebSocket, state: ServerState, exc: ProtocolError) -> None:
    """Refuse the upgrade with an HTTP status and Deepgram's error body, as the cloud does."""
    status, body = http_error(exc.kind, exc.reason)
    header = exc.reason.encode("ascii", "backslashreplace").decode("ascii")[:200]
    await deny(ws, state.metrics, status, body, {"dg-error": header})

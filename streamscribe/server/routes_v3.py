"""AssemblyAI Universal-Streaming v3 route `/v3/ws`: parse, authenticate, admit, hand over."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from streamscribe.errors import ProtocolError
from streamscribe.events import SessionConfig
from streamscribe.protocols import assemblyai_v3
from streamscribe.protocols.common import Close
from streamscribe.server.auth import authenticate_stream
from streamscribe.server.session_loop import check_admission, run_session

router = APIRouter()


@router.websocket("/v3/ws")
async def v3_ws(ws: WebSocket) -> None:
    state = ws.app.state.streamscribe
    await ws.accept()  # the cloud answers bad requests with an Error message and a close code
    query = dict(ws.query_params)
    try:
        principal = await authenticate_stream(state, ws.headers, query)
        config = assemblyai_v3.parse_query(query)
        await check_admission(state, principal)
    except ProtocolError as exc:
        await _refuse(ws, exc, state)
        return
    await run_session(
        ws, assemblyai_v3.V3Protocol(config), config, state, "assemblyai-v3", principal
    )


async def _refuse(ws: WebSocket, exc: ProtocolError, state) -> None:
    for out in assemblyai_v3.V3Protocol(SessionConfig()).error(exc):
        if isinstance(out, Close):
            state.metrics.errors.labels(str(out.code)).inc()
            await ws.close(out.code, out.reason)
        else:
            await ws.send_text(out.text)

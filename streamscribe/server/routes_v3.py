"""AssemblyAI Universal-Streaming v3 route: `/v3/ws`. Thin: parse, check capacity, hand over."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from streamscribe.errors import ProtocolError
from streamscribe.events import ErrorKind, SessionConfig
from streamscribe.protocols import assemblyai_v3
from streamscribe.protocols.common import Close
from streamscribe.server.session_loop import run_session

router = APIRouter()


@router.websocket("/v3/ws")
async def v3_ws(ws: WebSocket) -> None:
    state = ws.app.state.streamscribe
    await ws.accept()
    try:
        config = assemblyai_v3.parse_query(dict(ws.query_params))
    except ProtocolError as exc:
        await _refuse(ws, assemblyai_v3.V3Protocol(SessionConfig()), exc)
        return
    dialect = assemblyai_v3.V3Protocol(config)
    if state.at_capacity:
        await _refuse(
            ws,
            dialect,
            ProtocolError(
                ErrorKind.BUSY,
                "Server at capacity: try again shortly or raise --max-sessions",
            ),
        )
        return
    await run_session(ws, dialect, config, state, "assemblyai-v3")


async def _refuse(ws: WebSocket, dialect: assemblyai_v3.V3Protocol, exc: ProtocolError) -> None:
    for out in dialect.error(exc):
        if isinstance(out, Close):
            await ws.close(out.code, out.reason)
        else:
            await ws.send_text(out.text)

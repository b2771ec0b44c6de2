"""AssemblyAI Universal-Streaming v3 route `/v3/ws`: authenticate, parse, admit, hand over.

The cloud accepts the upgrade and answers a bad request with an `Error` message and a close
code, so this route does too. The wire is `protocols.assemblyai_v3`; the session is the shared
live-stream loop. Temporary tokens (`GET /v3/token`) are records: `rest/tokens.py`.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from streamscribe.errors import ProtocolError
from streamscribe.events import SessionConfig
from streamscribe.protocols import assemblyai_v3
from streamscribe.server.admission import check_admission
from streamscribe.server.auth import authenticate_stream
from streamscribe.server.model_choice import choose_model
from streamscribe.server.stream.loop import run_session
from streamscribe.server.stream.wire import refuse

router = APIRouter()


@router.websocket("/v3/ws")
async def v3_ws(ws: WebSocket) -> None:
    state = ws.app.state.streamscribe
    await ws.accept()
    query = dict(ws.query_params)
    try:
        principal = await authenticate_stream(state, ws.headers, query)
        config = assemblyai_v3.parse_query(query)
        await check_admission(state, principal)
        model = choose_model(state.settings, config, bool(state.transcriber.multilingual))
    except ProtocolError as exc:
        await refuse(ws, state.metrics, assemblyai_v3.V3Protocol(SessionConfig()).error(exc))
        return
    dialect = assemblyai_v3.V3Protocol(config, model_name=model)  # Begin names the model
    await run_session(ws, dialect, config, state, "assemblyai-v3", principal)

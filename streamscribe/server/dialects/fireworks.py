"""Fireworks streaming transcription (`/v1/audio/transcriptions/streaming`).

Authenticates (the raw key in the Authorization header, or `?Authorization=` for browsers),
parses and admits, refusing before the upgrade with an HTTP status and a JSON error body as
Fireworks clients expect; then hands over to the shared live-stream loop. The wire lives in
`protocols.fireworks`.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from streamscribe.errors import ProtocolError
from streamscribe.protocols import fireworks
from streamscribe.server.admission import check_admission
from streamscribe.server.auth import authenticate_stream
from streamscribe.server.stream.loop import run_session
from streamscribe.server.stream.wire import deny

router = APIRouter()


@router.websocket("/v1/audio/transcriptions/streaming")
async def fireworks_streaming(ws: WebSocket) -> None:
    state = ws.app.state.streamscribe
    pairs = ws.query_params.multi_items()
    query = dict(pairs)
    headers = dict(ws.headers)
    if not headers.get("authorization") and query.get("Authorization"):
        headers["authorization"] = query["Authorization"]  # browsers cannot set headers
    try:
        principal = await authenticate_stream(state, headers, query)
        config = fireworks.parse_query(pairs)
        options = fireworks.parse_options(pairs)
        await check_admission(state, principal)
    except ProtocolError as exc:
        await deny(ws, state.metrics, *fireworks.http_error(exc))
        return
    await ws.accept()
    dialect = fireworks.FireworksProtocol(config, options)
    await run_session(ws, dialect, config, state, "fireworks", principal)

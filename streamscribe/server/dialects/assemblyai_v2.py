"""AssemblyAI v2 realtime: `/v2/realtime/ws` and its temporary tokens, `POST /v2/realtime/token`.

The WebSocket route only authenticates, parses, admits and hands over to the shared live-stream
loop; everything about the wire lives in `protocols.assemblyai_v2`. The token route mints the same
single-use tokens as `GET /v3/token` (see `rest/tokens.py`), answering in the v2 shape: `{"token"}`
on success, `{"error": ...}` otherwise (the 0.64 SDK reads the message from `error`).
"""

from __future__ import annotations

import json

from fastapi import APIRouter, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse

from streamscribe.errors import ProtocolError
from streamscribe.events import SessionConfig
from streamscribe.protocols import assemblyai_v2
from streamscribe.server.admission import check_admission
from streamscribe.server.auth import authenticate_stream, mint_token, require_key
from streamscribe.server.stream.loop import run_session
from streamscribe.server.stream.wire import refuse

router = APIRouter()

# How long a v2 token stays redeemable, in seconds. The cloud's bounds are not documented; it
# took at least 60. Tokens are single-use whatever their lifetime.
EXPIRES_IN = (1, 360000)
TOKEN_ENDPOINT = "POST /v2/realtime/token"  # named when a token is refused
MAX_BODY_BYTES = 4096


@router.websocket("/v2/realtime/ws")
async def v2_realtime_ws(ws: WebSocket) -> None:
    state = ws.app.state.streamscribe
    await ws.accept()  # v2 answers bad requests with a close code and reason after the upgrade
    query = dict(ws.query_params)
    try:
        principal = await authenticate_stream(state, ws.headers, query, TOKEN_ENDPOINT)
        config = assemblyai_v2.parse_query(query)
        options = assemblyai_v2.parse_options(query)
        await check_admission(state, principal)
    except ProtocolError as exc:
        await refuse(ws, state.metrics, assemblyai_v2.V2Protocol(SessionConfig()).error(exc))
        return
    dialect = assemblyai_v2.V2Protocol(config, options)
    await run_session(ws, dialect, config, state, "assemblyai-v2", principal)


@router.post("/v2/realtime/token")
async def v2_realtime_token(request: Request) -> JSONResponse:
    """`{"expires_in": seconds}` -> `{"token": ...}`, a single-use token for one session."""
    try:
        principal = await require_key(request)
    except HTTPException as exc:
        return _error(exc.status_code, str(exc.detail))
    low, high = EXPIRES_IN
    rule = f'send JSON {{"expires_in": <integer seconds from {low} to {high}>}}'
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        return _error(413, f"Request body too large: {rule}")
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return _error(400, f"Invalid JSON body: {rule}")
    expires = body.get("expires_in") if isinstance(body, dict) else None
    if isinstance(expires, float) and expires.is_integer():
        expires = int(expires)
    if isinstance(expires, bool) or not isinstance(expires, int) or not low <= expires <= high:
        got = "missing" if expires is None else f"got {repr(expires)[:40]}"
        return _error(400, f"Invalid expires_in ({got}): {rule}")
    try:
        token = await mint_token(request.app.state.streamscribe, principal, expires)
    except ValueError:
        return _error(401, "Invalid or revoked API key")
    return JSONResponse({"token": token})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)

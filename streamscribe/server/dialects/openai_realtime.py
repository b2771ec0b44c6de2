"""OpenAI Realtime transcription socket `/v1/realtime?intent=transcription` (GA and beta).

The handshake (API key in `Authorization`, or the browser's `openai-insecure-api-key.<KEY>`
subprotocol) is read by `protocols.openai_realtime`; the route accepts, authenticates, settles
the session's model (so the dialect knows whether a later `session.update` may name another
language) and hands over to the shared live-stream loop. The Realtime protocol answers refusals
after the upgrade with an `error` event and a close. Ephemeral-key endpoints answer what to use
instead.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from streamscribe.errors import ProtocolError
from streamscribe.events import SessionConfig
from streamscribe.protocols import openai_realtime
from streamscribe.protocols.openai_common import OpenAIError, error_body
from streamscribe.server.admission import check_admission, session_scheduler
from streamscribe.server.auth import authenticate_stream
from streamscribe.server.model_choice import choose_model
from streamscribe.server.state import ServerState
from streamscribe.server.stream.loop import run_session
from streamscribe.server.stream.wire import refuse

router = APIRouter()


@router.post("/v1/realtime/client_secrets")
@router.post("/v1/realtime/transcription_sessions")
async def ephemeral_keys() -> JSONResponse:
    """Ephemeral Realtime keys are not built; say what to use instead."""
    exc = OpenAIError(
        "Ephemeral Realtime keys are not supported by this server: connect with an API key "
        "(Authorization: Bearer, or the openai-insecure-api-key.<KEY> subprotocol in a "
        "browser), or a single-use streamscribe token from GET /v3/token",
        code="unsupported_endpoint",
        status=404,
    )
    return JSONResponse(error_body(exc), status_code=exc.status)


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket) -> None:
    """A Realtime transcription session (`?intent=transcription`), GA or beta dialect."""
    state: ServerState = ws.app.state.streamscribe
    handshake = openai_realtime.parse_handshake(ws.headers, ws.scope.get("subprotocols") or [])
    await ws.accept(subprotocol=handshake.subprotocol)
    query = dict(ws.query_params)
    headers = {"authorization": f"Bearer {handshake.api_key}"} if handshake.api_key else ws.headers
    try:
        principal = await authenticate_stream(state, headers, query)
        config = openai_realtime.session_config(query)
        await check_admission(state, principal)
        # the session's model is settled now (?model= may name a served one, e.g. base); the
        # dialect must know whether it can take a language other than English later
        scheduler = await session_scheduler(state, config)
        model_name = choose_model(state.settings, config, bool(state.transcriber.multilingual))
    except ProtocolError as exc:
        refusal = openai_realtime.RealtimeProtocol(SessionConfig(), beta=handshake.beta)
        await refuse(ws, state.metrics, refusal.error(exc))
        return
    dialect = openai_realtime.RealtimeProtocol(
        config,
        beta=handshake.beta,
        multilingual=bool(scheduler.transcriber.multilingual),
        model_name=model_name,
    )
    await run_session(ws, dialect, config, state, "openai-realtime", principal)

"""Call transcription routes: ACS-style jobs over REST, the call's audio over a WebSocket.

`POST /v1/calls` creates a job (an ACS `TranscriptionOptions` plus the call connection id and
callback URL); `POST /v1/calls/{id}:startTranscription`, `:stopTranscription` and
`:updateTranscription` are the ACS actions; `GET /v1/calls[/{id}]` report state. The call's
audio arrives on `/v1/calls/{id}/media` (or `/v1/calls/media` with ACS's
`x-ms-call-connection-id` header) as ACS media-streaming frames. Refusals happen before the
upgrade, with an HTTP status and a JSON reason. The logic lives in `job.py` and `media.py`; no
protocol here.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket

from streamscribe.errors import ProtocolError
from streamscribe.events import ErrorKind
from streamscribe.protocols.acs_transcription import parse_action
from streamscribe.protocols.common import loads_json
from streamscribe.server.admission import check_admission
from streamscribe.server.auth import Principal, authenticate_stream, require_key
from streamscribe.server.calls.job import CallError, CallJob, CallService, stored_call_json
from streamscribe.server.calls.media import CallMedia, serve_media
from streamscribe.server.stream.wire import deny

router = APIRouter()

MAX_BODY_BYTES = 64 * 1024


def call_service(app) -> CallService:
    """The app's job table, made on first use."""
    service = getattr(app.state, "calls", None)
    if service is None:
        service = app.state.calls = CallService(app.state.streamscribe)
    return service


async def _body(request: Request) -> object:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise HTTPException(413, f"Request body over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return None
    try:
        return loads_json(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "The request body is not JSON") from None


def _http(exc: CallError) -> HTTPException:
    return HTTPException(exc.status, exc.message)


def _job(request: Request, call_id: str, principal: Principal) -> CallJob:
    try:
        return call_service(request.app).get(call_id, principal)
    except CallError as exc:
        raise _http(exc) from None


def _action(body: object, action: str):
    try:
        return parse_action(body, action)
    except ProtocolError as exc:
        raise HTTPException(400, exc.reason) from None


@router.post("/v1/calls", status_code=201)
async def create_call(request: Request, principal: Principal = Depends(require_key)) -> dict:
    body = await _body(request)
    try:
        job = await call_service(request.app).create(body, principal)
    except CallError as exc:
        raise _http(exc) from None
    return job.describe()


@router.get("/v1/calls")
async def list_calls(request: Request, principal: Principal = Depends(require_key)) -> dict:
    live = [j.describe() for j in call_service(request.app).list(principal)]
    known = {j["callConnectionId"] for j in live}
    store = request.app.state.streamscribe.store
    earlier = [  # jobs from before a restart, ended by it
        stored_call_json(j)
        for j in await store.list_call_jobs(principal.key_id)
        if j.call_id not in known and j.status == "ended" and j.result is not None
    ]
    return {"calls": live + earlier}


@router.get("/v1/calls/{call_id}")
async def get_call(call_id: str, request: Request, principal=Depends(require_key)) -> dict:
    job = call_service(request.app).find(call_id, principal)
    if job is None:  # a job from before a restart is known from the store
        stored = await request.app.state.streamscribe.store.get_call_job(principal.key_id, call_id)
        if stored is not None:
            return stored_call_json(stored)
    return _job(request, call_id, principal).describe()


async def _act(request: Request, call_id: str, principal: Principal, name: str) -> dict:
    """One ACS action on the caller's job; a refused action is an HTTP error naming the fix."""
    job = _job(request, call_id, principal)
    action = _action(await _body(request), name)
    try:
        if name == "start":
            await job.start(action)
        elif name == "stop":
            job.stop(action)  # begins the stop; the flush and the callback follow
        else:
            await job.update(action)
    except CallError as exc:
        raise _http(exc) from None
    return job.describe()


@router.post("/v1/calls/{call_id}:startTranscription", status_code=202)
async def start_transcription(
    call_id: str, request: Request, principal: Principal = Depends(require_key)
) -> dict:
    return await _act(request, call_id, principal, "start")


@router.post("/v1/calls/{call_id}:stopTranscription", status_code=202)
async def stop_transcription(
    call_id: str, request: Request, principal: Principal = Depends(require_key)
) -> dict:
    return await _act(request, call_id, principal, "stop")


@router.post("/v1/calls/{call_id}:updateTranscription", status_code=202)
async def update_transcription(
    call_id: str, request: Request, principal: Principal = Depends(require_key)
) -> dict:
    return await _act(request, call_id, principal, "update")


@router.websocket("/v1/calls/{call_id}/media")
async def call_media(ws: WebSocket, call_id: str) -> None:
    await _media(ws, call_id)


@router.websocket("/v1/calls/media")
async def call_media_by_header(ws: WebSocket) -> None:
    call_id = ws.headers.get("x-ms-call-connection-id") or ws.query_params.get("callConnectionId")
    if not call_id:
        await _deny(
            ws,
            400,
            "Which call? Send the x-ms-call-connection-id header (as ACS does) or "
            "?callConnectionId=, or connect to /v1/calls/{callConnectionId}/media",
        )
        return
    await _media(ws, call_id)


async def _media(ws: WebSocket, call_id: str) -> None:
    state = ws.app.state.streamscribe
    service = call_service(ws.app)
    # the job's own media token (what ACS is configured with) names the job, whoever's it is
    job = service.by_media_token(call_id, ws.query_params.get("token") or "")
    if job is not None:
        principal = job.principal
    else:
        try:
            principal = await authenticate_stream(state, dict(ws.headers), ws.query_params)
        except ProtocolError as exc:
            await _deny(ws, 401, exc.reason)
            return
        job = service.find(call_id, principal)
    if job is None:
        await _deny(
            ws,
            404,
            f"No call-transcription job for call connection id {call_id!r}: create one with "
            "POST /v1/calls first",
        )
        return
    if job.status == "ended":
        await _deny(ws, 409, f"Call {call_id} has ended: create a new job for a new call")
        return
    if job.media is not None:
        await _deny(ws, 409, f"Call {call_id} already has its media stream connected")
        return
    try:
        await check_admission(state, principal)
        scheduler = await service.scheduler(job.model)
    except ProtocolError as exc:
        await _deny(ws, _DENY_STATUS.get(exc.kind, 503), exc.reason)
        return
    except CallError as exc:
        await _deny(ws, exc.status, exc.message)
        return
    if job.media is not None or job.status == "ended":  # another stream won while we waited
        await _deny(ws, 409, f"Call {call_id} already has its media stream connected")
        return
    media = CallMedia(job, state, principal, scheduler)
    job.attach(media)
    await job.persist()  # with its session id
    await ws.accept()
    await media.open()
    reason, error = await serve_media(ws, media)
    await job.media_ended(reason, error)


# A refused media stream's HTTP status by kind (else 503). A spent daily allowance is 403, as
# Azure's Cognitive Services answer a key out of quota ("Out of call volume quota"; the ACS
# transcription status detail for it is `forbidden`), not 429, which reads as "retry soon".
_DENY_STATUS = {ErrorKind.LIMIT: 429, ErrorKind.QUOTA: 403}


async def _deny(ws: WebSocket, status: int, reason: str) -> None:
    await deny(ws, ws.app.state.streamscribe.metrics, status, {"detail": reason})

"""Call-transcription jobs: the ACS-style state machine binding a call's audio to a push socket.

Why this exists: a job is created over REST (mirroring ACS `TranscriptionOptions`), the call's
audio arrives later on the media socket with the same call connection id (`media.py`), and
transcripts leave on a socket we open to the customer's `transportUrl` (`push.py`). This
module holds what ties them together: the job's state, its actions (start, stop, update locale),
which model serves its language, where each result goes (the store always; the push socket while
transcription runs) and which callback tells the customer what happened.

States: created -> active -> stopping -> stopped -> active ...; active -> failed (the push socket
is gone for good: results still go to the store) -> active (start again) or stopped; any ->
ended (the call's media ended; final). Actions are serialised by the job's lock. Jobs live in
memory, with a minimal record in the store (`call_jobs`: key, call id, status, session id): a
restart cannot resume a call (its media socket is gone), so at start every job not ended before
it is marked ended with a resultInformation naming the restart (`end_interrupted_calls`), and
`GET /v1/calls/{id}` reads it there. Their transcripts live in the store as one session per call
(participants as channels).

A call connection id is the caller's own name for its call, so jobs are keyed by (key, id): two
keys may use the same id without seeing, refusing or squatting each other's job, and nothing a
key is told (a 404, a 409) reveals that another key has a job of that id.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.errors import ModelNotFoundError, ProtocolError
from streamscribe.events import EndReason, ErrorKind, SessionConfig, TurnUpdate
from streamscribe.protocols.acs_transcription import (
    FAILED,
    STARTED,
    STOPPED,
    UPDATED,
    ActionRequest,
    JobRequest,
    TranscriptionRenderer,
    callback_event,
    metadata_message,
    parse_job_request,
    result_information,
)
from streamscribe.server.auth import Principal
from streamscribe.server.calls.media import CallMedia
from streamscribe.server.calls.push import CallbackPoster, PushFailure, TranscriptPusher
from streamscribe.server.model_choice import choose_model
from streamscribe.server.state import ServerState
from streamscribe.server.stream.host import StreamHost

log = logging.getLogger(__name__)

ENDED_JOB_TTL_S = 3600.0
# resultInformation.subCode of our failures (ACS leaves them service-specific); the push
# socket's own (8501 unreachable, 8502 lost, 8503 refused) are in push.py
SUB_MEDIA_INVALID = 8510
SUB_ENGINE_FAILED = 8520
SUB_SERVER_RESTARTED = 8530
SUB_QUOTA = 8540  # the key's daily audio allowance ran out during the call


class CallError(Exception):
    """An action the job cannot take: an HTTP status and a reason naming the fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CallJob:
    def __init__(
        self, service: CallService, request: JobRequest, principal: Principal, model: str
    ) -> None:
        self.service = service
        self.request = request
        self.id = request.call_connection_id
        self.principal = principal
        self.subscription_id = str(uuid.uuid4())
        self.media_token = secrets.token_urlsafe(24)
        self.status = "created"
        self.locale = request.options.locale
        self.language = request.options.language
        self.model = model
        self.result = result_information(200, 0, "Job created")
        self.renderer = TranscriptionRenderer(request.options.enable_intermediate_results)
        self.pusher: TranscriptPusher | None = None
        self.last_delivery: dict[str, Any] | None = None
        self.callbacks = CallbackPoster(service.http)
        self.media: CallMedia | None = None
        self.session_id: str | None = None
        self.lock = asyncio.Lock()
        self.created = time.time()
        self.ended_at: float | None = None
        self.finals = 0
        self.intermediates = 0
        self._context: tuple[str | None, str | None] = (
            request.operation_context,
            request.callback_uri,
        )
        self._tasks: set[asyncio.Task] = set()

    @property
    def key_id(self) -> str | None:
        return self.principal.key_id

    async def persist(self) -> None:
        """Keep the job's minimal record (a failed write is logged: the call goes on)."""
        try:
            await self.service.state.store.put_call_job(
                self.key_id, self.id, self.status, self.session_id, self.request.public()
            )
        except Exception:
            log.exception("call %s: storing its job failed", self.id)

    # ------------------------------------------------------------------ what the media side needs
    @property
    def ended(self) -> bool:
        return self.status == "ended"

    def stored_params(self) -> dict[str, Any]:
        """What the call's stored session records about the job."""
        return {"call": self.request.public(), "subscriptionId": self.subscription_id}

    def speech_started(self, participant: str, at_ms: int) -> None:
        self.renderer.speech_started(participant, at_ms)

    # ------------------------------------------------------------------ actions
    async def start(self, action: ActionRequest | None = None) -> None:
        async with self.lock:
            if self.status == "ended":
                raise CallError(409, f"Call {self.id} has ended: create a new job for a new call")
            if self.status == "active":
                raise CallError(
                    409, "Transcription is already running: stop it first, or update its locale"
                )
            if action is not None and action.language is not None:
                await self._set_language(action.locale, action.language)
            self._set_context(action)
            self.status = "active"
            self.result = result_information(200, 0, "Transcription starting")
            self.pusher = TranscriptPusher(
                self.request.options.transport_url,
                self._headers(),
                self._metadata,
                self.request.reconnect_s,
                self._push_state,
            )
            self.pusher.start()
            if self.media is not None:
                self.media.transcribing = True

    def stop(self, action: ActionRequest | None = None) -> None:
        """Check and begin a stop; the flush, the last deliveries and the callback follow."""
        if self.status == "ended":
            raise CallError(409, f"Call {self.id} has ended")
        if self.status not in ("active", "failed"):
            raise CallError(409, f"Transcription is not running (it is {self.status})")
        self.status = "stopping"
        self._spawn(self._stop(action))

    async def _stop(self, action: ActionRequest | None) -> None:
        async with self.lock:
            self._set_context(action)
            await self._wind_down()
            if self.status != "ended":
                self.status = "stopped"
            self.result = result_information(200, 0, "Transcription stopped")
            self._callback(STOPPED, "subscriptionStopped")

    async def update(self, action: ActionRequest) -> None:
        assert action.locale is not None and action.language is not None
        async with self.lock:
            if self.status == "ended":
                raise CallError(409, f"Call {self.id} has ended")
            await self._set_language(action.locale, action.language)
            self._set_context(action)
            self.result = result_information(200, 0, f"Locale updated to {action.locale}")
            self._callback(UPDATED, "transcriptionLocaleUpdated")

    async def _set_language(self, locale: str | None, language: str) -> None:
        model = self.service.model_for(language, self.request.options.speech_model_endpoint_id)
        scheduler = await self.service.scheduler(model)  # loads it now: errors answer here
        self.locale, self.language, self.model = locale or self.locale, language, model
        if self.media is not None:
            await self.media.switch(language, scheduler)

    # ------------------------------------------------------------------ media
    def attach(self, media: CallMedia) -> None:
        self.media = media
        self.session_id = media.session_id
        media.transcribing = self.status == "active"

    async def media_ended(self, reason: EndReason, error: ProtocolError | None) -> None:
        """The call's audio is over: flush, deliver the last results, close, say so."""
        async with self.lock:
            running = self.status == "active"
            media = self.media
            if media is not None:
                await media.close(reason)
            await self._wind_down()
            failed = self.status == "failed"  # already told (TranscriptionFailed)
            self.status = "ended"
            self.ended_at = time.time()
            if error is not None and error.kind is ErrorKind.QUOTA:
                # 403 and `forbidden`, as Azure answers a key out of quota (routes.py)
                self.result = result_information(403, SUB_QUOTA, error.reason)
                self._callback(FAILED, "forbidden")
            elif error is not None and error.kind is not ErrorKind.TIMEOUT:
                self.result = result_information(400, SUB_MEDIA_INVALID, error.reason)
                self._callback(FAILED, "badRequest")
            elif running and not failed:
                why = error.reason if error is not None else "the call's media stream ended"
                if reason is EndReason.SHUTDOWN:
                    why = "the server is shutting down"
                self.result = result_information(200, 0, f"Transcription stopped: {why}")
                details = (
                    "serviceShutdown" if reason is EndReason.SHUTDOWN else "subscriptionStopped"
                )
                self._callback(STOPPED, details)
        await self.persist()
        await self.callbacks.drain()

    async def deliver(self, update: TurnUpdate, participant: str, session_id: str) -> None:
        """One result: stored when final (always), pushed while transcription runs."""
        if update.end_of_turn:
            await StreamHost(self.service.state).store_turn(session_id, update)
        rendered = self.renderer.render(update, participant)
        if rendered is None:
            return
        if rendered.final:
            self.finals += 1
        else:
            self.intermediates += 1
        if self.pusher is not None:
            self.pusher.submit(rendered.message, rendered.final)

    async def engine_failed(self, message: str) -> None:
        if self.status in ("active", "stopping"):
            self.status = "failed"
            self.result = result_information(500, SUB_ENGINE_FAILED, message)
            self._callback(FAILED, "speechServicesConnectionError")

    # ------------------------------------------------------------------ push socket
    async def _push_state(self, state: str, failure: PushFailure | None) -> None:
        if state == "connected":
            self.result = result_information(200, 0, "Transcription started")
            self._callback(STARTED, "subscriptionStarted")
        elif state == "reconnected":
            self.result = result_information(200, 0, "Transcription stream reconnected")
            self._callback(STARTED, "streamConnectionReestablished", status="transcriptionResumed")
        elif state == "failed" and failure is not None:
            if self.status in ("active", "stopping"):
                self.status = "failed"
            self.result = result_information(
                failure.code,
                failure.sub_code,
                f"{failure.message}; transcripts are kept in the store"
                + (f" (session {self.session_id})" if self.session_id else ""),
            )
            self._callback(FAILED, failure.details)

    async def _wind_down(self) -> None:
        if self.media is not None:
            await self.media.stop_transcribing()
        pusher, self.pusher = self.pusher, None
        if pusher is not None:
            await pusher.close()
            self.last_delivery = pusher.describe()

    def _headers(self) -> dict[str, str]:
        headers = {
            "x-ms-call-connection-id": self.id,
            "x-ms-call-correlation-id": self.request.correlation_id,
        }
        if self.request.transport_token:
            headers["Authorization"] = f"Bearer {self.request.transport_token}"
        return headers

    def _metadata(self) -> dict[str, Any]:
        return metadata_message(
            self.subscription_id,
            self.locale,
            self.id,
            self.request.correlation_id,
            self.request.options.speech_model_endpoint_id,
        )

    # ------------------------------------------------------------------ callbacks
    def _set_context(self, action: ActionRequest | None) -> None:
        if action is None:
            return
        context, url = self._context
        self._context = (
            action.operation_context if action.operation_context is not None else context,
            action.operation_callback_uri or self.request.callback_uri or url,
        )

    def _callback(self, kind: str, details: str, status: str | None = None) -> None:
        context, url = self._context
        event = callback_event(
            kind,
            event_id=str(uuid.uuid4()),
            time=_now(),
            call_connection_id=self.id,
            server_call_id=self.request.server_call_id,
            correlation_id=self.request.correlation_id,
            status_details=details,
            result=self.result,
            operation_context=context,
            status=status,
        )
        self.callbacks.post(url, event)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def describe(self) -> dict[str, Any]:
        delivery = self.pusher.describe() if self.pusher is not None else self.last_delivery
        return {
            **self.request.public(),
            "subscriptionId": self.subscription_id,
            "status": self.status,
            "locale": self.locale,
            "model": self.model,
            "resultInformation": self.result,
            "mediaUrl": f"/v1/calls/{self.id}/media?token={self.media_token}",
            "sessionId": self.session_id,
            "media": self.media.describe() if self.media is not None else None,
            "results": {"final": self.finals, "intermediate": self.intermediates},
            "delivery": delivery,
            "callbacks": self.callbacks.describe(),
            "created": datetime.fromtimestamp(self.created, UTC).isoformat(),
            "ended": datetime.fromtimestamp(self.ended_at, UTC).isoformat()
            if self.ended_at
            else None,
        }


class CallService:
    """Every job of this server process, and what they share (the HTTP client for callbacks)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.jobs: dict[tuple[str | None, str], CallJob] = {}  # (key id, call connection id)
        self.http = httpx.AsyncClient(follow_redirects=False)

    async def create(self, body: object, principal: Principal) -> CallJob:
        try:
            request = parse_job_request(body, str(uuid.uuid4()))
        except ProtocolError as exc:
            raise CallError(400, exc.reason) from None
        model = self.model_for(request.options.language, request.options.speech_model_endpoint_id)
        self._prune()
        existing = self.jobs.get((principal.key_id, request.call_connection_id))
        if existing is not None and existing.status != "ended":
            raise CallError(
                409,
                f"A job for call connection {request.call_connection_id} exists "
                f"({existing.status}): use its actions, or another callConnectionId",
            )
        await self.scheduler(model)
        job = CallJob(self, request, principal, model)
        self.jobs[(job.key_id, job.id)] = job
        if request.options.start_transcription:
            await job.start()
        await job.persist()
        return job

    def get(self, call_id: str, principal: Principal) -> CallJob:
        job = self.jobs.get((principal.key_id, call_id))
        if job is None:
            raise CallError(
                404,
                f"No call-transcription job for call connection id {call_id!r}: "
                "create one with POST /v1/calls",
            )
        return job

    def list(self, principal: Principal) -> list[CallJob]:
        return [j for j in self.jobs.values() if j.key_id == principal.key_id]

    def find(self, call_id: str, principal: Principal) -> CallJob | None:
        """The caller's job for `call_id`, if any."""
        return self.jobs.get((principal.key_id, call_id))

    def by_media_token(self, call_id: str, token: str) -> CallJob | None:
        """The job of `call_id` whose own media token is `token` (whichever key made it)."""
        if not token:
            return None
        for (_, job_call), job in self.jobs.items():
            if job_call == call_id and hmac.compare_digest(token, job.media_token):
                return job
        return None

    def model_for(self, language: str, endpoint: str | None) -> str:
        settings = self.state.settings
        served = [settings.model, *settings.models]
        if settings.multilingual_model:
            served.append(settings.multilingual_model)
        if endpoint and endpoint not in served:
            raise CallError(
                400,
                f"speechModelEndpointId {endpoint!r} is not a model this server serves: "
                f"use one of {', '.join(dict.fromkeys(served))}, or leave it out",
            )
        config = SessionConfig(turn={"language": language}, model=endpoint)
        try:
            return choose_model(settings, config, self.state.transcriber.multilingual)
        except ProtocolError as exc:
            raise CallError(400, exc.reason) from None

    async def scheduler(self, model: str) -> DecodeScheduler:
        try:
            return await self.state.scheduler_for(model)
        except ModelNotFoundError as exc:
            raise CallError(400, f"Model {model!r} unavailable: {exc}") from None

    def _prune(self) -> None:
        cutoff = time.time() - ENDED_JOB_TTL_S
        for ident, job in list(self.jobs.items()):
            if job.ended_at is not None and job.ended_at < cutoff:
                del self.jobs[ident]


async def end_interrupted_calls(state: ServerState) -> None:
    """At start: calls being transcribed when the server stopped cannot be resumed (their media
    sockets are gone); their jobs are marked ended, with a resultInformation that says so."""
    ended = await state.store.end_unfinished_call_jobs(
        result_information(
            503,
            SUB_SERVER_RESTARTED,
            "Transcription ended: the server restarted during the call and a call's media "
            "stream cannot be resumed; transcripts until the restart are in the store (sessionId): "
            "create a new job to transcribe the rest of the call",
        )
    )
    if ended:
        log.warning("%d call jobs ended by the restart", ended)


def stored_call_json(stored: Any) -> dict[str, Any]:
    """A job known from the store only (one from before a restart)."""
    return {
        **stored.request,
        "status": stored.status,
        "resultInformation": stored.result,
        "sessionId": stored.session_id,
        "media": None,
        "created": stored.created.isoformat(),
        "ended": stored.ended.isoformat() if stored.ended else None,
    }

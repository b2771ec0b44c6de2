"""File uploads transcribed by the server: `POST /v1/transcripts`, progress at `GET .../{id}`.

A client (the dashboard, curl) uploads an audio or video file as multipart form data: `file`,
and optionally `language` (a code, or `auto`), `keyterms` (comma- or newline-separated) and
`speech_model`. The server answers 202 with a job id at once. The job then decodes the file
(PyAV, in a thread), keeps its 16 kHz audio as the session's recording, and transcribes it
region by region through the decode scheduler of the chosen model, beside the live sessions.
`GET /v1/transcripts/{id}` reports the stage and progress (audio seconds done of the total) and,
when done, the turns. The result is a stored session (protocol "upload", id = job id), so it
appears in History with its exports and recording like any streamed session.

Jobs are durable (issue 18): each is kept in the store (`upload_jobs`) from before its 202 until
it ends, with its stage and the path of its saved upload, and `GET /v1/transcripts/{id}` falls back
to the store when the job is not live in this process, so it answers after a restart. On SIGTERM a
job being decoded or transcribed is stopped at once (the decode batch in flight is dropped; turns
are only written when the whole file is done) and left queued with its upload kept; a job already
writing its turns is let finish. On start (`resume_uploads`, after the crash recovery), queued or
interrupted jobs whose upload is still there are transcribed again from the beginning (the
interrupted attempt's session is deleted first, so no turn is stored twice); one whose upload is
gone ends with status "error" and a reason saying to upload it again. Audio is metered only when a
transcript is complete (`BatchTranscript.close`): an interrupted upload costs nothing, and the crash
recovery does not bill its session. A key sees only its own jobs. Every refusal says what to change.

Hostile uploads are bounded before they cost anything (issue 18): an upload takes one of the
server's `max_active_uploads` slots from the moment its body starts arriving (not once it has
arrived, so parallel slow bodies cannot get past the cap) until its job ends; a body that stalls
for `upload_stall_seconds` is refused with 408 and frees its slot; the file's header is checked
against the decoded-duration and sample-rate limits (`upload_limits.py`) before the 202, and
every decoded frame again while decoding. Deleting the upload's session while it is transcribed
(`DELETE /v1/sessions/{id}`) stops the job, which then reports that it was deleted.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from streamscribe.audio.files import (
    AudioLimitError,
    check_declared,
    decode_file,
    probe_audio,
)
from streamscribe.audio.wav import WavWriter
from streamscribe.engine.offline import scheduler_batch, transcribe_audio_async
from streamscribe.errors import AudioDecodeError, ProtocolError
from streamscribe.events import EndReason, SessionConfig
from streamscribe.protocols.common import WHISPER_LANGUAGES
from streamscribe.server.admission import check_quota, quota_message, session_scheduler
from streamscribe.server.auth import Principal, require_key
from streamscribe.server.rest.sessions import turn_json
from streamscribe.server.state import ServerState
from streamscribe.server.transcripts import BatchTranscript
from streamscribe.server.upload_limits import (
    UploadSlots,
    UploadStalled,
    body_chunks,
    decode_limits,
    limit_refusal,
    upload_slots,
)

log = logging.getLogger(__name__)

# A key whose daily audio allowance is spent: 402, as Deepgram and Fireworks answer an account out
# of credit (not 429, which clients retry within seconds; the allowance resets at 00:00 UTC)
QUOTA_STATUS = 402
router = APIRouter(prefix="/v1")

RATE = 16000
PROTOCOL = "upload"
FORM_SLACK_BYTES = 64 * 1024  # the multipart framing and text fields around the file
KEEP_FINISHED_S = 3600.0
DELETED = "the upload was deleted while it was being transcribed"
MAX_KEYTERMS = 100
MAX_KEYTERM_CHARS = 50
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


@dataclass
class Job:
    """One upload being transcribed; its id is also the stored session's id."""

    id: str
    key_id: str | None
    filename: str
    created: float = field(default_factory=time.time)
    status: str = "queued"  # queued | decoding | transcribing | done | error | deleted
    audio_seconds: float = 0.0
    done_seconds: float = 0.0
    error: str | None = None
    turns: list[dict[str, Any]] = field(default_factory=list)
    finished: float | None = None
    task: asyncio.Task | None = None
    deleted: bool = False
    upload: Path | None = None  # the uploaded file, until the job ends
    recording: Path | None = None
    shutdown: bool = False  # stopped by the server's shutdown: resumed at the next start
    storing: bool = False  # writing its turns: a shutdown lets it finish
    state: Any = None  # the server's, to keep the job's end in the store

    async def stop_deleted(self) -> None:
        """Its session is being deleted: stop transcribing and wait for the job to wind up."""
        self.deleted = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait([self.task])
        if self.finished is None:  # cancelled before it began: nothing of it ran
            self.error, self.status = DELETED, "deleted"
            if self.upload is not None:
                self.upload.unlink(missing_ok=True)
            self.finished = time.time()
            if self.state is not None:
                await _persist(self.state, self, finished=True, upload_path=None)

    @property
    def progress(self) -> float:
        if self.status == "done":
            return 1.0
        if not self.audio_seconds:
            return 0.0
        return round(min(1.0, self.done_seconds / self.audio_seconds), 4)

    def json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "session_id": self.id,
            "filename": self.filename,
            "status": self.status,
            "progress": self.progress,
            "audio_seconds": round(self.audio_seconds, 3),
            "done_seconds": round(self.done_seconds, 3),
            "error": self.error,
        }
        if self.status == "done":
            body["turns"] = self.turns
            body["text"] = "\n".join(t["text"] for t in self.turns)
        return body


def _jobs(request: Request) -> dict[str, Job]:
    return _app_jobs(request.app)


def _app_jobs(app: Any) -> dict[str, Job]:
    """The jobs live in this process (the store keeps every job until it ends, and after)."""
    jobs = getattr(app.state, "upload_jobs", None)
    if jobs is None:
        jobs = app.state.upload_jobs = {}
    now = time.time()
    stale = [j.id for j in jobs.values() if j.finished and now - j.finished > KEEP_FINISHED_S]
    for job_id in stale:
        del jobs[job_id]
    return jobs


def _language(value: str | None) -> str | None:
    text = (value or "").strip().lower()
    if text in ("", "auto", "multi"):
        return None
    code = text.split("-")[0]
    if code not in WHISPER_LANGUAGES:
        raise HTTPException(
            400,
            f"language={value!r} is not a language the model knows: use a code such as en, "
            "es, fr, de (or auto to detect it)",
        )
    return code


def _keyterms(value: str | None) -> tuple[str, ...]:
    terms = tuple(t.strip() for t in re.split(r"[,\n]", value or "") if t.strip())
    if len(terms) > MAX_KEYTERMS:
        raise HTTPException(400, f"keyterms: at most {MAX_KEYTERMS} terms, got {len(terms)}")
    long = [t for t in terms if len(t) > MAX_KEYTERM_CHARS]
    if long:
        raise HTTPException(
            400, f"keyterms: each term at most {MAX_KEYTERM_CHARS} characters ({long[0][:60]!r})"
        )
    return terms


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        413,
        f"the file is larger than {limit // (1024 * 1024)} MiB, this server's limit "
        f"(STREAMSCRIBE_MAX_UPLOAD_BYTES={limit}): cut it into parts "
        "or transcribe it locally with `streamscribe transcribe FILE`",
    )


async def _read_form(request: Request, settings: Any) -> FormData:
    """The multipart form, read with a byte cap and a stall deadline between body chunks."""
    limit = settings.max_upload_bytes + FORM_SLACK_BYTES

    async def bounded() -> AsyncIterator[bytes]:
        received = 0
        async for chunk in body_chunks(request, settings.upload_stall_seconds):
            received += len(chunk)
            if received > limit:
                raise _too_large(settings.max_upload_bytes)
            yield chunk

    parser = MultiPartParser(request.headers, bounded(), max_files=1, max_fields=10)
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"invalid multipart form: {exc.message}") from None
    except UploadStalled as exc:
        raise HTTPException(408, str(exc)) from None


def _save(upload: UploadFile, path: Path) -> int:
    """Copy the upload to `path`. Returns the bytes written."""
    written = 0
    upload.file.seek(0)
    with path.open("wb") as out:
        while block := upload.file.read(1 << 20):
            written += len(block)
            out.write(block)
    return written


def _write_recording(path: Path, audio: np.ndarray) -> None:
    writer = WavWriter(path, RATE, 1)
    try:
        for start in range(0, len(audio), RATE * 10):
            writer.write(audio[start : start + RATE * 10])
    finally:
        writer.close()


@router.post("/transcripts", status_code=202)
async def create_transcript(
    request: Request, principal: Principal = Depends(require_key)
) -> dict[str, Any]:
    """Upload a file (multipart field `file`) to be transcribed; poll the job it returns."""
    state: ServerState = request.app.state.streamscribe
    settings = state.settings
    if state.draining:
        raise HTTPException(503, "the server is shutting down: upload to another server")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > settings.max_upload_bytes + FORM_SLACK_BYTES:
        raise _too_large(settings.max_upload_bytes)
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise HTTPException(
            400, "send the file as multipart/form-data in a field named 'file' (curl -F file=@X)"
        )
    try:  # a key whose allowance is already spent is refused before its body is read
        await check_quota(state, principal)
    except ProtocolError as exc:
        raise HTTPException(QUOTA_STATUS, exc.reason) from None
    slots = upload_slots(request.app, settings)
    if not slots.take():  # a slot from the first body byte on, so slow bodies count too
        raise HTTPException(503, f"server busy: {slots.busy()}")
    try:
        return await _accept(request, state, principal, slots)
    except BaseException:
        slots.release()
        raise


async def _accept(
    request: Request, state: ServerState, principal: Principal, slots: UploadSlots
) -> dict[str, Any]:
    """Receive the form, check the file's header, start the job (which then owns the slot)."""
    settings = state.settings
    jobs = _jobs(request)
    form = await _read_form(request, settings)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(
                400, "no file: send it as multipart/form-data in a field named 'file'"
            )
        language = _language(_field(form, "language"))
        keyterms = _keyterms(_field(form, "keyterms"))
        model = (_field(form, "speech_model") or "").strip() or None
        config = SessionConfig(
            turn={"language": language} if language else {},
            model=model,
            language_detection=language is None and state.transcriber.multilingual,
        )
        try:
            scheduler_model = await session_scheduler(state, config)
        except ProtocolError as exc:
            raise HTTPException(400, exc.reason) from None
        filename = Path(upload.filename or "upload").name[:200] or "upload"
        job = Job(str(uuid.uuid4()), principal.key_id, filename)
        folder = (state.settings.data_dir / "uploads").resolve()
        folder.mkdir(parents=True, exist_ok=True)
        suffix = Path(filename).suffix
        path = folder / f"{job.id}{suffix if _SUFFIX.match(suffix) else ''}"
        try:
            size = await asyncio.to_thread(_save, upload, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    finally:
        await form.close()
    if size == 0:
        path.unlink(missing_ok=True)
        raise HTTPException(400, f"{filename!r} is empty: upload an audio or video file")
    try:
        await asyncio.to_thread(_check_header, path, decode_limits(settings))
    except AudioLimitError as exc:
        path.unlink(missing_ok=True)
        status, reason = limit_refusal(exc, settings, filename)
        raise HTTPException(status, reason) from None
    params = {
        "filename": filename,
        "bytes": size,
        "language": language,
        "keyterms": list(keyterms),
        "speech_model": model,
    }
    try:
        await state.store.add_upload_job(job.id, job.key_id, filename, params, str(path))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    jobs[job.id] = job
    job.upload, job.state = path, state
    job.task = asyncio.create_task(
        _transcribe(state, principal, job, path, params, scheduler_model, language, keyterms)
    )
    job.task.add_done_callback(lambda _: slots.release())
    return job.json()


def _check_header(path: Path, limits: Any) -> None:
    """Refuse a file whose header declares too long an audio or an odd rate (AudioLimitError);
    one that cannot be read at all is left to the job, which reports why."""
    try:
        probe = probe_audio(path)
    except AudioDecodeError:
        return
    check_declared(probe, limits, path.name)


@router.get("/transcripts/{job_id}")
async def get_transcript_job(
    job_id: str, request: Request, principal: Principal = Depends(require_key)
) -> dict[str, Any]:
    """The job's stage, progress and (when done) turns; the session itself is in /v1/sessions."""
    job = _jobs(request).get(job_id)
    if job is not None and (principal.key_id is None or job.key_id == principal.key_id):
        return job.json()
    state: ServerState = request.app.state.streamscribe
    stored = await state.store.get_upload_job(job_id, principal.key_id)
    if stored is None:
        raise HTTPException(
            404,
            f"no upload job {job_id!r} for this key: "
            f"the transcript, if it finished, is at /v1/sessions/{job_id}",
        )
    return await _stored_json(state, stored)


async def _stored_json(state: ServerState, stored: Any) -> dict[str, Any]:
    """A job known from the store only (another process's, or one from before a restart)."""
    job = Job(
        stored.id,
        stored.key_id,
        stored.filename,
        status=stored.status,
        audio_seconds=stored.audio_seconds,
        done_seconds=stored.done_seconds,
        error=stored.error,
    )
    if job.status == "done":
        detail = await state.store.get_session(stored.id, stored.key_id)
        job.turns = [turn_json(t) for t in detail.turns] if detail is not None else []
    return job.json()


async def _persist(state: ServerState, job: Job, *, finished: bool = False, **extra: Any) -> None:
    """Keep the job's stage in the store (a failed write is logged: the job goes on)."""
    try:
        await state.store.update_upload_job(
            job.id,
            status=job.status,
            audio_seconds=job.audio_seconds,
            done_seconds=job.done_seconds,
            error=job.error,
            finished=finished,
            **extra,
        )
    except Exception:
        log.exception("upload %s: storing its state failed", job.id)


async def _transcribe(
    state: ServerState,
    principal: Principal,
    job: Job,
    path: Path,
    params: dict[str, Any],
    scheduler: Any,
    language: str | None,
    keyterms: tuple[str, ...],
) -> None:
    record = BatchTranscript(state, principal, job.id, PROTOCOL, params)
    interrupted = False
    try:
        job.status = "decoding"
        await _persist(state, job)
        stop = threading.Event()  # a deleted job stops its decoding thread too
        try:
            audio = await asyncio.to_thread(
                decode_file, path, limits=decode_limits(state.settings), stop=stop
            )
        except asyncio.CancelledError:
            stop.set()
            raise
        except AudioLimitError as exc:
            raise _JobError(limit_refusal(exc, state.settings, job.filename)[1]) from None
        except AudioDecodeError as exc:
            reason = str(exc).replace(str(path), repr(job.filename))
            raise _JobError(
                f"{reason}: upload an audio or video file (WAV, MP3, M4A, ...)"
            ) from None
        if len(audio) == 0:
            raise _JobError(f"no audio in {job.filename!r}: its audio track is empty")
        job.audio_seconds = len(audio) / RATE
        await _check_quota(state, principal, job.audio_seconds)
        recording: Path | None = None
        key = principal.key
        if state.settings.record_audio and (key is None or key.record_audio):
            folder = (state.settings.data_dir / "recordings").resolve()
            folder.mkdir(parents=True, exist_ok=True)
            recording = job.recording = folder / f"{job.id}.wav"
            await asyncio.to_thread(_write_recording, recording, audio)
        record.params = {**params, "audio_seconds": round(job.audio_seconds, 3)}
        record.recording = str(recording) if recording else None
        await record.open()
        job.status = "transcribing"
        await _persist(state, job)

        def progress(done: float, total: float) -> None:
            job.done_seconds = done

        prompt = ", ".join(keyterms) + "." if keyterms else ""
        turns = await transcribe_audio_async(
            audio,
            scheduler_batch(scheduler, f"upload-{job.id}"),
            state.settings.final_beam_size,
            language,
            on_progress=progress,
            prompt=prompt,
        )
        job.storing = True  # a shutdown now waits for the turns and the metering
        records = await record.close(turns, job.audio_seconds)
        job.turns = [turn_json(r) for r in records]
        job.status = "done"
        log.info("upload %s: %.1f s audio, %d turns", job.id, job.audio_seconds, len(records))
    except _JobError as exc:
        job.error, job.status = str(exc), "error"
    except asyncio.CancelledError:
        if job.shutdown and not job.deleted:
            interrupted = True
            log.warning("upload %s: stopped by the shutdown while %s", job.id, job.status)
            raise
        if not job.deleted:
            raise
        log.info("upload %s: deleted while %s; stopped", job.id, job.status)
        job.error, job.status = DELETED, "deleted"
    except Exception:
        if job.deleted:
            job.error, job.status = DELETED, "deleted"
        else:
            log.exception("upload %s failed", job.id)
            job.error, job.status = "transcription failed on the server: see its log", "error"
    finally:
        if interrupted:
            # left for the next start: upload kept, session left open (not billed), job queued
            job.status, job.done_seconds = "queued", 0.0
            await _persist(state, job)
        else:
            if job.deleted:
                if job.recording is not None:
                    job.recording.unlink(missing_ok=True)
            elif job.status != "done":
                try:
                    await record.abandon(job.audio_seconds)
                except Exception:
                    log.exception("store write failed")
            path.unlink(missing_ok=True)
            await _persist(state, job, finished=True, upload_path=None)
        job.finished = time.time()


class _JobError(Exception):
    """A job failed for a reason the user can act on (the message says how)."""


async def _check_quota(state: ServerState, principal: Principal, seconds: float) -> None:
    key = principal.key
    if key is None or key.max_audio_hours_per_day is None:
        return
    used = await state.store.audio_seconds_today(key.id)
    allowed = key.max_audio_hours_per_day * 3600
    if used + seconds > allowed:
        left = max(0.0, allowed - used)
        raise _JobError(
            quota_message(
                key.name,
                key.max_audio_hours_per_day,
                f" and this file needs {seconds / 60:.1f} min, {left / 60:.1f} min are left",
            )
        )


async def stop_uploads(app: Any, timeout_s: float = 10.0) -> None:
    """At shutdown: stop the jobs being decoded or transcribed (they stay queued, upload kept,
    and resume at the next start); let those already writing their turns finish."""
    live = [j for j in _app_jobs(app).values() if j.task is not None and not j.task.done()]
    for job in live:
        if not job.storing:
            job.shutdown = True
            job.task.cancel()  # type: ignore[union-attr]
    if live:
        log.info("shutting down: %d upload jobs left to resume at the next start", len(live))
        await asyncio.wait([j.task for j in live if j.task is not None], timeout=timeout_s)


async def resume_uploads(app: Any, state: ServerState) -> None:
    """At start: resume the jobs a stop or a crash interrupted, or end them visibly."""
    store = state.store
    for stored in await store.unfinished_upload_jobs():
        try:
            await _resume(app, state, stored)
        except Exception:
            log.exception("upload %s: resuming it failed", stored.id)
            await _fail_stored(
                state,
                stored,
                "the server restarted and could not resume this job (see its "
                "log): upload the file again",
            )


async def _fail_stored(state: ServerState, stored: Any, reason: str) -> None:
    store = state.store
    await store.update_upload_job(
        stored.id, status="error", error=reason, finished=True, upload_path=None
    )
    await store.end_session(stored.id, str(EndReason.ERROR), 0.0)  # not billed: not transcribed
    if stored.upload_path:
        Path(stored.upload_path).unlink(missing_ok=True)
    log.warning("upload %s: %s", stored.id, reason)


async def _resume(app: Any, state: ServerState, stored: Any) -> None:
    store = state.store
    path = Path(stored.upload_path) if stored.upload_path else None
    session = await store.get_session(stored.id)
    if session is not None and session.info.end_reason == str(EndReason.TERMINATED):
        # its transcript was complete (turns written, audio metered) when the server stopped
        await store.update_upload_job(
            stored.id,
            status="done",
            done_seconds=stored.audio_seconds,
            finished=True,
            upload_path=None,
        )
        if path is not None:
            path.unlink(missing_ok=True)
        return
    if path is None or not path.exists():
        await _fail_stored(
            state,
            stored,
            f"the server restarted while {stored.filename!r} was being transcribed and the "
            "uploaded file is no longer on the server: upload it again",
        )
        return
    principal = Principal(None)
    if stored.key_id is not None:
        key = await store.get_key(stored.key_id)
        if key is None or key.revoked:
            await _fail_stored(
                state, stored, "the server restarted and this job's API key has been revoked"
            )
            return
        principal = Principal(key)
    params = stored.params
    language = params.get("language")
    keyterms = tuple(params.get("keyterms") or ())
    model = params.get("speech_model")
    config = SessionConfig(
        turn={"language": language} if language else {},
        model=model,
        language_detection=language is None and state.transcriber.multilingual,
    )
    try:
        scheduler = await session_scheduler(state, config)
    except ProtocolError as exc:
        await _fail_stored(state, stored, f"the server restarted and {exc.reason}")
        return
    if session is not None:  # the interrupted attempt: it starts again, so no turn twice
        await store.delete_session(stored.id)
    job = Job(stored.id, stored.key_id, stored.filename, created=stored.created.timestamp())
    job.upload, job.state = path, state
    _app_jobs(app)[job.id] = job
    slots = upload_slots(app, state.settings)
    took = slots.take()  # counted when there is room; a resumed job runs either way
    job.task = asyncio.create_task(
        _transcribe(state, principal, job, path, params, scheduler, language, keyterms)
    )
    if took:
        job.task.add_done_callback(lambda _: slots.release())
    log.warning("upload %s: resumed after a restart (%s)", job.id, stored.filename)

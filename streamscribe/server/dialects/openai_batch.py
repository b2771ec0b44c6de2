"""OpenAI transcription uploads: `/v1/audio/transcriptions` and `/translations` (JSON, text,
subtitles, SSE).

Thin by design: the wire formats live in `protocols/openai_batch.py`. Here the upload is read
with a size cap, decoded in a worker thread, and transcribed region by region through the
server's shared scheduler (the one model; live sessions keep priority for their finals). The
speech-region search and the per-batch loop of `transcribe_audio_async` run on a worker thread's
own event loop, so a long file never stalls live sessions; only the decode requests hop back to
the scheduler on the server's loop. The Realtime socket is
`openai_realtime.py`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from streamscribe.audio.files import (
    AudioLimitError,
    DecodeLimits,
    check_declared,
    decode_stream,
    probe_audio,
)
from streamscribe.config import Settings
from streamscribe.engine.decoding import DecodeRequest, DecodeResult
from streamscribe.engine.offline import RATE, scheduler_batch, transcribe_audio_async
from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.errors import AudioDecodeError, ProtocolError, ServerRefusal
from streamscribe.events import ErrorKind, TurnUpdate, Word
from streamscribe.formats import to_srt, to_vtt
from streamscribe.protocols import openai_batch
from streamscribe.protocols.openai_common import OpenAIError, error_body
from streamscribe.server.admission import check_admission, quota_refusal, session_scheduler
from streamscribe.server.auth import Principal, require_key
from streamscribe.server.state import ServerState
from streamscribe.server.transcripts import store_transcript
from streamscribe.server.upload_limits import decode_limits, limit_refusal

log = logging.getLogger(__name__)
router = APIRouter()

MAX_UPLOAD_MB = 25  # OpenAI's own limit, so clients already split larger files
MAX_BODY_BYTES = (MAX_UPLOAD_MB + 1) * 1024 * 1024  # the file plus the form's text fields
DRAIN_BYTES = 8 * MAX_BODY_BYTES  # an over-large body is read (and dropped) up to this much
MAX_AUDIO_S = 3600.0  # decoded length cap: one hour is ~230 MB of float samples
# (the declared sample rate is bounded too: a 25 MB WAV declaring 1 Hz would be 290 days)
BATCH_SLOTS = 2  # uploads decoded and transcribed at once; more wait their turn
PROTOCOL = "openai-batch"  # how stored sessions and metrics name these uploads


class _TooLarge(Exception):
    pass


class _Abandoned(Exception):
    """The client went away: the remaining regions are not decoded."""


def _slots(request: Request) -> asyncio.Semaphore:
    """The app's upload slots (one semaphore per app, made on first use)."""
    slots = getattr(request.app.state, "openai_batch_slots", None)
    if slots is None:
        slots = request.app.state.openai_batch_slots = asyncio.Semaphore(BATCH_SLOTS)
    return slots


def _error(exc: ProtocolError) -> JSONResponse:
    error = OpenAIError.from_protocol(exc)
    return JSONResponse(error_body(exc), status_code=error.status, headers=error.headers)


def _too_large() -> OpenAIError:
    return OpenAIError(
        f"Maximum content size limit ({MAX_UPLOAD_MB} MB) exceeded: split the audio or compress "
        "it (e.g. to Opus or MP3) and upload the parts",
        param="file",
        code="file_too_large",
        status=413,
    )


def _too_long(max_audio_s: float) -> OpenAIError:
    return OpenAIError(
        f"Audio longer than {max_audio_s:.0f} s: split it and upload the parts",
        param="file",
        code="audio_too_long",
        status=413,
    )


def _decode(source: BinaryIO, name: str, settings: Settings, max_audio_s: float) -> np.ndarray:
    """The upload as 16 kHz mono, refused (AudioLimitError) when its header declares a rate out
    of the server's limits or more than `max_audio_s`; decoding stops just past `max_audio_s`
    (and at any frame whose rate is out of the limits) whatever the header said."""
    limits = decode_limits(settings, max_audio_s)
    try:
        probe = probe_audio(name, source)
    except AudioDecodeError:
        probe = None  # unreadable: decoding says why
    source.seek(0)
    if probe is not None:
        check_declared(probe, limits, name)
    rates = DecodeLimits(None, limits.min_rate, limits.max_rate)
    return decode_stream(source, name=name, max_seconds=max_audio_s, limits=rates)


async def _principal(request: Request) -> Principal:
    try:
        return await require_key(request)
    except HTTPException as exc:
        raise OpenAIError(
            str(exc.detail), code="invalid_api_key", status=401, kind=ErrorKind.AUTH
        ) from None


async def _read_form(request: Request) -> FormData:
    """The multipart form, refused with 413 past the size cap (the body is drained first, so
    the client reads the answer instead of a broken pipe)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise OpenAIError(
            "Send the request as multipart/form-data with the audio in a `file` part "
            "(the openai SDK does this)",
            param="file",
            code="invalid_content_type",
        )
    body = request.stream()
    received = 0

    async def limited() -> AsyncIterator[bytes]:
        nonlocal received
        async for chunk in body:
            received += len(chunk)
            if received > MAX_BODY_BYTES:
                raise _TooLarge
            yield chunk

    declared = request.headers.get("content-length", "")
    try:
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise _TooLarge
        parser = MultiPartParser(request.headers, limited(), max_files=4, max_fields=200)
        return await parser.parse()
    except _TooLarge:
        async for chunk in body:
            received += len(chunk)
            if received > DRAIN_BYTES:
                break
        raise _too_large() from None
    except MultiPartException as exc:
        raise OpenAIError(f"Invalid multipart form: {exc.message}", code="invalid_form") from None


def _form_fields(form: FormData) -> tuple[UploadFile | None, dict[str, list[str]]]:
    upload: UploadFile | None = None
    fields: dict[str, list[str]] = {}
    for name, value in form.multi_items():
        if name == "file":
            if not isinstance(value, UploadFile):
                raise OpenAIError(
                    "file must be a file part (with a filename), not a text field",
                    param="file",
                )
            if upload is not None:
                raise OpenAIError("send exactly one file part", param="file")
            upload = value
        elif isinstance(value, UploadFile):
            raise OpenAIError(f"{name} is a file part, but only `file` may be a file", param=name)
        else:
            fields.setdefault(name, []).append(value)
    return upload, fields


async def _model(state: ServerState, req: openai_batch.BatchRequest) -> DecodeScheduler:
    """The scheduler of the model this request needs: the multilingual one for translation or
    another language (loaded on first use), else the default; a 400 naming the fix if none."""
    try:
        return await session_scheduler(state, openai_batch.model_config(req))
    except ProtocolError as exc:
        param = "model" if req.task == "translate" or req.language in (None, "en") else "language"
        raise OpenAIError(exc.reason, param=param, code="model_not_available") from None


async def _remember(
    state: ServerState,
    principal: Principal,
    req: openai_batch.BatchRequest,
    turns: list[TurnUpdate],
    seconds: float,
) -> None:
    """Keep the transcript as a stored session (History, exports, the sessions API)."""
    params = {"task": req.task, "model": req.model, "language": req.language}
    await store_transcript(state, principal, str(uuid.uuid4()), PROTOCOL, params, turns, seconds)


async def _transcribe(
    state: ServerState,
    scheduler: DecodeScheduler,
    req: openai_batch.BatchRequest,
    audio: np.ndarray,
    cancelled: threading.Event,
    on_region: Callable[[DecodeResult], None] | None = None,
) -> list[TurnUpdate]:
    """Transcribe on a worker thread's loop; decodes go to the shared scheduler on ours."""
    loop = asyncio.get_running_loop()
    shared = scheduler_batch(scheduler, f"openai-batch:{uuid.uuid4().hex}")

    async def decode(requests: list[DecodeRequest]) -> list[DecodeResult | None]:
        if cancelled.is_set():
            raise _Abandoned
        results = await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(shared(requests), loop)
        )
        if on_region is not None:
            for result in results:
                if result is not None and result.words:
                    loop.call_soon_threadsafe(on_region, result)
        return results

    def work() -> list[TurnUpdate]:
        return asyncio.run(
            transcribe_audio_async(
                audio,
                decode,
                state.settings.final_beam_size,
                req.language,
                task=req.task,
                prompt=req.prompt,
            )
        )

    return await asyncio.to_thread(work)


async def _batch(request: Request, translation: bool) -> Response:
    state: ServerState = request.app.state.streamscribe
    form: FormData | None = None
    try:
        principal = await _principal(request)
        form = await _read_form(request)
        upload, fields = _form_fields(form)
        req = openai_batch.parse_form(fields, translation=translation)
        if upload is None:
            raise OpenAIError(
                "you must provide a file: the audio in a multipart part named `file`",
                param="file",
                code="missing_required_parameter",
            )
        await check_admission(state, principal)
        scheduler = await _model(state, req)
        await _slots(request).acquire()
    except ProtocolError as exc:
        if form is not None:
            await form.close()
        return _error(exc)
    max_audio_s = min(MAX_AUDIO_S, state.settings.max_upload_seconds)
    try:
        name = upload.filename or "upload"
        audio = await asyncio.to_thread(_decode, upload.file, name, state.settings, max_audio_s)
    except AudioLimitError as exc:
        _slots(request).release()
        if exc.limit == "duration":
            return _error(_too_long(max_audio_s))
        return _error(
            OpenAIError(
                limit_refusal(exc, state.settings, name)[1], param="file", code="invalid_value"
            )
        )
    except AudioDecodeError as exc:
        _slots(request).release()
        return _error(OpenAIError(f"Invalid file format: {exc}", param="file"))
    except BaseException:
        _slots(request).release()
        raise
    finally:
        await form.close()
    if len(audio) > max_audio_s * RATE:
        _slots(request).release()
        return _error(_too_long(max_audio_s))
    duration = len(audio) / RATE
    # the whole file must fit in what is left of the key's allowance today
    if quota := quota_refusal(state, principal, duration, "this file"):
        _slots(request).release()
        return _error(quota)
    if req.stream:
        _slots(request).release()  # the event stream takes its own slot once it starts
        return StreamingResponse(
            _events(state, scheduler, req, audio, principal, _slots(request)),
            media_type=req.media_type,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        turns = await _transcribe(state, scheduler, req, audio, threading.Event())
    except Exception:
        log.exception("openai batch transcription failed")
        return _error(ServerRefusal(ErrorKind.INTERNAL, "The server had an error transcribing"))
    finally:
        _slots(request).release()
    await _remember(state, principal, req, turns, duration)
    fmt = req.response_format
    if fmt == "json":
        return JSONResponse(openai_batch.json_body(req, turns, duration))
    if fmt == "verbose_json":
        return JSONResponse(openai_batch.verbose_body(req, turns, duration))
    text = {"text": openai_batch.text_body, "srt": to_srt, "vtt": to_vtt}[fmt](turns)
    return Response(text.encode("utf-8"), media_type=req.media_type)


async def _events(
    state: ServerState,
    scheduler: DecodeScheduler,
    req: openai_batch.BatchRequest,
    audio: np.ndarray,
    principal: Principal,
    slots: asyncio.Semaphore,
) -> AsyncIterator[bytes]:
    """`stream=true`: a delta per speech region as the scheduler returns it, then done."""
    stream = openai_batch.TranscriptStream(req)
    regions: asyncio.Queue[DecodeResult | None] = asyncio.Queue()
    cancelled = threading.Event()
    await slots.acquire()
    task = asyncio.create_task(
        _transcribe(state, scheduler, req, audio, cancelled, regions.put_nowait)
    )

    def finished(done: asyncio.Task) -> None:
        regions.put_nowait(None)
        slots.release()
        if not done.cancelled():
            done.exception()  # retrieved here; reported below unless the client left

    task.add_done_callback(finished)
    try:
        while (result := await regions.get()) is not None:
            words = [Word(w.text, 0, 0, w.probability, True) for w in result.words]
            chunk = stream.delta(words)
            if chunk is not None:
                yield chunk
        if task.cancelled() or task.exception() is not None:
            log.error("openai streaming transcription failed: %r", task)
            yield stream.error(
                OpenAIError.from_protocol(
                    ServerRefusal(ErrorKind.INTERNAL, "The server had an error transcribing")
                )
            )
            return
        await _remember(state, principal, req, task.result(), len(audio) / RATE)
        yield stream.done()
    finally:
        cancelled.set()  # a client that went away stops the remaining decodes


@router.post("/v1/audio/transcriptions")
async def transcriptions(request: Request) -> Response:
    """Transcribe an uploaded file (OpenAI `audio.transcriptions.create`)."""
    return await _batch(request, translation=False)


@router.post("/v1/audio/translations")
async def translations(request: Request) -> Response:
    """Translate an uploaded file into English (needs a multilingual model, e.g. `base`)."""
    return await _batch(request, translation=True)

"""Deepgram over HTTP: pre-recorded `POST /v1/listen` (the file as the body), `/v1/auth/grant`.

The route reads the options and checks admission and the model before reading a large body,
takes one of the server's upload slots before the first body byte (shared with dashboard
uploads, `upload_limits.py`), refuses a body that stalls, checks the file's declared rate and
decoded length (the header, or the size of raw audio) against the server's limits before
decoding, decodes the body (any file PyAV reads, or raw audio with `encoding=`, in bounded
chunks, every frame checked again) in a thread, transcribes
each channel through the shared scheduler, labels speakers when asked, keeps the transcript as a
stored session whose id is the response's `request_id`, and answers in Deepgram's response
shape (`protocols.deepgram_prerecorded`). The grant route mints Deepgram's temporary tokens (the
same single-use tokens as every dialect). The live socket on the same path is `deepgram.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from streamscribe.audio.files import (
    AudioLimitError,
    DecodeLimits,
    check_declared,
    decode_file,
    decode_file_channels,
    decode_raw_file,
    probe_audio,
)
from streamscribe.audio.resample import TARGET_RATE
from streamscribe.engine.enrichment import label_speakers
from streamscribe.engine.offline import scheduler_batch, transcribe_audio_async
from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.engine.whisper_rules import FILLER_PROMPT
from streamscribe.errors import AudioDecodeError, ProtocolError
from streamscribe.events import SessionConfig
from streamscribe.protocols.common import finite_number, loads_json
from streamscribe.protocols.deepgram_options import (
    DeepgramOptions,
    error_body,
    http_error,
    session_config,
)
from streamscribe.protocols.deepgram_prerecorded import parse_prerecorded, response
from streamscribe.server.admission import (
    check_admission,
    quota_refusal,
    session_scheduler,
    session_speakers,
)
from streamscribe.server.auth import Principal, mint_token, require_key
from streamscribe.server.state import ServerState
from streamscribe.server.transcripts import store_transcript, turn_json
from streamscribe.server.upload_limits import (
    UploadStalled,
    body_chunks,
    decode_limits,
    limit_refusal,
    upload_slots,
)

log = logging.getLogger(__name__)
router = APIRouter()

PROTOCOL = "deepgram-prerecorded"
MAX_JSON_BYTES = 64 * 1024
GRANT_TTL_S = (1, 3600)


def refusal(status: int, reason: str, request_id: str) -> JSONResponse:
    """Deepgram's error body with its status (the grant route refuses the same way)."""
    return JSONResponse(error_body(status, reason, request_id), status_code=status)


@router.post("/v1/listen")
async def listen_prerecorded(request: Request) -> JSONResponse:
    request_id = str(uuid.uuid4())
    state: ServerState = request.app.state.streamscribe
    try:
        principal = await require_key(request)
    except HTTPException as exc:
        return refusal(exc.status_code, str(exc.detail), request_id)
    try:
        options = parse_prerecorded(request.query_params.multi_items())
        await check_admission(state, principal)
        config = session_config(options)
        scheduler = await session_scheduler(state, config)  # before reading a large body
    except ProtocolError as exc:
        status, body = http_error(exc.kind, exc.reason, request_id)
        return JSONResponse(body, status_code=status)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return await _url_body(request, request_id)
    settings = state.settings
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return refusal(413, _too_large(limit), request_id)
    slots = upload_slots(request.app, settings)
    if not slots.take():  # before the first body byte: slow bodies count too
        return refusal(429, f"Too many requests: {slots.busy()}", request_id)
    try:
        return await _transcribe_body(
            request, request_id, state, principal, options, config, scheduler
        )
    finally:
        slots.release()


def _too_large(limit: int) -> str:
    return (
        f"The file is larger than {limit / 1024**3:g} GiB, this server's limit "
        f"(STREAMSCRIBE_MAX_UPLOAD_BYTES={limit}): split it and send the parts"
    )


async def _transcribe_body(
    request: Request,
    request_id: str,
    state: ServerState,
    principal: Principal,
    options: DeepgramOptions,
    config: SessionConfig,
    scheduler: DecodeScheduler,
) -> JSONResponse:
    """Receive the body (bounded in size and stall time), decode it within the limits,
    transcribe it and answer in Deepgram's shape."""
    settings = state.settings
    folder = (settings.data_dir / "tmp").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".upload") as tmp:
        digest = hashlib.sha256()
        size = 0
        try:
            async for chunk in body_chunks(request, settings.upload_stall_seconds):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    return refusal(413, _too_large(settings.max_upload_bytes), request_id)
                digest.update(chunk)
                tmp.write(chunk)
        except UploadStalled as exc:
            return refusal(408, str(exc), request_id)
        tmp.flush()
        if size == 0:
            return refusal(
                400,
                "Empty request body: send the audio file's bytes as the body "
                "(Content-Type: audio/wav or application/octet-stream)",
                request_id,
            )
        try:
            channels = await asyncio.to_thread(
                _decode, Path(tmp.name), options, decode_limits(settings)
            )
        except AudioLimitError as exc:
            status, reason = limit_refusal(exc, settings, "the uploaded audio")
            return refusal(status, reason, request_id)
        except AudioDecodeError as exc:
            reason = str(exc).replace(tmp.name, "the uploaded audio")
            return refusal(400, f"Bad Request: failed to process audio: {reason}", request_id)
    duration_ms = max((len(c) for c in channels), default=0) * 1000 // TARGET_RATE
    # the whole file must fit in what is left of the key's allowance today
    if quota := quota_refusal(state, principal, duration_ms / 1000, "this file"):
        status, body = http_error(quota.kind, quota.reason, request_id)
        return JSONResponse(body, status_code=status)
    created = datetime.now(UTC)
    prompt = (", ".join(options.keyterms) + ".") if options.keyterms else ""
    if options.filler_words:
        prompt = f"{FILLER_PROMPT} {prompt}".strip()
    try:
        turns = await asyncio.gather(
            *(
                transcribe_audio_async(
                    samples,
                    scheduler_batch(scheduler, f"{request_id}:{i}"),
                    state.settings.final_beam_size,
                    options.language,
                    prompt=prompt,
                    channel=i,
                )
                for i, samples in enumerate(channels)
            )
        )
    except Exception:
        log.exception("pre-recorded transcription %s failed", request_id)
        return refusal(500, "The speech model failed on this file; try again", request_id)
    if options.diarize:
        try:
            trackers = await session_speakers(
                state, replace(config, audio=replace(config.audio, channels=len(channels)))
            )
        except ProtocolError as exc:
            status, body = http_error(exc.kind, exc.reason, request_id)
            return JSONResponse(body, status_code=status)
        turns = list(
            await asyncio.gather(
                *(
                    label_speakers(list(t), samples, tracker)
                    for t, samples, tracker in zip(turns, channels, trackers or [], strict=True)
                )
            )
        )
    params = {"audio": {"channels": len(channels)}, "turn": turn_json(config.turn)}
    all_turns = [turn for channel in turns for turn in channel]
    await store_transcript(
        state, principal, request_id, PROTOCOL, params, all_turns, duration_ms / 1000
    )
    body = response(
        turns,
        options,
        request_id=request_id,
        sha256=digest.hexdigest(),
        created=created,
        duration_ms=duration_ms,
    )
    return JSONResponse(body)


async def _url_body(request: Request, request_id: str) -> JSONResponse:
    """A JSON body names a URL to fetch: this server never fetches media from the network."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_JSON_BYTES:
            break
    try:
        body = loads_json(raw[:MAX_JSON_BYTES].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        body = None
    if isinstance(body, dict) and "url" in body:
        return refusal(
            400,
            "Transcribing from a URL is not supported: this server does not fetch media from "
            "the network; send the file's bytes as the request body instead (transcribe_file)",
            request_id,
        )
    return refusal(
        400,
        'A JSON body must be {"url": "..."}; to transcribe a file send its bytes as the body',
        request_id,
    )


def _decode(path: Path, options: DeepgramOptions, limits: DecodeLimits) -> list[np.ndarray]:
    """The body as float32 16 kHz arrays: one per channel with multichannel, else one mix.
    Out of `limits` (seen from the header or the size first, then while decoding):
    AudioLimitError."""
    if options.encoding is None:
        check_declared(probe_audio(path), limits, path, keep_channels=options.multichannel)
        if options.multichannel:
            return list(decode_file_channels(path, limits=limits))
        return [decode_file(path, limits=limits)]
    return decode_raw_file(
        path,
        options.encoding,
        options.channels,
        options.sample_rate or TARGET_RATE,
        options.multichannel,
        limits,
    )


# ---------------------------------------------------------------- temporary tokens


@router.post("/v1/auth/grant")
async def auth_grant(request: Request) -> JSONResponse:
    """A temporary token for `Authorization: Bearer` (Deepgram's `access_token`), single use."""
    try:
        principal = await require_key(request)
    except HTTPException as exc:
        return refusal(exc.status_code, str(exc.detail), str(uuid.uuid4()))
    ttl = 30
    raw = await request.body()
    if raw.strip():
        try:
            body = loads_json(raw[:MAX_JSON_BYTES].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = None
        value = body.get("ttl_seconds") if isinstance(body, dict) else "?"
        if value is not None:
            low, high = GRANT_TTL_S
            if not finite_number(value) or not low <= value <= high:
                return refusal(
                    400,
                    f'Expected {{"ttl_seconds": N}}, N in seconds from {low} to {high}',
                    str(uuid.uuid4()),
                )
            ttl = round(value)
    token = await mint_token(request.app.state.streamscribe, principal, ttl)
    return JSONResponse({"access_token": token, "expires_in": float(ttl)})

"""Deepgram routes: live `/v1/listen` (WebSocket), pre-recorded `POST /v1/listen`, `/v1/auth/grant`.

The live route authenticates (`Authorization: Token KEY` or `Bearer TOKEN`, or a browser's
`Sec-WebSocket-Protocol: token, KEY`), reads the options and checks admission before the
upgrade, refusing with Deepgram's HTTP status and JSON body; then it hands the socket to the
shared session loop. Without `encoding=` the stream is a WAV file: the route reads the format
from the first binary frame before the session starts, and hands that frame (and any control
message before it) on to the session loop. Protocol logic lives in `protocols/deepgram*.py`.

The pre-recorded route decodes the body (any file PyAV reads, or raw audio with `encoding=`),
transcribes each channel through the shared scheduler, stores the transcript as a session whose
id is the response's `request_id`, and answers in Deepgram's response shape.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse

from streamscribe.audio.codecs import decode_pcm, deinterleave
from streamscribe.audio.files import decode_file, decode_file_channels
from streamscribe.audio.resample import TARGET_RATE, resample
from streamscribe.engine.enrichment import label_speakers
from streamscribe.engine.offline import scheduler_batch, transcribe_audio_async
from streamscribe.errors import AudioDecodeError, ProtocolError
from streamscribe.events import AudioFormat, ErrorKind, SessionConfig, TurnUpdate
from streamscribe.protocols import deepgram
from streamscribe.protocols.common import Close, Outgoing, finite_number, loads_json
from streamscribe.protocols.deepgram_options import (
    NO_AUDIO_TIMEOUT_S,
    DeepgramOptions,
    error_body,
    http_error,
    session_config,
)
from streamscribe.protocols.deepgram_prerecorded import parse_prerecorded, response
from streamscribe.server.auth import Principal, require_key
from streamscribe.server.auth import authenticate_stream as authenticate
from streamscribe.server.session_loop import (
    check_admission,
    run_session,
    session_scheduler,
    session_speakers,
)
from streamscribe.server.state import ServerState
from streamscribe.store import TurnRecord

log = logging.getLogger(__name__)
router = APIRouter()

MAX_UPLOAD_BYTES = 2 * 1024**3  # the cloud's limit for a pre-recorded file
MAX_JSON_BYTES = 64 * 1024
MAX_HELD_MESSAGES = 64  # control messages before a WAV stream's first audio frame
GRANT_TTL_S = (1, 3600)
GRANT_SESSION_S = 10800


# ---------------------------------------------------------------- live


@router.websocket("/v1/listen")
async def listen_live(ws: WebSocket) -> None:
    state: ServerState = ws.app.state.streamscribe
    items = ws.query_params.multi_items()
    headers, subprotocol = _credentials(ws)
    try:
        principal = await authenticate(state, headers, dict(items))
        options = deepgram.parse_options(items)
        await check_admission(state, principal)
        await session_scheduler(state, session_config(options))  # no model fits: a 400 here
    except ProtocolError as exc:
        await _deny(ws, state, exc)
        return
    await ws.accept(subprotocol=subprotocol)
    audio: AudioFormat | None = None
    skip = 0
    socket: Any = ws
    if options.encoding is None:
        sniffed = await _first_audio(ws, state, options)
        if sniffed is None:
            return
        audio, skip, held = sniffed
        socket = _Replay(ws, held)
    config = session_config(options, audio)
    dialect = deepgram.DeepgramProtocol(config, options, skip_bytes=skip)
    await run_session(socket, dialect, config, state, "deepgram", principal)


def _credentials(ws: WebSocket) -> tuple[Mapping[str, str], str | None]:
    """The headers to authenticate with, and the subprotocol to select: browsers cannot set
    Authorization and offer `Sec-WebSocket-Protocol: token, KEY` (or `bearer, JWT`) instead,
    and drop the connection unless the server selects `token` (`bearer`)."""
    headers = dict(ws.headers)
    offered = [p.strip() for p in ws.scope.get("subprotocols", []) if p.strip()]
    if len(offered) >= 2 and offered[0].lower() in ("token", "bearer"):
        if "authorization" not in headers:
            headers["authorization"] = f"{offered[0]} {offered[1]}"
        return headers, offered[0]
    return headers, None


async def _deny(ws: WebSocket, state: ServerState, exc: ProtocolError) -> None:
    """Refuse the upgrade with an HTTP status and Deepgram's error body, as the cloud does."""
    status, body = http_error(exc.kind, exc.reason)
    state.metrics.errors.labels(str(status)).inc()
    header = exc.reason.encode("ascii", "backslashreplace").decode("ascii")[:200]
    try:
        await ws.send_denial_response(
            JSONResponse(body, status_code=status, headers={"dg-error": header})
        )
    except RuntimeError:  # an ASGI server without the denial extension: a bare 403
        await ws.close(1008)


async def _first_audio(
    ws: WebSocket, state: ServerState, options: DeepgramOptions
) -> tuple[AudioFormat | None, int, list[dict]] | None:
    """Read up to the first audio frame of a stream sent without `encoding=`: its WAV header
    gives the format. Returns (format, header bytes, messages to hand on), with format None
    when the client ended or misbehaved before any audio (the session loop answers that);
    None when the connection is already over."""
    held: list[dict] = []
    deadline = time.monotonic() + NO_AUDIO_TIMEOUT_S
    while True:
        try:
            message = await asyncio.wait_for(ws.receive(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            await _send(ws, state, _dialect(options).error(ProtocolError(ErrorKind.TIMEOUT, "")))
            return None
        except Exception:
            return None
        if message["type"] == "websocket.disconnect":
            return None
        deadline = time.monotonic() + NO_AUDIO_TIMEOUT_S
        data, text = message.get("bytes"), message.get("text")
        if data:
            try:
                sniffed = deepgram.wav_format(data)
            except ProtocolError as exc:
                await _send(ws, state, _dialect(options).error(exc))
                return None
            if sniffed is None:
                await _send(ws, state, _dialect(options).error(_unknown_format()))
                return None
            if sniffed[0].channels > 1 and not options.multichannel:
                await _send(ws, state, _dialect(options).error(_mixed(sniffed[0].channels)))
                return None
            return sniffed[0], sniffed[1], [*held, message]
        kind = _control_type(text) if text is not None else None
        if kind == "KeepAlive":
            continue
        held.append(message)
        if kind != "Finalize" or len(held) >= MAX_HELD_MESSAGES:
            return None, 0, held


def _control_type(text: str) -> str | None:
    try:
        message = loads_json(text)
    except ValueError:
        return None
    return message.get("type") if isinstance(message, dict) else None


def _unknown_format() -> ProtocolError:
    return ProtocolError(
        ErrorKind.BAD_AUDIO,
        "Unknown audio format: for raw audio add encoding=linear16 (or mulaw, alaw) and "
        "sample_rate=; without encoding only WAV streams are read (not WebM/Ogg/MP3)",
    )


def _mixed(channels: int) -> ProtocolError:
    return ProtocolError(
        ErrorKind.BAD_AUDIO,
        f"A {channels}-channel WAV stream without multichannel=true: mixing channels down is "
        "not supported live; add multichannel=true or send mono",
    )


def _dialect(options: DeepgramOptions) -> deepgram.DeepgramProtocol:
    return deepgram.DeepgramProtocol(session_config(options), options)


async def _send(ws: WebSocket, state: ServerState, outgoing: list[Outgoing]) -> None:
    for out in outgoing:
        try:
            if isinstance(out, Close):
                state.metrics.errors.labels(str(out.code)).inc()
                await ws.close(out.code, out.reason)
                return
            await ws.send_text(out.text)
        except Exception:
            return


class _Replay:
    """The socket, with the messages already read handed out again first."""

    def __init__(self, ws: WebSocket, held: list[dict]) -> None:
        self._ws = ws
        self._held = held

    async def receive(self) -> dict:
        if self._held:
            return self._held.pop(0)
        return await self._ws.receive()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)


# ---------------------------------------------------------------- pre-recorded


def _refusal(status: int, reason: str, request_id: str) -> JSONResponse:
    return JSONResponse(error_body(status, reason, request_id), status_code=status)


@router.post("/v1/listen")
async def listen_prerecorded(request: Request) -> JSONResponse:
    request_id = str(uuid.uuid4())
    state: ServerState = request.app.state.streamscribe
    try:
        principal = await require_key(request)
    except HTTPException as exc:
        return _refusal(exc.status_code, str(exc.detail), request_id)
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
    folder = (state.settings.data_dir / "tmp").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".upload") as tmp:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                return _refusal(
                    413, f"The file is larger than {MAX_UPLOAD_BYTES >> 30} GiB", request_id
                )
            digest.update(chunk)
            tmp.write(chunk)
        tmp.flush()
        if size == 0:
            return _refusal(
                400,
                "Empty request body: send the audio file's bytes as the body "
                "(Content-Type: audio/wav or application/octet-stream)",
                request_id,
            )
        try:
            channels = await asyncio.to_thread(_decode, Path(tmp.name), options)
        except AudioDecodeError as exc:
            reason = str(exc).replace(tmp.name, "the uploaded audio")
            return _refusal(400, f"Bad Request: failed to process audio: {reason}", request_id)
    created = datetime.now(UTC)
    prompt = (", ".join(options.keyterms) + ".") if options.keyterms else ""
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
        return _refusal(500, "The speech model failed on this file; try again", request_id)
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
    duration_ms = max((len(c) for c in channels), default=0) * 1000 // TARGET_RATE
    await _remember(state, principal, request_id, config, turns, duration_ms / 1000)
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
        return _refusal(
            400,
            "Transcribing from a URL is not supported: this server does not fetch media from "
            "the network; send the file's bytes as the request body instead (transcribe_file)",
            request_id,
        )
    return _refusal(
        400,
        'A JSON body must be {"url": "..."}; to transcribe a file send its bytes as the body',
        request_id,
    )


def _decode(path: Path, options: DeepgramOptions) -> list[np.ndarray]:
    """The body as float32 16 kHz arrays: one per channel with multichannel, else one mix."""
    if options.encoding is None:
        if options.multichannel:
            return list(decode_file_channels(path))
        return [decode_file(path)]
    data = path.read_bytes()
    width = 2 if options.encoding == "pcm_s16le" else 1
    frame = width * options.channels
    data = data[: len(data) - len(data) % frame]
    if not data:
        raise AudioDecodeError(f"shorter than one {options.channels}-channel sample")
    samples = deinterleave(decode_pcm(data, options.encoding), options.channels)
    rate = options.sample_rate or TARGET_RATE
    if not options.multichannel:
        samples = samples.mean(axis=0, keepdims=True, dtype=np.float32)
    return [resample(channel, rate, TARGET_RATE) for channel in samples]


async def _remember(
    state: ServerState,
    principal: Principal,
    request_id: str,
    config: SessionConfig,
    channels: list[list[TurnUpdate]],
    audio_s: float,
) -> None:
    """Keep the transcript as a stored session (its id is the request_id) and meter the audio.
    Storage trouble is logged; the caller still gets the transcript."""
    store = state.store
    try:
        await store.start_session(
            request_id,
            principal.key_id,
            "deepgram-prerecorded",
            {"audio": {"channels": len(channels)}, "turn": _jsonable(config.turn)},
            None,
        )
        for turns in channels:
            for turn in turns:
                await store.add_turn(request_id, TurnRecord.from_update(turn))
        await store.end_session(request_id, "terminated", audio_s)
        await store.add_usage(principal.key_id, audio_s)
    except Exception:
        log.exception("storing pre-recorded transcript %s failed", request_id)
    state.metrics.audio_seconds.labels("deepgram-prerecorded").inc(audio_s)


def _jsonable(turn: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in turn.items()}


# ---------------------------------------------------------------- temporary tokens


@router.post("/v1/auth/grant")
async def auth_grant(request: Request) -> JSONResponse:
    """A temporary token for `Authorization: Bearer` (Deepgram's `access_token`), single use."""
    try:
        principal = await require_key(request)
    except HTTPException as exc:
        return _refusal(exc.status_code, str(exc.detail), str(uuid.uuid4()))
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
                return _refusal(
                    400,
                    f'Expected {{"ttl_seconds": N}}, N in seconds from {low} to {high}',
                    str(uuid.uuid4()),
                )
            ttl = round(value)
    state: ServerState = request.app.state.streamscribe
    if principal.key is None:  # open mode: any token opens a session, none is stored
        token = "tk_open_" + uuid.uuid4().hex
    else:
        token = await state.store.create_token(principal.key.id, ttl, GRANT_SESSION_S)
    return JSONResponse({"access_token": token, "expires_in": float(ttl)})

"""Deepgram live route `/v1/listen` (WebSocket).

The live route authenticates (`Authorization: Token KEY` or `Bearer TOKEN`, or a browser's
`Sec-WebSocket-Protocol: token, KEY`), reads the options and checks admission and the model
before the upgrade, refusing with Deepgram's HTTP status and JSON body; then it hands the socket
to the shared live-stream loop. The wire is `protocols/deepgram*.py`; pre-recorded requests on
the same path and temporary tokens are `deepgram_http.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket

from streamscribe.errors import ProtocolError
from streamscribe.events import AudioFormat, ErrorKind
from streamscribe.protocols import deepgram
from streamscribe.protocols.common import Outgoing, loads_json
from streamscribe.protocols.deepgram_options import (
    NO_AUDIO_TIMEOUT_S,
    DeepgramOptions,
    http_error,
    session_config,
)
from streamscribe.server.admission import check_admission, session_scheduler
from streamscribe.server.auth import authenticate_stream as authenticate
from streamscribe.server.state import ServerState
from streamscribe.server.stream.loop import run_session
from streamscribe.server.stream.wire import deny, refuse

router = APIRouter()

MAX_HELD_MESSAGES = 64  # control messages before a WAV stream's first audio frame


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
    header = exc.reason.encode("ascii", "backslashreplace").decode("ascii")[:200]
    await deny(ws, state.metrics, status, body, {"dg-error": header})


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
    await refuse(ws, state.metrics, outgoing)


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

"""The session loop, written once for every dialect: receive, feed, render, send, finish.

A route authenticates, picks a dialect (a sans-I/O protocol object) and hands the socket here.
Receiving and sending run as two tasks joined by the runner's ordered event queue, so a turn is
always sent before the Termination behind it. However a session ends (Terminate, a protocol
error, an inactivity or duration limit, the client vanishing, a server fault), the turns in flight
are flushed first and every final turn is written to the transcript log as it is produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import asdict
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from streamscribe.audio.converter import PcmConverter
from streamscribe.engine.runner import SessionRunner
from streamscribe.engine.session import TurnSettings
from streamscribe.errors import ProtocolError
from streamscribe.events import (
    Audio,
    Command,
    EndReason,
    Error,
    ErrorKind,
    Event,
    RawAudio,
    SessionConfig,
    SessionEnded,
    SessionStarted,
    Terminate,
    TurnUpdate,
)
from streamscribe.protocols.common import Close, Outgoing
from streamscribe.server.state import LiveSession, ServerState

log = logging.getLogger(__name__)

FINISH_TIMEOUT_S = 60.0
BACKPRESSURE_POLL_S = 0.02


class Dialect(Protocol):
    def receive_bytes(self, data: bytes) -> list[Command]: ...
    def receive_text(self, text: str) -> list[Command]: ...
    def render(self, event: Event) -> list[Outgoing]: ...
    def error(self, exc: ProtocolError) -> list[Outgoing]: ...


def turn_settings(state: ServerState, config: SessionConfig) -> TurnSettings:
    s = state.settings
    base = TurnSettings(
        partial_interval_ms=s.partial_interval_ms,
        final_beam_size=s.final_beam_size,
        vad_threshold=s.vad_threshold,
    )
    return base.updated(dict(config.turn))


class _Ending(Exception):
    def __init__(self, reason: EndReason, error: ProtocolError | None = None) -> None:
        self.reason = reason
        self.error = error


async def run_session(
    ws: WebSocket,
    dialect: Dialect,
    config: SessionConfig,
    state: ServerState,
    protocol_name: str,
) -> SessionEnded:
    """Serve one accepted WebSocket until the session ends; return how it ended."""
    session_id = str(uuid.uuid4())
    started = time.monotonic()
    fmt = config.audio
    runner = SessionRunner(
        state.scheduler, turn_settings(state, config), channels=fmt.channels, key=session_id
    )
    converter = PcmConverter(fmt.encoding, fmt.sample_rate, fmt.channels)
    state.sessions[session_id] = LiveSession(session_id, protocol_name, runner)
    state.sessions_total += 1
    state.transcripts.open(session_id, protocol_name, _jsonable(config))
    max_s = min(config.max_session_s or 1e12, state.settings.max_session_seconds)
    expires_at = int(time.time() + max_s)
    sender = _Sender(ws, dialect, state, session_id)
    sender_task = asyncio.create_task(sender.run(runner.events))
    runner.events.put_nowait(SessionStarted(session_id, expires_at))

    reason = EndReason.TERMINATED
    error: ProtocolError | None = None
    try:
        await _receive_loop(ws, dialect, runner, converter, config, state, started, max_s, sender)
    except _Ending as end:
        reason, error = end.reason, end.error
    except Exception:  # a server fault ends this session only
        log.exception("session %s failed", session_id)
        reason = EndReason.ERROR
        error = ProtocolError(ErrorKind.INTERNAL, "Session Cancelled: An error occurred")

    # flush every turn in flight, whatever the ending (the client may be gone: turns are kept)
    try:
        await asyncio.wait_for(runner.finish(), FINISH_TIMEOUT_S)
    except TimeoutError:
        log.error("session %s: flushing the last turn timed out", session_id)
        await runner.cancel()
    if runner.failed is not None and error is None:
        reason = EndReason.ERROR
    ended = SessionEnded(
        audio_ms=converter.audio_ms,
        session_ms=int((time.monotonic() - started) * 1000),
        reason=reason,
    )
    if error is not None:
        runner.events.put_nowait(Error(error.kind, error.reason))
        sender.pending_error = error
    elif runner.failed is None:
        runner.events.put_nowait(ended)
    runner.events.put_nowait(None)  # type: ignore[arg-type]  # sentinel: sender stops
    with contextlib.suppress(Exception):
        await asyncio.wait_for(sender_task, 10)
    await sender.close_if_open()
    state.transcripts.close(session_id, ended)
    state.sessions.pop(session_id, None)
    log.info(
        "session %s ended (%s): %.1f s audio, %d turns",
        session_id,
        reason,
        ended.audio_ms / 1000,
        sender.final_turns,
    )
    return ended


async def _receive_loop(
    ws: WebSocket,
    dialect: Dialect,
    runner: SessionRunner,
    converter: PcmConverter,
    config: SessionConfig,
    state: ServerState,
    started: float,
    max_s: float,
    sender: _Sender,
) -> None:
    idle_limit = config.inactivity_timeout_s or state.settings.idle_timeout_seconds
    last_activity = time.monotonic()
    while True:
        now = time.monotonic()
        until_idle = idle_limit - (now - last_activity)
        until_expiry = max_s - (now - started)
        if until_expiry <= 0:
            raise _Ending(
                EndReason.EXPIRED,
                ProtocolError(
                    ErrorKind.EXPIRED, "Session Expired: Maximum session duration exceeded"
                ),
            )
        if until_idle <= 0:
            raise _Ending(
                EndReason.INACTIVITY,
                ProtocolError(
                    ErrorKind.TIMEOUT,
                    f"Session idle for too long: no audio or KeepAlive for {idle_limit:.0f} s",
                ),
            )
        if sender.closed:
            raise _Ending(EndReason.ERROR if sender.failed else EndReason.CLIENT_GONE)
        try:
            message = await asyncio.wait_for(ws.receive(), min(until_idle, until_expiry, 1.0))
        except TimeoutError:
            continue
        except (WebSocketDisconnect, RuntimeError):
            raise _Ending(EndReason.CLIENT_GONE) from None
        if message["type"] == "websocket.disconnect":
            raise _Ending(EndReason.CLIENT_GONE)
        last_activity = time.monotonic()
        try:
            if message.get("bytes") is not None:
                commands = dialect.receive_bytes(message["bytes"])
            elif message.get("text") is not None:
                commands = dialect.receive_text(message["text"])
            else:
                commands = []
        except ProtocolError as exc:
            raise _Ending(EndReason.ERROR, exc) from None
        for command in commands:
            if isinstance(command, Terminate):
                return
            if isinstance(command, RawAudio):
                try:
                    channels = converter.convert(command.data)
                except ValueError as exc:
                    raise _Ending(
                        EndReason.ERROR, ProtocolError(ErrorKind.BAD_AUDIO, f"Invalid audio: {exc}")
                    ) from None
                for channel, samples in enumerate(channels):
                    await runner.handle(Audio(samples, channel))
            else:
                await runner.handle(command)
        if runner.failed is not None:
            raise _Ending(EndReason.ERROR)
        # back-pressure: a client sending faster than we decode waits here, not in a queue
        while runner.lag_ms > state.settings.max_lag_ms and runner.failed is None:
            await asyncio.sleep(BACKPRESSURE_POLL_S)
        state.max_lag_seen_ms = max(state.max_lag_seen_ms, runner.lag_ms)


class _Sender:
    """Renders engine events in order, sends them, and logs final turns as they pass."""

    def __init__(self, ws: WebSocket, dialect: Dialect, state: ServerState, session_id: str):
        self.ws = ws
        self.dialect = dialect
        self.state = state
        self.session_id = session_id
        self.closed = False
        self.failed = False
        self.final_turns = 0
        self.pending_error: ProtocolError | None = None

    async def run(self, events: asyncio.Queue) -> None:
        while True:
            event = await events.get()
            if event is None:
                return
            if isinstance(event, TurnUpdate) and event.end_of_turn and not event.formatted:
                self.final_turns += 1
                self.state.transcripts.turn(self.session_id, event)
            elif isinstance(event, TurnUpdate) and event.formatted:
                self.state.transcripts.turn(self.session_id, event)
            if isinstance(event, Error):
                self.failed = True
            if self.closed:
                continue  # the client is gone: keep logging, stop sending
            await self._send(self.dialect.render(event))

    async def _send(self, outgoing: list[Outgoing]) -> None:
        for out in outgoing:
            try:
                if isinstance(out, Close):
                    self.closed = True
                    await self.ws.close(out.code, out.reason)
                    return
                await self.ws.send_text(out.text)
            except Exception:  # the peer went away mid-send
                self.closed = True
                return

    async def close_if_open(self) -> None:
        if self.closed or self.ws.application_state != WebSocketState.CONNECTED:
            return
        if self.pending_error is not None:
            await self._send(self.dialect.error(self.pending_error))
        with contextlib.suppress(Exception):
            await self.ws.close(1000)
        self.closed = True


def _jsonable(config: SessionConfig) -> dict:
    data = asdict(config)
    data["turn"] = {k: list(v) if isinstance(v, tuple) else v for k, v in config.turn.items()}
    return data

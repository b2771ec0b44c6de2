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

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from streamscribe.audio.converter import PcmConverter
from streamscribe.audio.wav import WavWriter
from streamscribe.engine.enrichment import TurnEnricher
from streamscribe.engine.runner import SessionRunner
from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.engine.session import TurnSettings
from streamscribe.errors import ModelNotFoundError, ProtocolError
from streamscribe.events import (
    Audio,
    AudioProgress,
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
from streamscribe.logs import session_context
from streamscribe.protocols.common import Close, Outgoing
from streamscribe.server.auth import Principal
from streamscribe.server.model_choice import choose_model
from streamscribe.server.state import LiveSession, ServerState
from streamscribe.store import TurnRecord

log = logging.getLogger(__name__)

FINISH_TIMEOUT_S = 60.0
SEND_TIMEOUT_S = 10.0  # a client that stops reading is treated as gone after this
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


def make_enricher(
    scheduler: DecodeScheduler,
    settings: TurnSettings,
    config: SessionConfig,
    session_id: str,
    speakers: list | None = None,
) -> TurnEnricher | None:
    """What each final turn gets after the fact: its translation, its speakers."""
    if not settings.translate and not speakers:
        return None
    return TurnEnricher(
        scheduler,
        session_id,
        config.audio.channels,
        translate=settings.translate,
        speakers=speakers,
        beam_size=settings.final_beam_size,
    )


async def check_admission(state: ServerState, principal: Principal) -> None:
    """Refuse a new session the server or the key has no room for (reason names the limit)."""
    if state.draining:
        raise ProtocolError(ErrorKind.BUSY, "Server shutting down: reconnect to another server")
    if state.at_capacity:
        raise ProtocolError(
            ErrorKind.BUSY, "Server busy: at session capacity; try again shortly or another server"
        )
    key = principal.key
    if key is None:
        return
    if key.max_streams is not None:
        live = sum(1 for s in state.sessions.values() if s.key_id == key.id and not s.ending)
        if live >= key.max_streams:
            raise ProtocolError(
                ErrorKind.LIMIT,
                f"Unauthorized Connection: Too many concurrent sessions "
                f"(key {key.name!r} allows {key.max_streams})",
            )
    if key.max_audio_hours_per_day is not None:
        used = await state.store.audio_seconds_today(key.id)
        if used >= key.max_audio_hours_per_day * 3600:
            raise ProtocolError(
                ErrorKind.LIMIT,
                f"Daily audio limit reached: key {key.name!r} allows "
                f"{key.max_audio_hours_per_day:g} h per day (UTC)",
            )


def session_limit_s(state: ServerState, principal: Principal, config: SessionConfig) -> float:
    limits = [
        state.settings.max_session_seconds,
        config.max_session_s,
        principal.max_session_seconds,
    ]
    if principal.key is not None:
        limits.append(principal.key.max_session_seconds)
    return float(min(x for x in limits if x))


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
    principal: Principal | None = None,
) -> SessionEnded:
    """Serve one accepted WebSocket until the session ends; return how it ended."""
    session_id = str(uuid.uuid4())
    with session_context(session_id):
        try:
            scheduler = await session_scheduler(state, config)
            speakers = await session_speakers(state, config)
        except ProtocolError as exc:
            await _Sender(ws, dialect, state, session_id)._send(dialect.error(exc))
            return SessionEnded(0, 0, EndReason.ERROR)
        return await _run(
            ws, dialect, config, state, protocol_name, principal, session_id, scheduler, speakers
        )


async def session_speakers(state: ServerState, config: SessionConfig) -> list | None:
    """One speaker tracker per channel when the session asked for speaker labels.

    The speaker encoder loads here, at connect time, so a missing `speakers` extra is an error
    naming the fix before any audio is sent, not a silent session without labels."""
    if not config.speaker_labels:
        return None
    from streamscribe.errors import SpeakerModelUnavailableError
    from streamscribe.speakers import SessionSpeakers

    try:
        return [
            await asyncio.to_thread(
                SessionSpeakers, config.max_speakers, device=state.settings.device
            )
            for _ in range(config.audio.channels)
        ]
    except SpeakerModelUnavailableError as exc:
        raise ProtocolError(ErrorKind.BAD_REQUEST, str(exc)) from None


async def session_scheduler(state: ServerState, config: SessionConfig) -> DecodeScheduler:
    """The scheduler of the model this session needs (loaded on first use).

    Raises ProtocolError naming the fix when no served model fits the session."""
    name = choose_model(state.settings, config, state.transcriber.multilingual)
    try:
        return await state.scheduler_for(name)
    except ModelNotFoundError as exc:
        raise ProtocolError(ErrorKind.BAD_REQUEST, f"Model {name!r} unavailable: {exc}") from None


async def _run(
    ws: WebSocket,
    dialect: Dialect,
    config: SessionConfig,
    state: ServerState,
    protocol_name: str,
    principal: Principal | None,
    session_id: str,
    scheduler: DecodeScheduler,
    speakers: list | None = None,
) -> SessionEnded:
    principal = principal or Principal(None)
    started = time.monotonic()
    fmt = config.audio
    settings = turn_settings(state, config)
    runner = SessionRunner(
        scheduler,
        settings,
        channels=fmt.channels,
        key=session_id,
        enricher=make_enricher(scheduler, settings, config, session_id, speakers),
    )
    converter = PcmConverter(fmt.encoding, fmt.sample_rate, fmt.channels)
    recorder = _open_recorder(state, principal, config, session_id)
    state.sessions[session_id] = LiveSession(session_id, protocol_name, runner, principal.key_id)
    state.sessions_total += 1
    metrics = state.metrics
    metrics.sessions_total.labels(protocol_name).inc()
    metrics.sessions_active.labels(protocol_name).inc()
    runner.on_decode = lambda kind, s: metrics.latency.labels(kind).observe(s)
    await _store(
        state.store.start_session(
            session_id,
            principal.key_id,
            protocol_name,
            _jsonable(config),
            str(recorder.path) if recorder else None,
        )
    )
    max_s = session_limit_s(state, principal, config)
    expires_at = int(time.time() + max_s)
    sender = _Sender(ws, dialect, state, session_id)
    sender_task = asyncio.create_task(sender.run(runner.events))
    runner.events.put_nowait(SessionStarted(session_id, expires_at))

    reason = EndReason.TERMINATED
    error: ProtocolError | None = None
    try:
        await _receive_loop(
            ws, dialect, runner, converter, recorder, config, state, started, max_s, sender
        )
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
    # the books are closed before the client hears Termination: a client that reconnects at
    # once is not counted twice, and one that reads its session back finds it ended
    live = state.sessions.get(session_id)
    if live is not None:
        live.ending = True
    audio_s = ended.audio_ms / 1000
    await _store(state.store.end_session(session_id, str(reason), audio_s))
    await _store(state.store.add_usage(principal.key_id, audio_s))
    if error is not None:
        runner.events.put_nowait(Error(error.kind, error.reason, error.code))
        sender.pending_error = error
    elif runner.failed is None:
        runner.events.put_nowait(ended)
    runner.events.put_nowait(None)  # type: ignore[arg-type]  # sentinel: sender stops
    with contextlib.suppress(Exception):
        await asyncio.wait_for(sender_task, 10)
    await sender.close_if_open()
    if recorder is not None:
        recorder.close()
    state.sessions.pop(session_id, None)
    metrics.sessions_active.labels(protocol_name).dec()
    metrics.session_ends.labels(str(reason)).inc()
    metrics.audio_seconds.labels(protocol_name).inc(audio_s)
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
    recorder: WavWriter | None,
    config: SessionConfig,
    state: ServerState,
    started: float,
    max_s: float,
    sender: _Sender,
) -> None:
    idle_limit = config.inactivity_timeout_s or state.settings.idle_timeout_seconds
    last_activity = time.monotonic()
    progress_ms = config.progress_interval_ms or 0
    next_progress_ms = progress_ms
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
        if state.draining:
            raise _Ending(EndReason.SHUTDOWN)
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
        _queue_replies(dialect, runner)
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
                if recorder is not None:
                    _record(recorder, channels)
                for channel, samples in enumerate(channels):
                    await runner.handle(Audio(samples, channel))
                if progress_ms and converter.audio_ms >= next_progress_ms:
                    runner.emit(AudioProgress(converter.audio_ms))
                    next_progress_ms = converter.audio_ms + progress_ms
            else:
                await runner.handle(command)
        if runner.failed is not None:
            raise _Ending(EndReason.ERROR)
        # back-pressure: a client sending faster than we decode waits here, not in a queue
        while runner.lag_ms > state.settings.max_lag_ms and runner.failed is None:
            await asyncio.sleep(BACKPRESSURE_POLL_S)
        state.max_lag_seen_ms = max(state.max_lag_seen_ms, runner.lag_ms)


def _queue_replies(dialect: Dialect, runner: SessionRunner) -> None:
    """Queue a dialect's own answers to the message just received, ahead of the engine events
    that message causes (OpenAI Realtime answers session.update, commit, clear and mistakes at
    once). The sender hands them back to `dialect.render` in order with everything else.
    A dialect opts in by having `take_replies() -> list`; the loop never looks inside."""
    take = getattr(dialect, "take_replies", None)
    if take is not None:
        for reply in take():
            runner.emit(reply)  # behind every event emitted before it, enriched turns included


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
            if isinstance(event, TurnUpdate) and event.end_of_turn and event.words:
                # written the moment it is final (the formatted re-send replaces the text)
                self.final_turns += not event.formatted
                await _store(
                    self.state.store.add_turn(self.session_id, TurnRecord.from_update(event))
                )
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
                    if out.code != 1000:
                        self.state.metrics.errors.labels(str(out.code)).inc()
                    await asyncio.wait_for(self.ws.close(out.code, out.reason), SEND_TIMEOUT_S)
                    return
                await asyncio.wait_for(self.ws.send_text(out.text), SEND_TIMEOUT_S)
            except Exception:  # the peer went away mid-send
                self.closed = True
                return

    async def close_if_open(self) -> None:
        if self.closed or self.ws.application_state != WebSocketState.CONNECTED:
            return
        if self.pending_error is not None:
            await self._send(self.dialect.error(self.pending_error))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(1000), SEND_TIMEOUT_S)
        self.closed = True


async def _store(call) -> None:
    """Storage trouble is logged, never allowed to end a live session."""
    try:
        await call
    except Exception:
        log.exception("store write failed")


def _open_recorder(
    state: ServerState, principal: Principal, config: SessionConfig, session_id: str
) -> WavWriter | None:
    wanted = state.settings.record_audio and config.record
    if principal.key is not None:
        wanted = wanted and principal.key.record_audio
    if not wanted:
        return None
    folder = (state.settings.data_dir / "recordings").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return WavWriter(folder / f"{session_id}.wav", 16000, config.audio.channels)


def _record(recorder: WavWriter, channels: list) -> None:
    try:
        n = min(len(c) for c in channels)
        recorder.write(
            channels[0][:n] if len(channels) == 1 else np.stack([c[:n] for c in channels])
        )
    except Exception:
        log.exception("recording write failed")


def _jsonable(config: SessionConfig) -> dict:
    data = asdict(config)
    data["turn"] = {k: list(v) if isinstance(v, tuple) else v for k, v in config.turn.items()}
    return data

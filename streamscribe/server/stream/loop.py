"""The live-stream loop, written once for every dialect: receive, dialect, runner, dialect, send.

A route authenticates, picks a dialect (a sans-I/O protocol object) and hands the socket here.
Receiving and sending run as two tasks joined by this loop's own ordered outbox: the runner
delivers engine events into it (a final turn still being enriched holds back what follows), the
dialect's replies and the audio heard so far go in behind the events before them, and the loop
adds the session's start, its end and the error that ended it. So a turn is always sent before
the Termination behind it. However a session ends (Terminate, a protocol error, an inactivity or
duration limit, the client vanishing, a server fault), the turns in flight are flushed first and
every final turn is written to the store as it is produced. The server's services for live
streams (books, registry, recording, back-pressure) are `stream/host.py`; sending is `wire.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import replace
from typing import Protocol

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from streamscribe.audio.converter import PcmConverter
from streamscribe.audio.wav import WavWriter
from streamscribe.engine.runner import SessionRunner
from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.errors import PeerError, ProtocolError, ServerRefusal
from streamscribe.events import (
    Audio,
    AudioFormat,
    AudioFormatSettled,
    AudioProgress,
    Command,
    EndReason,
    Error,
    ErrorKind,
    RawAudio,
    SessionConfig,
    SessionEnded,
    SessionStarted,
    Terminate,
    TurnUpdate,
)
from streamscribe.logs import session_context
from streamscribe.protocols.common import Outgoing
from streamscribe.server.admission import (
    quota_refusal,
    session_limit_s,
    session_scheduler,
    session_speakers,
)
from streamscribe.server.auth import Principal
from streamscribe.server.state import ServerState
from streamscribe.server.stream.host import StreamHost
from streamscribe.server.stream.wire import Wire
from streamscribe.server.transcripts import config_json

log = logging.getLogger(__name__)

FINISH_TIMEOUT_S = 60.0  # flushing the last turns; past this the decodes are cancelled
SENDER_DRAIN_S = 10.0  # the sender's time to send what is left after the session ended
POLL_S = 1.0  # how often a quiet socket is checked for expiry, idleness and draining


class Dialect(Protocol):
    """What the loop needs of a sans-I/O dialect (`protocols/`)."""

    def receive_bytes(self, data: bytes) -> list[Command]: ...
    def receive_text(self, text: str) -> list[Command]: ...
    def take_replies(self) -> list[object]: ...
    def render(self, event: object) -> list[Outgoing]: ...
    def error(self, exc: ProtocolError) -> list[Outgoing]: ...


class _Ending(Exception):
    def __init__(self, reason: EndReason, error: ProtocolError | None = None) -> None:
        self.reason = reason
        self.error = error


_DONE = object()  # the outbox's last item: the sender stops


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
            await Wire(ws, state.metrics).send(dialect.error(exc))
            return SessionEnded(0, 0, EndReason.ERROR)
        stream = LiveStream(
            ws, dialect, config, state, protocol_name, principal or Principal(None), session_id
        )
        return await stream.run(scheduler, speakers)


class LiveStream:
    """One client socket's session, from its first frame to its close."""

    def __init__(
        self,
        ws: WebSocket,
        dialect: Dialect,
        config: SessionConfig,
        state: ServerState,
        protocol: str,
        principal: Principal,
        session_id: str,
    ) -> None:
        self.ws = ws
        self.dialect = dialect
        self.config = config
        self.state = state
        self.host = StreamHost(state)
        self.wire = Wire(ws, state.metrics)
        self.protocol = protocol
        self.principal = principal
        self.session_id = session_id
        self.outbox: asyncio.Queue[object] = asyncio.Queue()
        self.started = time.monotonic()
        self.final_turns = 0
        self.client_failed = False  # an Error event was sent: the session is over for the client
        self.error_sent = False
        self.pacer = self.host.pacer()
        self.paced_ms = 0.0  # audio received since the last pacing check
        self.unfed_ms = 0  # the frame refused for the quota
        self.first_audio_at: float | None = None  # when the first sample's frame came

    # ------------------------------------------------------------------ the whole session
    async def run(self, scheduler: DecodeScheduler, speakers: list | None) -> SessionEnded:
        fmt = self.config.audio
        self.scheduler = scheduler
        self.runner = self._runner(fmt, speakers)
        self.converter = PcmConverter(fmt.encoding, fmt.sample_rate, fmt.channels)
        path = self.host.recording_path(self.principal, self.session_id, self.config.record)
        self.recorder = WavWriter(path, 16000, fmt.channels) if path else None
        await self.host.begin(
            self.session_id, self.principal, self.protocol, config_json(self.config), path
        )
        max_s = session_limit_s(self.state, self.principal, self.config)
        sender = asyncio.create_task(self._send_loop())
        self.outbox.put_nowait(SessionStarted(self.session_id, int(time.time() + max_s)))

        reason = EndReason.TERMINATED
        error: ProtocolError | None = None
        try:
            await self._receive_loop(max_s)
        except _Ending as end:
            reason, error = end.reason, end.error
        except Exception:  # a server fault ends this session only
            log.exception("session %s failed", self.session_id)
            reason = EndReason.ERROR
            error = ServerRefusal(ErrorKind.INTERNAL, "Session Cancelled: An error occurred")

        # flush every turn in flight, whatever the ending (the client may be gone: turns are kept)
        runner = self.runner
        try:
            await asyncio.wait_for(runner.finish(), FINISH_TIMEOUT_S)
        except TimeoutError:
            log.error("session %s: flushing the last turn timed out", self.session_id)
            await runner.cancel()
        if runner.failed is not None and error is None:
            reason = EndReason.ERROR
        ended = SessionEnded(
            audio_ms=max(0, self.converter.audio_ms - self.unfed_ms),
            session_ms=int((time.monotonic() - self.started) * 1000),
            reason=reason,
        )
        # the books are closed before the client hears Termination: a client that reconnects at
        # once is not counted twice, and one that reads its session back finds it ended
        self.host.ending(self.session_id)
        audio_s = ended.audio_ms / 1000
        await self.host.end(self.session_id, self.principal, str(reason), audio_s)
        if error is not None:
            self.outbox.put_nowait(error)
        elif runner.failed is None:
            self.outbox.put_nowait(ended)
        self.outbox.put_nowait(_DONE)
        try:
            await asyncio.wait_for(sender, SENDER_DRAIN_S)
        except TimeoutError:
            log.warning("session %s: the client did not take its last messages", self.session_id)
        except Exception:  # a bug of ours (e.g. a LocalProtocolError): say so, end cleanly
            log.exception("session %s: sending failed", self.session_id)
        if error is not None and not self.error_sent and self.wire.open:
            await self.wire.send(self.dialect.error(error))
        await self.wire.close(1000)
        if self.recorder is not None:
            self.recorder.close()
        self.host.unregister(self.session_id)
        self.host.ended(self.protocol, str(reason), audio_s)
        log.info(
            "session %s ended (%s): %.1f s audio, %d turns",
            self.session_id,
            reason,
            audio_s,
            self.final_turns,
        )
        return ended

    def _runner(self, fmt: AudioFormat, speakers: list | None) -> SessionRunner:
        runner = self.host.runner(
            self.scheduler,
            self.config,
            self.session_id,
            channels=fmt.channels,
            speakers=speakers,
            deliver=self.outbox.put_nowait,
            tenant=self.principal.key_id,
        )
        self.live = self.host.register(
            self.session_id, self.protocol, runner, self.principal.key_id, socket=True
        )
        return runner

    # ------------------------------------------------------------------ receiving
    async def _receive_loop(self, max_s: float) -> None:
        state = self.state
        idle_after_audio = self.config.inactivity_timeout_s or state.settings.idle_timeout_seconds
        # a session that never sent audio holds a slot for less (issue 18)
        idle_before_audio = min(idle_after_audio, state.settings.idle_timeout_before_audio_seconds)
        last_activity = time.monotonic()
        progress_ms = self.config.progress_interval_ms or 0
        self.next_progress_ms = progress_ms
        while True:
            now = time.monotonic()
            idle_limit = idle_after_audio if self.live.heard_audio else idle_before_audio
            until_idle = idle_limit - (now - last_activity)
            until_expiry = max_s - (now - self.started)
            if until_expiry <= 0:
                raise _Ending(
                    EndReason.EXPIRED,
                    ServerRefusal(
                        ErrorKind.EXPIRED, "Session Expired: Maximum session duration exceeded"
                    ),
                )
            if until_idle <= 0:
                why = (
                    f"no audio or KeepAlive for {idle_limit:.0f} s"
                    if self.live.heard_audio
                    else f"no audio sent, nor any message, for {idle_limit:.0f} s"
                )
                raise _Ending(
                    EndReason.INACTIVITY,
                    ServerRefusal(ErrorKind.TIMEOUT, f"Session idle for too long: {why}"),
                )
            if self.live.evicted is not None:  # ended to make room for a new session
                raise _Ending(EndReason.INACTIVITY, self.live.evicted)
            if self.wire.closed:
                raise _Ending(EndReason.ERROR if self.client_failed else EndReason.CLIENT_GONE)
            if state.draining:
                raise _Ending(EndReason.SHUTDOWN)
            try:
                message = await asyncio.wait_for(
                    self.ws.receive(), min(until_idle, until_expiry, POLL_S)
                )
            except TimeoutError:
                continue
            except (WebSocketDisconnect, RuntimeError):
                raise _Ending(EndReason.CLIENT_GONE) from None
            if message["type"] == "websocket.disconnect":
                raise _Ending(EndReason.CLIENT_GONE)
            last_activity = self.live.last_message = time.monotonic()
            try:
                if message.get("bytes") is not None:
                    commands = self.dialect.receive_bytes(message["bytes"])
                elif message.get("text") is not None:
                    commands = self.dialect.receive_text(message["text"])
                else:
                    commands = []
            except ProtocolError as exc:
                raise _Ending(EndReason.ERROR, exc) from None
            # the dialect's own answers to this message go out behind every event before them
            for reply in self.dialect.take_replies():
                self.runner.emit(reply)
            for command in commands:
                if isinstance(command, Terminate):
                    return
                await self._command(command, progress_ms)
            if self.runner.failed is not None:
                raise _Ending(EndReason.ERROR)
            await self.host.hold_back(self._lag_ms, self._failed, self._ahead_ms)
            if self.paced_ms:
                ms, self.paced_ms = self.paced_ms, 0
                await self.host.pace(self.pacer, self.principal.key_id, ms, self._stopping)

    def _lag_ms(self) -> int:
        return self.runner.lag_ms

    def _failed(self) -> bool:
        return self.runner.failed is not None

    def _ahead_ms(self) -> float:
        """How far the audio received runs ahead of the wall clock since its first sample."""
        if self.first_audio_at is None:
            return 0.0
        return self.converter.audio_ms - (time.monotonic() - self.first_audio_at) * 1000

    def _stopping(self) -> bool:
        return self.state.draining or self.wire.closed or self.live.evicted is not None

    async def _command(self, command: Command, progress_ms: int) -> None:
        if isinstance(command, AudioFormatSettled):
            await self._settle(command.audio)
        elif isinstance(command, RawAudio):
            try:
                channels = self.converter.convert(command.data)
            except ValueError as exc:
                raise _Ending(
                    EndReason.ERROR, PeerError(ErrorKind.BAD_AUDIO, f"Invalid audio: {exc}")
                ) from None
            added_ms = 1000 * len(channels[0]) / 16000 if channels else 0.0
            # the daily quota is metered as the audio comes, shared by the key's live sessions
            if refusal := quota_refusal(self.state, self.principal, added_ms / 1000):
                self.unfed_ms = round(added_ms)  # refused, so neither decoded nor metered
                raise _Ending(EndReason.ERROR, refusal)
            if added_ms and self.first_audio_at is None:
                self.live.heard_audio = True
                self.first_audio_at = time.monotonic() - added_ms / 1000
            self.paced_ms += added_ms
            if self.recorder is not None:
                _record(self.recorder, channels)
            for channel, samples in enumerate(channels):
                await self.runner.handle(Audio(samples, channel))
            audio_ms = self.converter.audio_ms
            if progress_ms and audio_ms >= self.next_progress_ms:
                self.runner.emit(AudioProgress(audio_ms))
                self.next_progress_ms = audio_ms + progress_ms
        else:
            await self.runner.handle(command)

    async def _settle(self, fmt: AudioFormat) -> None:
        """The dialect learned the audio format after connect (before any audio)."""
        if self.converter.audio_ms:
            raise _Ending(
                EndReason.ERROR,
                PeerError(
                    ErrorKind.BAD_REQUEST, "The audio format cannot change once audio has started"
                ),
            )
        self.converter = PcmConverter(fmt.encoding, fmt.sample_rate, fmt.channels)
        if fmt.channels == len(self.runner.sessions):
            return
        # another channel count: a fresh runner (and recording) before the first sample
        self.config = replace(self.config, audio=fmt)
        try:
            speakers = await session_speakers(self.state, self.config)
        except ProtocolError as exc:
            raise _Ending(EndReason.ERROR, exc) from None
        self.runner = self._runner(fmt, speakers)
        if self.recorder is not None:
            path = self.recorder.path
            self.recorder.close()
            self.recorder = WavWriter(path, 16000, fmt.channels)

    # ------------------------------------------------------------------ sending
    async def _send_loop(self) -> None:
        """Render the outbox in order and send it; final turns are stored as they pass."""
        while (item := await self.outbox.get()) is not _DONE:
            if isinstance(item, TurnUpdate) and item.end_of_turn and item.words:
                self.final_turns += not item.formatted
                await self.host.store_turn(self.session_id, item)
            if isinstance(item, Error):
                self.client_failed = True
            if self.wire.closed:
                continue  # the client is gone: keep storing, stop sending
            if isinstance(item, ProtocolError):
                self.error_sent = True
                await self.wire.send(self.dialect.error(item))
            else:
                await self.wire.send(self.dialect.render(item))


def _record(recorder: WavWriter, channels: list[np.ndarray]) -> None:
    try:
        n = min(len(c) for c in channels)
        recorder.write(
            channels[0][:n] if len(channels) == 1 else np.stack([c[:n] for c in channels])
        )
    except Exception:
        log.exception("recording write failed")

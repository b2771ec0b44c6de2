"""A call's audio: the inbound ACS media socket, one engine stream per participant.

Why this exists: unlike the dialects served by the live-stream loop (`stream/loop.py`), a call is
not one client socket holding one session. Participants appear mid-call, each with its own stream
(unmixed audio), the transcripts leave on another socket (`push.py`), and transcription can be
stopped, started and switched to another language while the audio keeps coming. This module owns the
audio side: frames are parsed by `protocols.acs_media`, each participant's packets are placed on the
call clock (gaps filled, late packets dropped), converted to 16 kHz by its own `PcmConverter`, mixed
into the call's recording, and fed to that participant's `SessionRunner` on the shared scheduler. A
participant's runner covers one stretch of transcription (from start to stop, or to a model switch);
its turns are moved onto the call clock and numbered per call before the job stores and pushes them.
The media side knows its job only through `MediaOwner`, the little it needs of one (`job.py`
implements it). The books, registry, runners, back-pressure and recording paths are the ones every
live stream gets (`stream/host.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from typing import Any, Protocol

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from streamscribe.audio.converter import PcmConverter
from streamscribe.audio.wav import WavWriter
from streamscribe.engine.runner import SessionRunner
from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.errors import PeerError, ProtocolError, ServerRefusal
from streamscribe.events import (
    Audio,
    EndReason,
    Error,
    ErrorKind,
    SessionConfig,
    SpeechStarted,
    TurnUpdate,
    UpdateConfig,
)
from streamscribe.protocols.acs_media import (
    AcsMediaReader,
    CallClock,
    MediaFormat,
    MediaPacket,
    close_for,
)
from streamscribe.protocols.acs_transcription import MIXED_PARTICIPANT
from streamscribe.server.admission import quota_refusal
from streamscribe.server.auth import Principal
from streamscribe.server.state import ServerState
from streamscribe.server.stream.host import StreamHost
from streamscribe.server.stream.wire import Wire

log = logging.getLogger(__name__)

RATE = 16000
PROTOCOL = "acs"
FINISH_TIMEOUT_S = 60.0
RECORD_HOLD_S = 2.0  # the mixed recording waits this long for a participant running behind


class MediaOwner(Protocol):
    """What the media side needs of its call-transcription job."""

    id: str
    language: str

    @property
    def ended(self) -> bool: ...
    def stored_params(self) -> dict[str, Any]: ...
    async def deliver(self, update: TurnUpdate, participant: str, session_id: str) -> None: ...
    def speech_started(self, participant: str, at_ms: int) -> None: ...
    async def engine_failed(self, message: str) -> None: ...


def on_call_clock(
    update: TurnUpdate, base_ms: int, turn_order: int, channel: int, speaker: str
) -> TurnUpdate:
    """A participant stream's turn moved onto the call: call-clock times, call-level number."""
    words = tuple(
        dataclasses.replace(w, start_ms=w.start_ms + base_ms, end_ms=w.end_ms + base_ms)
        for w in update.words
    )
    return dataclasses.replace(
        update, words=words, turn_order=turn_order, channel=channel, speaker=speaker
    )


class CallRecorder:
    """The call's recording: every participant mixed into one mono 16 kHz WAV on the call clock.

    Audio is held `RECORD_HOLD_S` behind the furthest participant so one running a little late
    still lands in the mix; what arrives later than that is left out of the recording (it is
    still transcribed)."""

    def __init__(self, writer: WavWriter) -> None:
        self.writer = writer
        self.written = 0  # samples written to the file
        self._mix = np.zeros(0, dtype=np.float32)  # samples from `written` on

    def add(self, start_sample: int, samples: np.ndarray) -> None:
        end = start_sample + len(samples)
        if end <= self.written:
            return
        if start_sample < self.written:
            samples = samples[self.written - start_sample :]
            start_sample = self.written
        need = end - self.written
        if need > len(self._mix):
            self._mix = np.concatenate([self._mix, np.zeros(need - len(self._mix), np.float32)])
        at = start_sample - self.written
        self._mix[at : at + len(samples)] += samples
        ready = len(self._mix) - int(RECORD_HOLD_S * RATE)
        if ready >= RATE:
            self._write(ready)

    def _write(self, n: int) -> None:
        try:
            self.writer.write(np.clip(self._mix[:n], -1.0, 1.0))
        except Exception:
            log.exception("recording write failed")
        self._mix = self._mix[n:]
        self.written += n

    def close(self) -> None:
        if len(self._mix):
            self._write(len(self._mix))
        self.writer.close()


class ParticipantStream:
    """One participant's engine runner for one stretch of transcription."""

    def __init__(self, runner: SessionRunner, base_ms: int, live_id: str) -> None:
        self.runner = runner
        self.base_ms = base_ms
        self.live_id = live_id
        self.orders: dict[int, int] = {}  # the runner's turn_order -> the call's
        self.forwarder: asyncio.Task | None = None


class Participant:
    def __init__(self, raw_id: str, channel: int, fmt: MediaFormat) -> None:
        self.raw_id = raw_id
        self.channel = channel
        self.converter = PcmConverter(fmt.encoding, fmt.sample_rate, 1)
        self.stream: ParticipantStream | None = None
        self.next_order = 0
        self.packets = 0


class CallMedia:
    """The live audio of one call, and the engine streams transcribing it."""

    def __init__(
        self, job: MediaOwner, state: ServerState, principal: Principal, scheduler: DecodeScheduler
    ) -> None:
        self.job = job
        self.state = state
        self.host = StreamHost(state)
        self.principal = principal
        self.scheduler = scheduler
        self.session_id = str(uuid.uuid4())
        self.reader = AcsMediaReader()
        self.clock = CallClock()
        self.participants: dict[str, Participant] = {}
        self.recorder: CallRecorder | None = None
        self.started = time.monotonic()
        self.transcribing = False
        self._finishing: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        path = self.host.recording_path(self.principal, self.session_id)
        if path is not None:
            self.recorder = CallRecorder(WavWriter(path, RATE, 1))
        await self.host.begin(
            self.session_id, self.principal, PROTOCOL, self.job.stored_params(), path
        )
        # metered while it runs (the daily quota), as a socket session is
        self.state.call_audio[self.session_id] = (
            self.principal.key_id,
            lambda: self.clock.now_ms / 1000,
        )

    async def close(self, reason: EndReason) -> None:
        """Flush every stream, close the recording and the stored session."""
        await self.stop_transcribing()
        audio_s = self.clock.now_ms / 1000
        if self.recorder is not None:
            self.recorder.close()
        self.state.call_audio.pop(self.session_id, None)
        await self.host.end(self.session_id, self.principal, str(reason), audio_s)
        self.host.ended(PROTOCOL, str(reason), audio_s)

    # ------------------------------------------------------------------ audio
    async def receive(self, text: str | None, data: bytes | None) -> None:
        """One inbound frame; raises ProtocolError (with its close code) on bad input."""
        if data is not None:
            self.reader.receive_bytes(data)  # refused: ACS media frames are JSON text
        for item in self.reader.receive_text(text) if text is not None else []:
            if isinstance(item, MediaPacket):
                await self._packet(item)

    async def _packet(self, packet: MediaPacket) -> None:
        fmt = self.reader.format
        assert fmt is not None
        raw_id = packet.participant or MIXED_PARTICIPANT
        participant = self.participants.get(raw_id)
        if participant is None:
            participant = Participant(raw_id, len(self.participants), fmt)
            self.participants[raw_id] = participant
        participant.packets += 1
        place = self.clock.place(raw_id, packet.timestamp_ms, fmt.duration_ms(len(packet.data)))
        if place.dropped:
            return
        if refusal := quota_refusal(self.state, self.principal):
            raise refusal  # the key's daily audio is spent (this call's counted as it came)
        try:
            samples = participant.converter.convert(packet.data)[0]
        except ValueError as exc:
            raise PeerError(ErrorKind.BAD_AUDIO, f"Invalid audio: {exc}") from None
        if self.recorder is not None:
            self.recorder.add(round(place.start_ms * RATE / 1000), samples)
        if not self.transcribing:
            return
        gap = np.zeros(round(place.gap_ms * RATE / 1000), dtype=np.float32)
        stream = participant.stream
        if stream is None:
            stream = participant.stream = self._open_stream(participant, place.start_ms)
        elif len(gap):
            await stream.runner.handle(Audio(gap))
        await stream.runner.handle(Audio(samples))
        await self._backpressure()

    async def _backpressure(self) -> None:
        """A call sending faster than we decode waits here (the media socket stops reading)."""
        await self.host.hold_back(
            lambda: max((p.stream.runner.lag_ms for p in self._streaming()), default=0),
            lambda: any(p.stream.runner.failed for p in self._streaming()),
            self._ahead_ms,
        )

    def _ahead_ms(self) -> float:
        """How far the call's audio runs ahead of the wall clock since the media opened: a call
        in real time is never held (its socket unread, it would miss its keepalive pongs)."""
        return self.clock.now_ms - (time.monotonic() - self.started) * 1000

    def _streaming(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.stream is not None]

    # ------------------------------------------------------------------ engine streams
    def _open_stream(self, participant: Participant, start_ms: float) -> ParticipantStream:
        config = SessionConfig(turn={"language": self.job.language, "format_turns": True})
        live_id = f"{self.session_id}/{participant.channel}/{uuid.uuid4().hex[:6]}"
        runner = self.host.runner(self.scheduler, config, live_id, tenant=self.principal.key_id)
        stream = ParticipantStream(runner, int(round(start_ms)), live_id)
        self.host.register(live_id, PROTOCOL, runner, self.principal.key_id)
        stream.forwarder = asyncio.create_task(self._forward(participant, stream))
        return stream

    async def _forward(self, participant: Participant, stream: ParticipantStream) -> None:
        """The stream's events, onto the call clock and to the job, in order."""
        while (event := await stream.runner.events.get()) is not None:
            if isinstance(event, TurnUpdate):
                order = stream.orders.get(event.turn_order)
                if order is None:
                    order = stream.orders[event.turn_order] = participant.next_order
                    participant.next_order += 1
                if event.end_of_turn and event.formatted:
                    stream.orders.pop(event.turn_order, None)
                update = on_call_clock(
                    event, stream.base_ms, order, participant.channel, participant.raw_id
                )
                try:
                    await self.job.deliver(update, participant.raw_id, self.session_id)
                except Exception:
                    log.exception("call %s: delivering a result failed", self.job.id)
            elif isinstance(event, SpeechStarted):
                self.job.speech_started(participant.raw_id, stream.base_ms + event.at_ms)
            elif isinstance(event, Error):
                await self.job.engine_failed(event.message)

    def detach_streams(self) -> list[ParticipantStream]:
        """Take every participant's stream away (new audio goes to new streams, if any)."""
        streams = []
        for p in self.participants.values():
            if p.stream is not None:
                streams.append(p.stream)
                p.stream = None
        return streams

    async def finish_streams(self, streams: list[ParticipantStream]) -> None:
        """End each stream's turn in flight and wait until its results have been delivered."""

        async def finish(stream: ParticipantStream) -> None:
            try:
                await asyncio.wait_for(stream.runner.finish(), FINISH_TIMEOUT_S)
            except TimeoutError:
                log.error("call %s: flushing a participant's last turn timed out", self.job.id)
                await stream.runner.cancel()
            stream.runner.events.put_nowait(None)  # type: ignore[arg-type]
            if stream.forwarder is not None:
                with contextlib.suppress(Exception):
                    await stream.forwarder
            self.host.unregister(stream.live_id)

        await asyncio.gather(*(finish(s) for s in streams))

    async def stop_transcribing(self) -> None:
        self.transcribing = False
        await self.finish_streams(self.detach_streams())
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)

    async def switch(self, language: str, scheduler: DecodeScheduler) -> None:
        """Go on in `language`: the same model takes UpdateConfig; another model (English-only
        to multilingual) gets fresh streams from the next packet on, the old ones flushed."""
        if scheduler is self.scheduler:
            for p in self._streaming():
                await p.stream.runner.handle(UpdateConfig({"language": language}))
            return
        self.scheduler = scheduler
        task = asyncio.create_task(self.finish_streams(self.detach_streams()))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    def describe(self) -> dict:
        return {
            "sessionId": self.session_id,
            "format": None
            if self.reader.format is None
            else {
                "encoding": self.reader.format.encoding,
                "sampleRate": self.reader.format.sample_rate,
            },
            "audioSeconds": round(self.clock.now_ms / 1000, 3),
            "participants": [
                {"participantRawID": p.raw_id, "channel": p.channel, "packets": p.packets}
                for p in self.participants.values()
            ],
            "packetsOutOfOrder": self.clock.dropped,
            "gapsFilled": self.clock.gaps,
            "gapSeconds": round(self.clock.gap_ms / 1000, 3),
        }


async def serve_media(ws: WebSocket, media: CallMedia) -> tuple[EndReason, ProtocolError | None]:
    """Read the accepted media socket until the call's audio ends; close it with the reason."""
    state = media.state
    idle = state.settings.idle_timeout_seconds
    last = time.monotonic()
    while True:
        if state.draining:
            await _close(ws, 1001, "server shutting down")
            return EndReason.SHUTDOWN, None
        if media.job.ended:
            await _close(ws, 1000, "call transcription ended")
            return EndReason.TERMINATED, None
        try:
            message = await asyncio.wait_for(ws.receive(), 1.0)
        except TimeoutError:
            if time.monotonic() - last > idle:
                error = ServerRefusal(ErrorKind.TIMEOUT, f"No media for {idle:.0f} s: call ended")
                await _close(ws, 1000, error.reason)
                return EndReason.INACTIVITY, error
            continue
        except (WebSocketDisconnect, RuntimeError):
            return EndReason.TERMINATED, None
        if message["type"] == "websocket.disconnect":
            return EndReason.TERMINATED, None
        last = time.monotonic()
        try:
            await media.receive(message.get("text"), message.get("bytes"))
        except ProtocolError as exc:
            await _close(ws, *close_for(exc))
            return EndReason.ERROR, exc


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    await Wire(ws, None).close(code, reason)

"""An Azure Speech SDK-shaped facade: `ConversationTranscriber` over streamscribe's v3 API.

Why this exists: call-center code written against the Azure Speech SDK's ConversationTranscriber
(`transcribing` / `transcribed` / `session_started` / `session_stopped` / `canceled` signals,
results with `text`, `speaker_id`, `offset` and `duration` in 100-ns ticks, `reason`) should port
to a self-hosted server by changing the import:

```
from streamscribe.client import azure as speechsdk   # was: import azure.cognitiveservices.speech

speech_config = speechsdk.SpeechConfig(host="ws://127.0.0.1:8000", subscription=KEY)
audio_config = speechsdk.audio.AudioConfig(filename="call.wav")
transcriber = speechsdk.transcription.ConversationTranscriber(speech_config, audio_config)
transcriber.transcribed.connect(lambda evt: print(evt.result.speaker_id, evt.result.text))
transcriber.start_transcribing_async().get()
```

Underneath, one `AsyncStreamingClient` session on `/v3/ws` (`format_turns=true`,
`speaker_labels=true`) runs on a private event loop in a background thread, as the Azure SDK
runs its own; handlers are called on that thread. Speaker labels become `Guest-1`, `Guest-2`, ...
in order of appearance (`Unknown` on partial results); a turn whose words change speaker comes
as one `transcribed` phrase per speaker, as Azure sends them. Only this SDK module is involved: the
server speaks its usual v3 protocol. What is not offered (intent, translation recognizers) is
left out rather than faked.

Why it stays, now that the server speaks the SDK's own USP protocol (README, "Azure Speech SDK"):
the unmodified `azure-cognitiveservices-speech` with `SpeechConfig(host=...)` is the way to go
wherever it installs; this shim is pure Python, for machines where the SDK's native library does
not (it ships binaries for a few platforms only), and for code already written against it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import Enum
from types import SimpleNamespace
from typing import Any

from streamscribe.client.messages import DEFAULT_URL, StreamingError, Turn
from streamscribe.client.sources import FileStream, MicrophoneStream
from streamscribe.client.streaming import AsyncStreamingClient
from streamscribe.events import speaker_runs

log = logging.getLogger(__name__)

TICKS_PER_MS = 10_000
_CHUNK_MS = 100


class ResultReason(Enum):
    RecognizingSpeech = 2
    RecognizedSpeech = 3
    NoMatch = 0
    Canceled = 1


class CancellationReason(Enum):
    Error = 1
    EndOfStream = 2
    CancelledByUser = 3


class CancellationErrorCode(Enum):
    NoError = 0
    AuthenticationFailure = 1
    BadRequest = 2
    TooManyRequests = 3
    Forbidden = 4
    ConnectionFailure = 5
    ServiceTimeout = 6
    ServiceError = 7
    ServiceUnavailable = 8
    RuntimeError = 9


class AudioStreamWaveFormat(Enum):
    PCM = "pcm_s16le"
    MULAW = "pcm_mulaw"
    ALAW = "pcm_alaw"


# ---------------------------------------------------------------------------- configuration


class SpeechConfig:
    """Where the server is and who calls: `host` (or `endpoint`) and `subscription` (an API
    key). `region` is accepted and ignored (there is no cloud region)."""

    def __init__(
        self,
        subscription: str | None = None,
        region: str | None = None,
        endpoint: str | None = None,
        host: str | None = None,
        auth_token: str | None = None,
        speech_recognition_language: str = "en-US",
    ) -> None:
        self.url = (host or endpoint or DEFAULT_URL).rstrip("/")
        self.subscription_key = subscription
        self.region = region
        self.authorization_token = auth_token
        self.speech_recognition_language = speech_recognition_language
        self.properties: dict[Any, str] = {}

    def set_property(self, property_id: Any, value: str) -> None:
        """Kept for porting; properties have no effect here."""
        self.properties[property_id] = value

    def request_word_level_timestamps(self) -> None:
        """Word timings always come back (in `result.json`)."""


class AutoDetectSourceLanguageConfig:
    """Detect the language (the server's multilingual model) instead of pinning one."""

    def __init__(self, languages: list[str] | None = None) -> None:
        self.languages = list(languages or [])


@dataclass(frozen=True)
class AudioStreamFormat:
    samples_per_second: int = 16000
    bits_per_sample: int = 16
    channels: int = 1
    wave_stream_format: AudioStreamWaveFormat = AudioStreamWaveFormat.PCM

    @property
    def bytes_per_ms(self) -> float:
        width = 2 if self.wave_stream_format is AudioStreamWaveFormat.PCM else 1
        return self.samples_per_second * width * self.channels / 1000


class PushAudioInputStream:
    """Audio your code writes (`write(bytes)`, then `close()`), in `stream_format`."""

    def __init__(self, stream_format: AudioStreamFormat | None = None) -> None:
        self.format = stream_format or AudioStreamFormat()
        if self.format.channels != 1:
            raise ValueError("PushAudioInputStream takes mono audio (channels=1)")
        self._queue: queue.Queue[bytes | None] = queue.Queue()

    def write(self, data: bytes) -> None:
        self._queue.put(bytes(data))

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[bytes]:
        """Chunks of 100 ms (the last padded with silence) until `close()`."""
        size = int(self.format.bytes_per_ms * _CHUNK_MS)
        pad = b"\xff" if self.format.wave_stream_format is AudioStreamWaveFormat.MULAW else b"\0"
        if self.format.wave_stream_format is AudioStreamWaveFormat.ALAW:
            pad = b"\xd5"
        buffer = b""
        while (data := self._queue.get()) is not None:
            buffer += data
            while len(buffer) >= size:
                yield buffer[:size]
                buffer = buffer[size:]
        if buffer:
            yield buffer.ljust(size, pad)


class AudioConfig:
    """The audio to transcribe: a file, the default microphone (or `device_name`), or a
    `PushAudioInputStream`. Files are read as fast as the server takes them, as Azure does."""

    def __init__(
        self,
        use_default_microphone: bool = False,
        filename: str | None = None,
        stream: PushAudioInputStream | None = None,
        device_name: str | None = None,
    ) -> None:
        chosen = sum(x is not None for x in (filename, stream, device_name))
        chosen += bool(use_default_microphone)
        if chosen != 1:
            raise ValueError(
                "AudioConfig needs exactly one of filename, stream, use_default_microphone, "
                "device_name"
            )
        self.filename = filename
        self.stream = stream
        self.use_default_microphone = use_default_microphone
        self.device_name = device_name

    def _source(self) -> tuple[Iterable[bytes], int, str]:
        """(chunks, sample rate, encoding) of this input."""
        if self.stream is not None:
            fmt = self.stream.format
            return self.stream, fmt.samples_per_second, fmt.wave_stream_format.value
        if self.filename is not None:
            return FileStream(self.filename, 16000, _CHUNK_MS, realtime=False), 16000, "pcm_s16le"
        return MicrophoneStream(16000, _CHUNK_MS, device=self.device_name), 16000, "pcm_s16le"


# ---------------------------------------------------------------------------- results, events


@dataclass(frozen=True)
class ConversationTranscriptionResult:
    result_id: str
    text: str
    speaker_id: str
    offset: int  # 100-ns ticks from the start of the audio
    duration: int  # ticks
    reason: ResultReason
    language: str | None = None
    json: dict[str, Any] = field(default_factory=dict, repr=False)
    channel: int = 0
    properties: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class SessionEventArgs:
    session_id: str


@dataclass(frozen=True)
class RecognitionEventArgs:
    offset: int
    session_id: str


@dataclass(frozen=True)
class ConversationTranscriptionEventArgs:
    result: ConversationTranscriptionResult
    offset: int
    session_id: str


@dataclass(frozen=True)
class CancellationDetails:
    reason: CancellationReason
    error_code: CancellationErrorCode = CancellationErrorCode.NoError
    error_details: str = ""


@dataclass(frozen=True)
class ConversationTranscriptionCanceledEventArgs:
    cancellation_details: CancellationDetails
    result: ConversationTranscriptionResult
    offset: int
    session_id: str

    @property
    def reason(self) -> CancellationReason:
        return self.cancellation_details.reason

    @property
    def error_code(self) -> CancellationErrorCode:
        return self.cancellation_details.error_code

    @property
    def error_details(self) -> str:
        return self.cancellation_details.error_details


class AutoDetectSourceLanguageResult:
    """`AutoDetectSourceLanguageResult(result).language`, as in the Azure SDK."""

    def __init__(self, result: ConversationTranscriptionResult) -> None:
        self.language = result.language


class EventSignal:
    """`connect(handler)` / `disconnect_all()`; handlers get one event-args object."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._handlers: list[Callable[[Any], Any]] = []

    def connect(self, handler: Callable[[Any], Any]) -> None:
        self._handlers.append(handler)

    def disconnect_all(self) -> None:
        self._handlers.clear()

    def fire(self, args: Any) -> None:
        for handler in list(self._handlers):
            try:
                handler(args)
            except Exception:  # as in the Azure SDK, a failing handler does not end the session
                log.exception("%s handler failed", self.name)


class ResultFuture:
    """What `*_async()` returns: `get()` blocks until done (re-raising a failure)."""

    def __init__(self, future: concurrent.futures.Future) -> None:
        self._future = future

    def get(self, timeout: float | None = None) -> None:
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()

    def __await__(self):
        return asyncio.wrap_future(self._future).__await__()


# ---------------------------------------------------------------------------- the transcriber


def _error_code(code: int | None) -> CancellationErrorCode:
    table = {
        401: CancellationErrorCode.AuthenticationFailure,
        1008: CancellationErrorCode.AuthenticationFailure,
        403: CancellationErrorCode.Forbidden,
        400: CancellationErrorCode.BadRequest,
        3006: CancellationErrorCode.BadRequest,
        3007: CancellationErrorCode.BadRequest,
        429: CancellationErrorCode.TooManyRequests,
        3009: CancellationErrorCode.TooManyRequests,
        4002: CancellationErrorCode.Forbidden,  # daily audio spent: the SDK's quota code
        3008: CancellationErrorCode.ServiceTimeout,
        1013: CancellationErrorCode.ServiceUnavailable,
        503: CancellationErrorCode.ServiceUnavailable,
        1011: CancellationErrorCode.ServiceError,
        3005: CancellationErrorCode.ServiceError,
    }
    if code is None:
        return CancellationErrorCode.ConnectionFailure
    return table.get(code, CancellationErrorCode.ServiceError)


class ConversationTranscriber:
    """Transcribes one audio input with speaker attribution; see the module docstring.

    `speaker_labels=False` (streamscribe only) skips diarization on servers without the
    `speakers` extra; results then carry `speaker_id="Unknown"`."""

    def __init__(
        self,
        speech_config: SpeechConfig,
        audio_config: AudioConfig | None = None,
        auto_detect_source_language_config: AutoDetectSourceLanguageConfig | None = None,
        *,
        speaker_labels: bool = True,
    ) -> None:
        self.speech_config = speech_config
        self.audio_config = audio_config or AudioConfig(use_default_microphone=True)
        self.auto_detect = auto_detect_source_language_config
        self.speaker_labels = speaker_labels
        self.session_started = EventSignal("session_started")
        self.session_stopped = EventSignal("session_stopped")
        self.speech_start_detected = EventSignal("speech_start_detected")
        self.speech_end_detected = EventSignal("speech_end_detected")
        self.transcribing = EventSignal("transcribing")
        self.transcribed = EventSignal("transcribed")
        self.canceled = EventSignal("canceled")
        self.session_id = ""
        self._speakers: dict[str, str] = {}
        self._turns_seen: set[int] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done: concurrent.futures.Future = concurrent.futures.Future()

    # ------------------------------------------------------------------ Azure's interface
    def start_transcribing_async(self) -> ResultFuture:
        """Connect and start sending audio; the future resolves once the session has started
        (a failure to connect is reported through `canceled`, as Azure does)."""
        if self._thread is not None:
            raise RuntimeError("this transcriber was already started: create a new one")
        started: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._session(started)),
            name="streamscribe-conversation-transcriber",
            daemon=True,
        )
        self._thread.start()
        return ResultFuture(started)

    def stop_transcribing_async(self) -> ResultFuture:
        """Stop sending audio; the future resolves after the last results and `session_stopped`."""
        self._stop.set()
        if isinstance(self.audio_config.stream, PushAudioInputStream):
            self.audio_config.stream.close()
        if self._thread is None:
            done: concurrent.futures.Future = concurrent.futures.Future()
            done.set_result(None)
            return ResultFuture(done)
        return ResultFuture(self._done)

    def start_transcribing(self) -> None:
        self.start_transcribing_async().get()

    def stop_transcribing(self) -> None:
        self.stop_transcribing_async().get()

    # ------------------------------------------------------------------ the session
    def _params(self, sample_rate: int, encoding: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "sample_rate": sample_rate,
            "encoding": encoding,
            "format_turns": True,
            "speaker_labels": self.speaker_labels,
        }
        if self.auto_detect is not None:
            params["language_detection"] = True
        else:
            language = (self.speech_config.speech_recognition_language or "").split("-")[0]
            if language and language.lower() != "en":
                params["language_code"] = language.lower()
        return params

    async def _session(self, started: concurrent.futures.Future) -> None:
        try:
            await self._run(started)
        except Exception as exc:  # a bug must still end the session for the caller
            log.exception("conversation transcriber failed")
            self._cancel(StreamingError(None, f"client failed: {exc!r}"))
            self.session_stopped.fire(SessionEventArgs(self.session_id))
        finally:
            if not started.done():
                started.set_result(None)
            if not self._done.done():
                self._done.set_result(None)

    async def _run(self, started: concurrent.futures.Future) -> None:
        source, rate, encoding = self.audio_config._source()
        key = self.speech_config.subscription_key
        client = AsyncStreamingClient(
            self.speech_config.url,
            api_key=key,
            token=self.speech_config.authorization_token,
            **self._params(rate, encoding),
        )
        client.on("turn", lambda _c, turn: self._on_turn(turn))
        try:
            begin = await client.connect()
        except StreamingError as exc:
            started.set_result(None)
            self._cancel(exc)
            self.session_stopped.fire(SessionEventArgs(self.session_id))
            return
        self.session_id = begin.id
        self.session_started.fire(SessionEventArgs(self.session_id))
        started.set_result(None)
        error: StreamingError | None = None
        ended = False
        try:
            ended = await self._send(client, source)
            await client.disconnect(terminate=True)
        except StreamingError as exc:
            error = exc
            with contextlib.suppress(StreamingError):
                await client.disconnect(terminate=False)
        if error is not None or client.error is not None:
            self._cancel(error or client.error)  # type: ignore[arg-type]
        elif ended:
            self.canceled.fire(
                self._canceled_args(CancellationDetails(CancellationReason.EndOfStream))
            )
        self.session_stopped.fire(SessionEventArgs(self.session_id))

    async def _send(self, client: AsyncStreamingClient, source: Iterable[bytes]) -> bool:
        """Send the input until it ends (True) or `stop_transcribing_async()` (False). Audio
        already written to a push stream is sent before stopping (stop closes the stream)."""
        pushed = isinstance(source, PushAudioInputStream)
        iterator = iter(source)
        done = object()
        while pushed or not self._stop.is_set():
            chunk = await asyncio.to_thread(next, iterator, done)
            if chunk is done:
                return not self._stop.is_set()
            if self._stop.is_set() and not pushed:
                break
            await client.send_audio(chunk)  # type: ignore[arg-type]
        if isinstance(source, MicrophoneStream):
            source.close()
        return False

    # ------------------------------------------------------------------ results
    def _speaker(self, label: str | None) -> str:
        if not label:
            return "Unknown"
        if label not in self._speakers:
            self._speakers[label] = f"Guest-{len(self._speakers) + 1}"
        return self._speakers[label]

    def _result(
        self, turn: Turn, reason: ResultReason, speaker: str
    ) -> ConversationTranscriptionResult:
        words = turn.words
        start = words[0].start if words else 0
        end = words[-1].end if words else start
        return ConversationTranscriptionResult(
            result_id=uuid.uuid4().hex,
            text=turn.transcript,
            speaker_id=speaker,
            offset=start * TICKS_PER_MS,
            duration=max(0, end - start) * TICKS_PER_MS,
            reason=reason,
            language=turn.language_code,
            json={
                "Id": turn.turn_order,
                "DisplayText": turn.transcript,
                "Offset": start * TICKS_PER_MS,
                "Duration": max(0, end - start) * TICKS_PER_MS,
                "SpeakerId": speaker,
                "NBest": [
                    {
                        "Display": turn.transcript,
                        "Words": [
                            {
                                "Word": w.text,
                                "Offset": w.start * TICKS_PER_MS,
                                "Duration": max(0, w.end - w.start) * TICKS_PER_MS,
                            }
                            for w in words
                        ],
                    }
                ],
            },
        )

    def _on_turn(self, turn: Turn) -> None:
        if turn.turn_order not in self._turns_seen and turn.words:
            # v3 servers need not send SpeechStarted: a turn's first message marks its start
            self._turns_seen.add(turn.turn_order)
            self.speech_start_detected.fire(
                RecognitionEventArgs(turn.words[0].start * TICKS_PER_MS, self.session_id)
            )
        if not turn.end_of_turn:
            if turn.transcript:
                result = self._result(turn, ResultReason.RecognizingSpeech, "Unknown")
                args = ConversationTranscriptionEventArgs(result, result.offset, self.session_id)
                self.transcribing.fire(args)
            return
        if not turn.turn_is_formatted:
            return  # the formatted re-send is the phrase's final form
        reason = ResultReason.RecognizedSpeech if turn.transcript else ResultReason.NoMatch
        for phrase in _phrases(turn):
            result = self._result(phrase, reason, self._speaker(phrase.speaker_label))
            self.transcribed.fire(
                ConversationTranscriptionEventArgs(result, result.offset, self.session_id)
            )
        self.speech_end_detected.fire(
            RecognitionEventArgs(result.offset + result.duration, self.session_id)
        )

    def _canceled_args(
        self, details: CancellationDetails
    ) -> ConversationTranscriptionCanceledEventArgs:
        result = ConversationTranscriptionResult("", "", "Unknown", 0, 0, ResultReason.Canceled)
        return ConversationTranscriptionCanceledEventArgs(details, result, 0, self.session_id)

    def _cancel(self, error: StreamingError) -> None:
        details = CancellationDetails(CancellationReason.Error, _error_code(error.code), str(error))
        self.canceled.fire(self._canceled_args(details))


def _phrases(turn: Turn) -> list[Turn]:
    """A final turn as the transcriber's phrases: one per speaker, in order (Azure ends a
    phrase where the speaker changes; a turn here ends on silence)."""
    runs = speaker_runs(turn.words, times=lambda w: (w.start, w.end))
    if len(runs) <= 1:
        return [turn]
    return [
        replace(
            turn,
            words=tuple(run),
            transcript=" ".join(w.text for w in run),
            speaker_label=owner or turn.speaker_label,
        )
        for owner, run in runs
    ]


# `speechsdk.audio.AudioConfig`, `speechsdk.transcription.ConversationTranscriber`, as in Azure
audio = SimpleNamespace(
    AudioConfig=AudioConfig,
    AudioStreamFormat=AudioStreamFormat,
    AudioStreamWaveFormat=AudioStreamWaveFormat,
    PushAudioInputStream=PushAudioInputStream,
)
transcription = SimpleNamespace(
    ConversationTranscriber=ConversationTranscriber,
    ConversationTranscriptionResult=ConversationTranscriptionResult,
    ConversationTranscriptionEventArgs=ConversationTranscriptionEventArgs,
    ConversationTranscriptionCanceledEventArgs=ConversationTranscriptionCanceledEventArgs,
)
languageconfig = SimpleNamespace(AutoDetectSourceLanguageConfig=AutoDetectSourceLanguageConfig)

"""Matrix row: the Azure Speech SDK's USP protocol, driven by the unmodified Python SDK
(`azure-cognitiveservices-speech`, `SpeechConfig(host="ws://HOST:PORT")`).

`run_recognizer` is the SDK driver the Azure integration tests share: a recognizer of any kind
on a push stream (or a file), every event it raises recorded in order, until `session_stopped`;
then the recognizer's own stop, timed (it must always complete). The SDK hides the WebSocket
close code; a USP error reaches the application as `canceled` with the close code in
`error_details` ("Error code: 1007. Error details: ..."), which is what the bad-input case reads.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from compat_cases import BadOutcome, Outcome

try:
    import azure.cognitiveservices.speech as speechsdk
except ImportError:  # a pinned dev dependency; without it the row is left out
    speechsdk = None

CHUNK_MS = 100


@dataclass
class Event:
    name: str
    text: str = ""
    reason: str = ""
    speaker: str = ""
    offset: int = 0
    duration: int = 0
    json: str = ""
    result: Any = None
    code: str = ""  # canceled: the CancellationErrorCode name
    details: str = ""  # canceled: error_details


@dataclass
class AzureRun:
    events: list[Event] = field(default_factory=list)
    stop_seconds: float = 0.0
    stopped: bool = False  # session_stopped came before the timeout

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.events]

    def of(self, name: str) -> list[Event]:
        return [e for e in self.events if e.name == name]

    @property
    def finals(self) -> list[Event]:
        recognized = ("transcribed", "recognized")
        return [e for e in self.events if e.name in recognized and e.reason.endswith("Speech")]

    @property
    def transcript(self) -> str:
        return " ".join(e.text for e in self.finals if e.text)

    @property
    def canceled(self) -> Event | None:
        found = self.of("canceled")
        return found[0] if found else None


def speech_config(server_ws: str, key: str | None = None, **kwargs: Any):
    """The one line that changes: `host=` names streamscribe instead of a region."""
    if key is None:
        return speechsdk.SpeechConfig(host=server_ws, **kwargs)
    return speechsdk.SpeechConfig(host=server_ws, subscription=key, **kwargs)


def push_stream(rate: int = 16000, mulaw: bool = False):
    """A push stream of 16-bit PCM (or 8-bit G.711 mu-law) mono at `rate`."""
    if mulaw:
        fmt = speechsdk.audio.AudioStreamFormat(
            samples_per_second=rate,
            bits_per_sample=8,
            channels=1,
            wave_stream_format=speechsdk.audio.AudioStreamWaveFormat.MULAW,
        )
    else:
        fmt = speechsdk.audio.AudioStreamFormat(
            samples_per_second=rate, bits_per_sample=16, channels=1
        )
    stream = speechsdk.audio.PushAudioInputStream(stream_format=fmt)
    return stream, speechsdk.audio.AudioConfig(stream=stream)


def _record(run: AzureRun, name: str, lock: threading.Lock):
    def handler(evt: Any) -> None:
        event = Event(name)
        result = getattr(evt, "result", None)
        if name == "canceled":
            details = evt.cancellation_details
            event.reason = details.reason.name
            event.code = details.code.name
            event.details = details.error_details or ""
        elif result is not None:
            event.result = result
            event.text = result.text
            event.reason = result.reason.name
            event.speaker = getattr(result, "speaker_id", "") or ""
            event.offset, event.duration = result.offset, result.duration
            event.json = result.json
        elif hasattr(evt, "offset"):
            event.offset = evt.offset
        with lock:
            run.events.append(event)

    return handler


SIGNALS = {
    "conversation": (
        "transcribing",
        "transcribed",
        "start_transcribing_async",
        "stop_transcribing_async",
    ),
    "speech": (
        "recognizing",
        "recognized",
        "start_continuous_recognition_async",
        "stop_continuous_recognition_async",
    ),
}
SIGNALS["translation"] = SIGNALS["speech"]


def make_recognizer(kind: str, config: Any, audio: Any, **kwargs: Any) -> Any:
    if kind == "conversation":
        return speechsdk.transcription.ConversationTranscriber(
            speech_config=config, audio_config=audio, **kwargs
        )
    if kind == "translation":
        return speechsdk.translation.TranslationRecognizer(
            translation_config=config, audio_config=audio, **kwargs
        )
    return speechsdk.SpeechRecognizer(speech_config=config, audio_config=audio, **kwargs)


def run_recognizer(
    kind: str,
    config: Any,
    pcm: bytes | None = None,
    *,
    rate: int = 16000,
    mulaw: bool = False,
    audio: Any = None,
    realtime: float = 0.0,
    timeout: float = 120.0,
    stop_after: float | None = None,
    **kwargs: Any,
) -> AzureRun:
    """Run a continuous recognizer (`kind`: conversation, speech or translation) on `pcm`
    (16-bit mono at `rate`, pushed in 100 ms chunks, `realtime` times faster than real time when
    set) or on `audio` (an AudioConfig), until `session_stopped` or `stop_after` seconds."""
    run = AzureRun()
    lock = threading.Lock()
    stream = None
    if audio is None:
        stream, audio = push_stream(rate, mulaw)
    recognizer = make_recognizer(kind, config, audio, **kwargs)
    partial, final, start, stop = SIGNALS[kind]
    stopped = threading.Event()
    for name in ("session_started", "speech_start_detected", "speech_end_detected", "canceled"):
        getattr(recognizer, name).connect(_record(run, name, lock))
    getattr(recognizer, partial).connect(_record(run, partial, lock))
    getattr(recognizer, final).connect(_record(run, final, lock))
    recognizer.session_stopped.connect(_record(run, "session_stopped", lock))
    recognizer.session_stopped.connect(lambda _evt: stopped.set())
    getattr(recognizer, start)().get()
    if stream is not None and pcm is not None:
        width = 1 if mulaw else 2
        step = rate * width * CHUNK_MS // 1000
        for i in range(0, len(pcm), step):
            stream.write(pcm[i : i + step])
            if realtime:
                time.sleep(CHUNK_MS / 1000 / realtime)
            if stop_after is not None and i >= stop_after * rate * width:
                break
        if stop_after is None:
            stream.close()
    elif stop_after:  # a live source (the microphone): let it run that long
        time.sleep(stop_after)
    if stop_after is None:
        run.stopped = stopped.wait(timeout)
    t0 = time.monotonic()
    getattr(recognizer, stop)().get()
    run.stop_seconds = time.monotonic() - t0
    if stop_after is not None:
        run.stopped = stopped.wait(timeout)
    with lock:
        run.events = list(run.events)
    return run


def close_code(details: str) -> int:
    match = re.search(r"Error code: (\d+)", details) or re.search(r"\((\d{3})\)", details)
    return int(match.group(1)) if match else 0


class AzureUspCase:
    name = "azure-usp"
    first = "session_started"
    last = "session_stopped"
    clean_close = None  # the SDK never shows the close code of a clean end
    bad_code = 1007

    def stream(self, server, speech) -> Outcome:
        run = run_recognizer("conversation", speech_config(server.ws), speech.pcm16())
        assert run.stopped, run.names
        names = [n for n in run.names if n != "canceled"]  # EndOfStream: the push stream ended
        cancel = run.canceled
        assert cancel is None or cancel.reason == "EndOfStream", cancel
        return Outcome(transcript=run.transcript, messages=names, close_code=None)

    def bad_input(self, server) -> BadOutcome:
        config = speech_config(server.ws)
        config.speech_recognition_language = "xx-XX"  # no such language
        run = run_recognizer("speech", config, b"\0" * 32000, timeout=30)
        cancel = run.canceled
        assert cancel is not None and cancel.code == "BadRequest", run.events
        return BadOutcome(close_code(cancel.details), cancel.details)


if speechsdk is not None:
    CASE = AzureUspCase()

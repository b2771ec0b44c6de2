"""Matrix row: OpenAI Realtime transcription sessions, driven by the official `openai` SDK.

`run_realtime` is the SDK driver the Realtime integration tests share: audio goes out from a
thread (as a microphone would send it) while the events are read here, until every item the
client committed has completed. The session ends the way OpenAI's documentation says to end one:
commit what is left, wait for its transcript, close.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from openai import OpenAI

from compat_cases import BadOutcome, Outcome
from streamscribe.audio.resample import resample

COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
CHUNK_BYTES = 4800  # 100 ms of 24 kHz PCM16


def pcm24(audio16k: np.ndarray) -> bytes:
    """16 kHz float samples as the 24 kHz 16-bit PCM the Realtime API takes."""
    return (np.clip(resample(audio16k, 16000, 24000), -1, 1) * 32767).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return b"\0" * (int(seconds * 24000) * 2)


def kind(event: Any) -> str:
    """An event's type, whether the SDK built a model or (unknown beta names) left a dict."""
    return event["type"] if isinstance(event, dict) else event.type


def field_of(event: Any, name: str) -> Any:
    return event.get(name) if isinstance(event, dict) else getattr(event, name, None)


@dataclass
class RealtimeRun:
    events: list[Any] = field(default_factory=list)
    close_code: int | None = None

    @property
    def types(self) -> list[str]:
        return [kind(e) for e in self.events]

    def of(self, name: str) -> list[Any]:
        return [e for e in self.events if kind(e) == name]

    @property
    def transcript(self) -> str:
        return " ".join(e.transcript for e in self.of(COMPLETED) if e.transcript)


def client(server, websocket: bool = False) -> OpenAI:
    """The SDK pointed at the server. The GA Realtime client derives ws:// from `base_url`;
    the beta one always assumes wss:// unless `websocket_base_url` is given."""
    return OpenAI(
        api_key="sk-local",
        base_url=server.http + "/v1",
        websocket_base_url=server.ws + "/v1" if websocket else None,
        max_retries=0,
    )


def run_realtime(
    server,
    segments: list[bytes],
    session: dict,
    *,
    beta: bool = False,
    commit_each: bool = False,
    extra: list[tuple[int, dict]] | None = None,
    realtime: bool = False,
    timeout: float = 90.0,
) -> RealtimeRun:
    """Stream `segments` of 24 kHz PCM16 and read every event until the commits complete.

    `commit_each` commits after every segment (manual turns); otherwise one commit follows the
    last segment. `extra` sends raw client events before the segment of the given index.
    `realtime` paces the audio as a microphone would (else as fast as the server takes it).
    """
    run = RealtimeRun()
    sdk = client(server, websocket=beta)
    if beta:
        manager = sdk.beta.realtime.connect(
            model="gpt-4o-transcribe", extra_query={"intent": "transcription"}
        )
    else:
        manager = sdk.realtime.connect(extra_query={"intent": "transcription"})
    commits = len(segments) if commit_each else 1
    with manager as conn:
        run.events.append(conn.recv())  # created, before anything is sent
        if beta:
            conn.transcription_session.update(session=session)
        else:
            conn.session.update(session=session)
        failure: list[BaseException] = []

        def send() -> None:
            started = time.monotonic()
            sent = 0
            try:
                for index, segment in enumerate(segments):
                    for at, message in extra or []:
                        if at == index:
                            conn.send(message)
                    for i in range(0, len(segment), CHUNK_BYTES):
                        audio = base64.b64encode(segment[i : i + CHUNK_BYTES]).decode()
                        conn.input_audio_buffer.append(audio=audio)
                        sent += len(segment[i : i + CHUNK_BYTES])
                        if realtime:  # the audio clock: 48 000 bytes a second
                            time.sleep(max(0.0, started + sent / 48000 - time.monotonic()))
                    if commit_each or index == len(segments) - 1:
                        conn.input_audio_buffer.commit()
            except BaseException as exc:  # reported by the reader
                failure.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        committed_by_client: set[str] = set()
        stopped: set[str] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not failure:
            event = conn.recv()
            run.events.append(event)
            name = kind(event)
            if name == "input_audio_buffer.speech_stopped":
                stopped.add(event.item_id)
            elif name == "input_audio_buffer.committed" and event.item_id not in stopped:
                committed_by_client.add(event.item_id)  # no speech_stopped: the client's commit
            elif name == COMPLETED:
                done = {e.item_id for e in run.of(COMPLETED)}
                if len(committed_by_client) == commits and committed_by_client <= done:
                    break
        sender.join(10)
        if failure:
            raise failure[0]
    run.close_code = conn._connection.close_code  # what the server answered our close with
    return run


class RealtimeCase:
    name = "openai-realtime"
    first = "session.created"
    last = None  # the client ends the session: there is no closing message
    clean_close = 1000
    bad_code = 1008

    def stream(self, server, speech) -> Outcome:
        session = {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                }
            },
        }
        run = run_realtime(server, [pcm24(speech.audio) + silence(1.0)], session)
        return Outcome(run.transcript, run.types, run.close_code, {"run": run})

    def bad_input(self, server) -> BadOutcome:
        """A conversation session (no intent=transcription): refused with an error, then 1008."""
        from websockets.exceptions import ConnectionClosed

        with client(server).realtime.connect(model="gpt-realtime") as conn:
            event = conn.recv()
            with contextlib.suppress(ConnectionClosed):
                conn.recv()  # the close follows the error
            code = conn._connection.close_code or 0
        message = event.error.message if kind(event) == "error" else ""
        return BadOutcome(code, message)


CASE = RealtimeCase()

"""The Python SDK: message parsing, the handshake URL, audio sources, and sessions against a
scripted in-process v3 server (loopback, no model), so every path is exercised without one."""

from __future__ import annotations

import asyncio
import importlib.abc
import json
import sys
import threading
import time
import types
import wave
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from streamscribe.client import (
    AsyncStreamingClient,
    Begin,
    FileStream,
    MicrophoneError,
    MicrophoneStream,
    SpeechStarted,
    StreamingClient,
    StreamingError,
    Termination,
    Turn,
    TurnWord,
    build_query,
    parse_message,
    session_url,
)

# ------------------------------------------------------------------ parsing (protocol doc §3.2)

BEGIN = '{"type": "Begin", "id": "de5d9927-73a6-4be8-b52d-b4c07be37e6b", "expires_at": 1759796682}'
TURN = """{
  "type": "Turn",
  "turn_order": 0,
  "turn_is_formatted": false,
  "end_of_turn": false,
  "transcript": "hi my",
  "end_of_turn_confidence": 0.0010,
  "words": [
    {"start": 1920, "end": 2000, "text": "hi", "confidence": 0.87, "word_is_final": true},
    {"start": 2800, "end": 2880, "text": "my", "confidence": 0.81, "word_is_final": true},
    {"start": 2960, "end": 3040, "text": "name", "confidence": 0.99, "word_is_final": false}
  ],
  "utterance": ""
}"""
TERMINATION = (
    '{"type": "Termination", "audio_duration_seconds": 12, "session_duration_seconds": 14}'
)


def test_parse_begin() -> None:
    msg = parse_message(BEGIN)
    assert msg == Begin(
        id="de5d9927-73a6-4be8-b52d-b4c07be37e6b",
        expires_at=datetime.fromtimestamp(1759796682, tz=UTC),
    )
    iso = parse_message({"type": "Begin", "id": "x", "expires_at": "2025-10-07T00:24:42Z"})
    assert isinstance(iso, Begin) and iso.expires_at == datetime(2025, 10, 7, 0, 24, 42, tzinfo=UTC)


def test_parse_turn() -> None:
    msg = parse_message(TURN)
    assert isinstance(msg, Turn)
    assert (msg.turn_order, msg.transcript, msg.end_of_turn, msg.turn_is_formatted) == (
        0,
        "hi my",
        False,
        False,
    )
    assert msg.end_of_turn_confidence == pytest.approx(0.001)
    assert msg.words[2] == TurnWord("name", 2960, 3040, 0.99, False, None)
    assert [w.text for w in msg.final_words] == ["hi", "my"]
    assert [w.text for w in msg.tentative_words] == ["name"]
    assert msg.language_code is None and msg.speaker_label is None
    update = msg.to_turn_update()
    assert update.final_text == "hi my" and update.text == "hi my name"
    assert update.start_ms == 1920 and update.end_ms == 3040


def test_parse_turn_with_language_and_speaker() -> None:
    data = json.loads(TURN) | {
        "end_of_turn": True,
        "language_code": "en",
        "language_confidence": 0.97,
        "speaker_label": "A",
    }
    data["words"][0]["speaker"] = "A"
    msg = parse_message(json.dumps(data))
    assert isinstance(msg, Turn)
    assert (msg.language_code, msg.language_confidence, msg.speaker_label) == ("en", 0.97, "A")
    assert msg.words[0].speaker == "A"


def test_parse_termination_and_speech_started() -> None:
    assert parse_message(TERMINATION) == Termination(12, 14)
    assert parse_message('{"type": "SpeechStarted", "timestamp": 1920}') == SpeechStarted(1920)


def test_parse_error_messages() -> None:
    err = parse_message('{"type": "Error", "error_code": 3006, "error": "Invalid JSON: []"}')
    assert isinstance(err, StreamingError)
    assert (err.code, err.message) == (3006, "Invalid JSON: []")
    assert str(err) == "Invalid JSON: [] (code 3006)"
    untyped = parse_message('{"error": "Session expired"}')
    assert isinstance(untyped, StreamingError) and untyped.code is None


def test_unknown_and_invalid_frames() -> None:
    assert parse_message('{"type": "Heartbeat", "total_audio_received_ms": 5}') is None
    with pytest.raises(ValueError, match="not JSON"):
        parse_message("hello")
    with pytest.raises(ValueError, match="not an object"):
        parse_message("[]")


def test_error_from_close_code() -> None:
    assert StreamingError.from_close(3008, "").code == 3008
    assert "expired" in StreamingError.from_close(3008, "").message
    assert StreamingError.from_close(4999, "custom reason").message == "custom reason"


# ------------------------------------------------------------------ handshake URL


def test_build_query_booleans_lists_and_defaults() -> None:
    query = build_query(
        {
            "format_turns": True,
            "speaker_labels": False,
            "keyterms_prompt": ["foo", "bar baz"],
            "min_turn_silence": 400,
            "max_turn_silence": None,
        }
    )
    assert query == (
        "sample_rate=16000&format_turns=true&speaker_labels=false"
        "&keyterms_prompt=%5B%22foo%22%2C+%22bar+baz%22%5D&min_turn_silence=400"
    )
    parsed = parse_qs(query)
    assert json.loads(parsed["keyterms_prompt"][0]) == ["foo", "bar baz"]
    assert build_query({"sample_rate": 8000, "encoding": "pcm_mulaw"}) == (
        "sample_rate=8000&encoding=pcm_mulaw"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://127.0.0.1:8000", "ws://127.0.0.1:8000/v3/ws?sample_rate=16000"),
        ("127.0.0.1:8000", "ws://127.0.0.1:8000/v3/ws?sample_rate=16000"),
        ("https://stt.example.com/", "wss://stt.example.com/v3/ws?sample_rate=16000"),
        ("ws://h:1/v3/ws", "ws://h:1/v3/ws?sample_rate=16000"),
        ("ws://h:1/prefix", "ws://h:1/prefix/v3/ws?sample_rate=16000"),
    ],
)
def test_session_url(url: str, expected: str) -> None:
    assert session_url(url, {}) == expected


def test_session_url_token_and_bad_scheme() -> None:
    url = session_url("ws://h:1", {"format_turns": False}, token="tok en")
    assert url == "ws://h:1/v3/ws?sample_rate=16000&format_turns=false&token=tok+en"
    with pytest.raises(ValueError, match="ws://"):
        session_url("ftp://h", {})


def test_client_rejects_unknown_event() -> None:
    client = AsyncStreamingClient()
    with pytest.raises(ValueError, match="unknown event"):
        client.on("turns", lambda c, m: None)
    client.on(Turn, lambda c, m: None)
    client.on("Termination", lambda c, m: None)


# ------------------------------------------------------------------ FileStream


@pytest.fixture
def wav_file(tmp_path: Path) -> Path:
    """1.05 s of a 440 Hz tone, 16 kHz mono PCM16."""
    rate = 16000
    samples = (np.sin(np.arange(int(rate * 1.05)) * 2 * np.pi * 440 / rate) * 8000).astype("<i2")
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def test_filestream_fast_yields_every_chunk(wav_file: Path) -> None:
    start = time.monotonic()
    chunks = list(FileStream(wav_file, realtime=False))
    assert time.monotonic() - start < 0.5
    # 100 ms = 1600 samples * 2 bytes; the last 50 ms are padded to a whole frame with silence
    assert [len(c) for c in chunks] == [3200] * 11
    assert chunks[-1][1600:] == b"\0" * 1600
    assert [len(c) for c in FileStream(wav_file, chunk_ms=50, realtime=False)] == [1600] * 21
    resampled = list(FileStream(wav_file, sample_rate=8000, realtime=False))
    assert [len(c) for c in resampled] == [1600] * 11


def test_filestream_realtime_is_paced_by_the_clock(wav_file: Path) -> None:
    start = time.monotonic()
    total = sum(len(c) for c in FileStream(wav_file, realtime=True))
    elapsed = time.monotonic() - start
    assert total == 35200  # 1.05 s, the last frame padded to 100 ms
    assert 0.95 <= elapsed <= 1.4


async def test_filestream_async_realtime(wav_file: Path) -> None:
    start = time.monotonic()
    total = 0
    async for chunk in FileStream(wav_file, realtime=True):
        total += len(chunk)
    assert total == 35200  # 1.05 s, the last frame padded to 100 ms
    assert 0.95 <= time.monotonic() - start <= 1.4


def test_filestream_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such audio file"):
        FileStream(tmp_path / "nope.wav")


# ------------------------------------------------------------------ MicrophoneStream


class _NoSounddevice(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


def test_microphone_without_portaudio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoSounddevice(), *sys.meta_path])
    with pytest.raises(MicrophoneError, match="apt-get install libportaudio2"):
        MicrophoneStream()


class _FakePortAudioError(Exception):
    pass


def _fake_sounddevice(native_rate: int | None, block_count: int = 5) -> types.ModuleType:
    """A stand-in for sounddevice: no input device (None), or one recording at native_rate."""
    sd = types.ModuleType("sounddevice")
    sd.PortAudioError = _FakePortAudioError  # type: ignore[attr-defined]

    def query_devices(device: Any = None, kind: str | None = None) -> dict[str, Any]:
        if native_rate is None:
            raise _FakePortAudioError("Error querying device -1")
        return {"name": "fake mic", "max_input_channels": 1, "default_samplerate": native_rate}

    def check_input_settings(samplerate: int, **kwargs: Any) -> None:
        if samplerate != native_rate:
            raise _FakePortAudioError("Invalid sample rate")

    class RawInputStream:
        def __init__(self, samplerate: int, blocksize: int, callback: Any, **kwargs: Any) -> None:
            self.rate, self.blocksize, self.callback = samplerate, blocksize, callback
            self.thread = threading.Thread(target=self._run)
            self.stopped = threading.Event()

        def _run(self) -> None:
            for _ in range(block_count):
                if self.stopped.is_set():
                    return
                self.callback(b"\x01\x00" * self.blocksize, self.blocksize, None, None)

        def start(self) -> None:
            self.thread.start()

        def stop(self) -> None:
            self.stopped.set()
            self.thread.join()

        def close(self) -> None:
            pass

    sd.query_devices = query_devices  # type: ignore[attr-defined]
    sd.check_input_settings = check_input_settings  # type: ignore[attr-defined]
    sd.RawInputStream = RawInputStream  # type: ignore[attr-defined]
    return sd


def test_microphone_without_input_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice(None))
    with pytest.raises(MicrophoneError, match="no input device found.*python -m sounddevice"):
        MicrophoneStream()


def test_microphone_chunks_through_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice(16000))
    mic = MicrophoneStream(chunk_ms=100)
    chunks = []
    with mic:
        for chunk in mic:
            chunks.append(chunk)
            if len(chunks) == 5:
                mic.close()
    assert [len(c) for c in chunks] == [3200] * 5
    assert mic.device_name == "fake mic" and mic.device_rate == 16000


def test_microphone_resamples_a_native_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice(48000, block_count=10))
    mic = MicrophoneStream(sample_rate=16000, chunk_ms=100)
    assert mic.device_rate == 48000
    mic.open()
    time.sleep(0.2)  # the fake device delivers its 10 blocks at once
    mic.close()
    total = sum(len(c) for c in mic)
    assert total == pytest.approx(16000 * 1.0 * 2, abs=64)  # 1 s of audio at 16 kHz


# ------------------------------------------------------------------ sessions against a stub


class StubServer:
    """A scripted v3 server on a background thread. The `mode` query parameter picks a script:
    ok (a partial per audio frame; on Terminate a formatted final turn after a delay, then
    Termination), error (after the first audio an Error 3007 frame, and the close 0.3 s later),
    drop (close 3005 with no reason after the first audio)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.text_frames: list[dict[str, Any]] = []
        self.audio_bytes = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StubServer:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(lambda: self._stop and self._stop.set_result(None))
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = self._loop.create_future()
        async with serve(self._handle, "127.0.0.1", 0) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path
        self.requests.append((path, ws.request.headers.get("Authorization")))
        mode = parse_qs(urlsplit(path).query).get("mode", ["ok"])[0]
        await ws.send(json.dumps({"type": "Begin", "id": "sess-1", "expires_at": 1759796682}))
        async for frame in ws:
            if isinstance(frame, bytes):
                self.audio_bytes += len(frame)
                if mode == "error":
                    error = "Input duration violation: 10 ms. Expected between 50 and 1000 ms"
                    await ws.send(json.dumps({"type": "Error", "error_code": 3007, "error": error}))
                    await asyncio.sleep(0.3)  # the client learns of it before the close
                    await ws.close(3007, error)
                    return
                if mode == "drop":
                    await ws.close(3005)
                    return
                await ws.send(json.dumps(_turn("hello", end=False)))
                continue
            message = json.loads(frame)
            self.text_frames.append(message)
            if message["type"] == "Terminate":
                await asyncio.sleep(0.3)  # the last turn comes late: the client must wait
                await ws.send(json.dumps(_turn("hello world", end=True)))
                await ws.send(json.dumps(_turn("Hello world.", end=True, formatted=True)))
                seconds = self.audio_bytes // 32000
                await ws.send(
                    json.dumps(
                        {
                            "type": "Termination",
                            "audio_duration_seconds": seconds,
                            "session_duration_seconds": 1,
                        }
                    )
                )
                await ws.close()
                return


def _turn(text: str, end: bool, formatted: bool = False) -> dict[str, Any]:
    words = [
        {"start": i * 500, "end": i * 500 + 400, "text": t, "confidence": 0.9, "word_is_final": end}
        for i, t in enumerate(text.split())
    ]
    return {
        "type": "Turn",
        "turn_order": 0,
        "turn_is_formatted": formatted,
        "end_of_turn": end,
        "transcript": text if end else "",
        "end_of_turn_confidence": 1.0 if end else 0.1,
        "words": words,
    }


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


CHUNK = b"\x00\x00" * 1600  # 100 ms of silence


async def test_async_session_waits_for_the_last_turn(stub: StubServer, tmp_path: Path) -> None:
    seen: list[Any] = []
    saved = tmp_path / "copy.wav"
    async with AsyncStreamingClient(
        stub.url, api_key="sk-test", format_turns=True, save_audio=saved
    ) as client:
        client.on("turn", lambda c, m: seen.append(m))
        client.on(Termination, lambda c, m: seen.append(m))
        assert client.session_id == "sess-1"
        await client.stream([CHUNK] * 10)
        await client.update_configuration(max_turn_silence=1500, keyterms_prompt=["a b"])
        await client.force_endpoint()
    assert isinstance(seen[-1], Termination) and seen[-1].audio_duration_seconds == 1
    finals = [m for m in seen if isinstance(m, Turn) and m.turn_is_formatted]
    assert [m.transcript for m in finals] == ["Hello world."]
    path, auth = stub.requests[0]
    assert auth == "sk-test"
    assert path == "/v3/ws?sample_rate=16000&format_turns=true"
    assert stub.text_frames == [
        {"type": "UpdateConfiguration", "max_turn_silence": 1500, "keyterms_prompt": ["a b"]},
        {"type": "ForceEndpoint"},
        {"type": "Terminate"},
    ]
    with wave.open(str(saved)) as wav:
        assert (wav.getframerate(), wav.getnframes()) == (16000, 16000)


async def test_async_iteration_yields_every_message(stub: StubServer) -> None:
    client = AsyncStreamingClient(stub.url, token="tok")
    await client.connect()

    async def produce() -> None:
        await client.stream([CHUNK] * 3)
        await client.terminate()

    producer = asyncio.create_task(produce())
    kinds = [type(m).__name__ async for m in client]
    await producer
    await client.disconnect()
    assert kinds == ["Begin", "Turn", "Turn", "Turn", "Turn", "Turn", "Termination"]
    assert "token=tok" in stub.requests[0][0]


@pytest.mark.parametrize(
    ("mode", "code", "text"), [("error", 3007, "Input duration"), ("drop", 3005, "cancelled")]
)
async def test_async_errors_reach_handler_and_caller(
    stub: StubServer, mode: str, code: int, text: str
) -> None:
    errors: list[StreamingError] = []
    client = AsyncStreamingClient(stub.url, mode=mode)
    client.on("error", lambda c, e: errors.append(e))
    await client.connect()
    with pytest.raises(StreamingError) as info:
        for _ in range(20):
            await client.send_audio(CHUNK)
            await asyncio.sleep(0.02)
    assert info.value.code == code and text in info.value.message
    await client.disconnect()  # already reported: does not raise again
    assert errors == [info.value]


async def test_connection_refused_names_the_fix() -> None:
    client = AsyncStreamingClient("ws://127.0.0.1:9", open_timeout=2)
    with pytest.raises(StreamingError, match=r"ws://127\.0\.0\.1:9.*streamscribe serve"):
        await client.connect()


def test_sync_client_blocks_until_done(stub: StubServer) -> None:
    turns: list[tuple[str, str]] = []
    with StreamingClient(stub.url, format_turns=True) as client:
        client.on("turn", lambda c, m: turns.append((type(c).__name__, m.transcript)))
        client.stream(iter([CHUNK] * 4))
    assert client.termination == Termination(0, 1)
    assert turns[-1] == ("StreamingClient", "Hello world.")
    assert not client.connected


def test_sync_client_iteration_and_error(stub: StubServer) -> None:
    client = StreamingClient(stub.url)
    client.connect()
    client.send_audio(CHUNK)
    client.terminate()
    kinds = [type(m).__name__ for m in client]
    client.disconnect()
    assert kinds == ["Begin", "Turn", "Turn", "Turn", "Termination"]

    failing = StreamingClient(stub.url, mode="error")
    with pytest.raises(StreamingError, match="Input duration"), failing:
        for _ in range(20):
            failing.send_audio(CHUNK)
            time.sleep(0.02)

"""The USP dialect (protocols/azure_usp*.py) as protocol transcripts, without a server.

The client frames are the real Python SDK's own: a small in-memory WebSocket stub records what
`azure-cognitiveservices-speech` sends for each recognizer (and answers it just enough to end the
request), then those frames are fed to `UspProtocol` and what it answers is checked message by
message. Hand-made frames cover what the SDK never sends (hostile input) and the request
bookkeeping (single-shot requests, replayed audio, phrases held between requests).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from streamscribe.errors import PeerError, ProtocolError
from streamscribe.events import (
    AudioFormat,
    AudioFormatSettled,
    EndReason,
    Error,
    ErrorKind,
    Flushed,
    ForceEndpoint,
    RawAudio,
    SessionEnded,
    SpeechStarted,
    TurnUpdate,
    Word,
)
from streamscribe.protocols.azure_usp import State, TurnStart, UspProtocol
from streamscribe.protocols.azure_usp_frames import (
    encode_binary,
    encode_text,
    parse_binary,
    parse_text,
    parse_wave_header,
)
from streamscribe.protocols.azure_usp_handshake import (
    Recognizer,
    credentials,
    parse_handshake,
    read_context,
    session_config,
)
from streamscribe.protocols.common import Close, SendText, close_code_of

RATE = 16000

# ------------------------------------------------------------------ frames from the real SDK


@dataclass
class Capture:
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    frames: list[str | bytes] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def capture(kind: str, wav: Path) -> Capture:
    """What the SDK sends on its first connection for one recognizer, until its end of audio.

    The stub answers the request's end (turn.start, EndOfDictation, turn.end) with frames of
    our own codec, so the SDK stops cleanly instead of reconnecting."""
    sdk = pytest.importorskip("azure.cognitiveservices.speech")
    from websockets.asyncio.server import serve

    got = Capture()
    port = _free_port()
    ready, done = threading.Event(), threading.Event()

    async def handler(ws) -> None:
        first = not got.path
        if first:
            got.path = ws.request.path
            got.headers = {k.lower(): v for k, v in ws.request.headers.raw_items()}
        request = ""
        async for message in ws:
            if first:
                got.frames.append(message)
            if isinstance(message, str):
                parsed = parse_text(message)
                request = parsed.request_id or request
            elif not parse_binary(message).body:
                for path, body in (
                    ("turn.start", {"context": {"serviceTag": "x"}}),
                    ("speech.phrase", {"RecognitionStatus": "EndOfDictation", "Offset": 10**9}),
                    ("turn.end", {}),
                ):
                    await ws.send(encode_text(path, request, body))
                first = False

    def serve_forever() -> None:
        async def main() -> None:
            async with serve(handler, "127.0.0.1", port, subprotocols=["USP"]):
                ready.set()
                await asyncio.get_running_loop().run_in_executor(None, done.wait)

        asyncio.run(main())

    thread = threading.Thread(target=serve_forever, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        host = f"ws://127.0.0.1:{port}"
        audio = sdk.audio.AudioConfig(filename=str(wav))
        stopped = threading.Event()
        if kind == "conversation":
            rec = sdk.transcription.ConversationTranscriber(
                speech_config=sdk.SpeechConfig(host=host, subscription="KEY"), audio_config=audio
            )
            rec.session_stopped.connect(lambda _e: stopped.set())
            rec.start_transcribing_async().get()
            stopped.wait(15)
            rec.stop_transcribing_async().get()
        elif kind == "once":
            rec = sdk.SpeechRecognizer(
                speech_config=sdk.SpeechConfig(host=host), audio_config=audio
            )
            rec.recognize_once_async().get()
        else:
            config = sdk.translation.SpeechTranslationConfig(
                host=host, speech_recognition_language="de-DE", target_languages=("en",)
            )
            rec = sdk.translation.TranslationRecognizer(
                translation_config=config, audio_config=audio
            )
            rec.session_stopped.connect(lambda _e: stopped.set())
            rec.start_continuous_recognition_async().get()
            stopped.wait(15)
            rec.stop_continuous_recognition_async().get()
    finally:
        done.set()
        thread.join(10)
    assert got.frames, "the SDK sent nothing"
    return got


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> tuple[Path, bytes]:
    """Half a second of a tone: what it says does not matter here, only how it is framed."""
    t = np.arange(RATE // 2) / RATE
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    path = tmp_path_factory.mktemp("usp") / "tone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return path, pcm


@pytest.fixture(scope="module")
def conversation(wav) -> Capture:
    return capture("conversation", wav[0])


def split_path(raw: str) -> tuple[str, dict[str, str]]:
    from urllib.parse import parse_qsl, urlsplit

    url = urlsplit(raw)
    return url.path, dict(parse_qsl(url.query))


def feed(dialect: UspProtocol, frames: list[str | bytes]) -> list:
    commands: list = []
    for f in frames:
        commands += dialect.receive_text(f) if isinstance(f, str) else dialect.receive_bytes(f)
    return commands


def texts(outgoing) -> list[tuple[str, dict]]:
    """(path, body) of each text frame sent; a Close as ("close", {code, reason})."""
    out = []
    for o in outgoing:
        if isinstance(o, Close):
            out.append(("close", {"code": o.code, "reason": o.reason}))
        else:
            assert isinstance(o, SendText)
            message = parse_text(o.text)
            out.append((message.path, message.json()))
    return out


# ------------------------------------------------------------------ the SDK's frames, decoded


def test_sdk_handshake_and_frames_decode(conversation, wav):
    path, query = split_path(conversation.path)
    assert path == "/speech/universal/v2" and query["language"].lower() == "en-us"
    assert conversation.headers["sec-websocket-protocol"] == "USP"
    assert conversation.headers["ocp-apim-subscription-key"] == "KEY"
    texts_ = [parse_text(f) for f in conversation.frames if isinstance(f, str)]
    assert [m.path for m in texts_[:2]] == ["speech.config", "speech.context"]
    context = texts_[1]
    assert context.request_id and context.json()["phraseDetection"]["mode"] == "Conversation"
    binary = [parse_binary(f) for f in conversation.frames if isinstance(f, bytes)]
    assert all(m.path == "audio" and m.request_id == context.request_id for m in binary)
    assert binary[0].content_type == "audio/x-wav"
    header = parse_wave_header(binary[0].body)
    assert header.audio == AudioFormat("pcm_s16le", RATE, 1)
    assert b"".join(m.body for m in binary)[header.data_offset :] == wav[1]
    assert binary[-1].body == b""  # the end of audio


def test_sdk_conversation_through_the_state_machine(conversation, wav):
    path, query = split_path(conversation.path)
    dialect = UspProtocol(parse_handshake(path, query))
    assert dialect.awaiting_context
    texts_ = [f for f in conversation.frames if isinstance(f, str)]
    binary = [f for f in conversation.frames if isinstance(f, bytes)]
    feed(dialect, texts_[:2])
    assert dialect.state is State.READY
    config = dialect.session_config()
    assert config.speaker_labels and config.turn["language"] == "en"
    assert dialect.context is not None and dialect.context.recognizer is Recognizer.CONVERSATION
    first = dialect.receive_bytes(binary[0])
    assert first == [AudioFormatSettled(AudioFormat("pcm_s16le", RATE, 1))]
    [start] = dialect.take_replies()
    assert isinstance(start, TurnStart)
    commands = feed(dialect, binary[1:])
    audio = b"".join(c.data for c in commands if isinstance(c, RawAudio))
    assert audio == wav[1]
    request = parse_text(texts_[1]).request_id
    assert commands[-1] == ForceEndpoint(marker=request)
    assert dialect.state is State.FLUSHING

    sent = texts(dialect.render(start))
    assert sent == [("turn.start", {"context": {"serviceTag": request}})]
    assert texts(dialect.render(SpeechStarted(0, 120))) == [
        ("speech.startdetected", {"Offset": 1_200_000})
    ]
    words = (Word("hello", 120, 400, 0.9, True), Word("world", 450, 800, 0.8, False))
    [(path_, body)] = texts(dialect.render(TurnUpdate(0, 0, words, False)))
    assert path_ == "speech.hypothesis"
    assert body == {
        "Text": "hello world",
        "Offset": 1_200_000,
        "Duration": 6_800_000,
        "SpeakerId": "Unknown",
    }
    final = tuple(Word(w.text, w.start_ms, w.end_ms, w.confidence, True, "A") for w in words)
    assert dialect.render(TurnUpdate(0, 0, final, True, speaker="A")) == []  # formatted follows
    formatted = (final[0], Word("world.", 450, 800, 0.8, True, "A"))
    [(path_, body)] = texts(dialect.render(TurnUpdate(0, 0, formatted, True, True, speaker="A")))
    assert path_ == "speech.phrase"
    assert body["RecognitionStatus"] == "Success" and body["DisplayText"] == "hello world."
    assert body["SpeakerId"] == "Guest-1" and "NBest" not in body
    end = texts(dialect.render(Flushed(request)))
    assert [p for p, _ in end] == ["speech.enddetected", "speech.phrase", "turn.end"]
    assert end[1][1] == {"RecognitionStatus": "EndOfDictation", "Offset": 5_000_000, "Duration": 0}
    assert dialect.state is State.IDLE
    assert texts(dialect.render(SessionEnded(500, 900, EndReason.CLIENT_GONE)))[-1][0] == "close"


def test_sdk_recognize_once_is_single_shot(wav):
    got = capture("once", wav[0])
    path, query = split_path(got.path)
    assert path == "/speech/recognition/interactive/cognitiveservices/v1"
    dialect = UspProtocol(parse_handshake(path, query))
    commands = feed(dialect, got.frames)
    assert dialect.context is not None and dialect.context.single_shot
    assert dialect.context.recognizer is Recognizer.SPEECH
    assert not dialect.session_config().speaker_labels
    [start] = dialect.take_replies()
    dialect.render(start)
    request = start.request.id
    words = (Word("Hi.", 100, 300, 0.9, True),)
    sent = texts(dialect.render(TurnUpdate(0, 0, words, True, True)))
    # single shot: the first phrase ends the request
    assert [p for p, _ in sent] == ["speech.enddetected", "speech.phrase", "turn.end"]
    assert "SpeakerId" not in sent[1][1]
    assert dialect.render(Flushed(request)) == []  # the request is already over
    assert isinstance(commands[-1], ForceEndpoint)


def test_sdk_translation_context(wav):
    got = capture("translation", wav[0])
    path, query = split_path(got.path)
    dialect = UspProtocol(parse_handshake(path, query))
    feed(dialect, [f for f in got.frames if isinstance(f, str)][:2])
    config = dialect.session_config()
    assert config.turn["translate"] is True and config.turn["language"] == "de"
    assert dialect.context is not None and dialect.context.targets == ("en",)
    binary = [f for f in got.frames if isinstance(f, bytes)]
    feed(dialect, binary)
    [start] = dialect.take_replies()
    dialect.render(start)
    words = (Word("Hallo", 0, 300, 0.9, True, None), Word("Welt.", 300, 700, 0.9, True))
    update = TurnUpdate(0, 0, words, True, True, language="de", translation="Hello world.")
    [(path_, body)] = texts(dialect.render(update))
    assert path_ == "translation.phrase"
    assert body["Text"] == "Hallo Welt." and body["Translation"] == {
        "TranslationStatus": "Success",
        "Translations": [{"Language": "en", "Text": "Hello world."}],
    }


# ------------------------------------------------------------------ requests, by hand


def connected(path="/speech/recognition/conversation/cognitiveservices/v1", query=None, **ctx):
    dialect = UspProtocol(parse_handshake(path, query or {"language": "en-US"}))
    dialect.receive_text(encode_text("speech.context", "r1", ctx or {"phraseDetection": {}}))
    return dialect


def header(rate=RATE, channels=1, tag=1, bits=16) -> bytes:
    block = struct.pack("<HHIIHH", tag, channels, rate, rate * 2, 2, bits)
    return b"RIFF\0\0\0\0WAVEfmt " + struct.pack("<I", 16) + block + b"data\0\0\0\0"


def audio(request: str, payload: bytes) -> bytes:
    return encode_binary("audio", request, payload)


def test_replayed_audio_is_skipped_and_phrases_held_between_requests():
    dialect = connected("/speech/recognition/interactive/cognitiveservices/v1")
    dialect.receive_bytes(audio("r1", header()))
    second = b"\1\0" * RATE  # 1 s
    assert dialect.receive_bytes(audio("r1", second)) == [RawAudio(second)]
    [start] = dialect.take_replies()
    dialect.render(start)
    dialect.render(TurnUpdate(0, 0, (Word("One.", 0, 400, 0.9, True),), True, True))
    assert dialect.state is State.IDLE
    assert dialect.receive_bytes(audio("r1", b"\2\0" * 10)) == []  # the ended request's audio
    # a turn finished before the next request: held, sent after its turn.start
    later = TurnUpdate(0, 1, (Word("Two.", 600, 900, 0.9, True),), True, True)
    assert dialect.render(later) == []
    dialect.receive_text(encode_text("speech.context", "r2", {}))
    dialect.receive_bytes(audio("r2", header()))
    # the SDK replays from the phrase's end (400 ms): the engine has 600 ms of that already
    replay = b"\3\0" * (RATE * 6 // 10) + b"\4\0" * 100
    assert dialect.receive_bytes(audio("r2", replay)) == [RawAudio(b"\4\0" * 100)]
    [start2] = dialect.take_replies()
    sent = texts(dialect.render(start2))
    assert [p for p, _ in sent] == ["turn.start", "speech.enddetected", "speech.phrase", "turn.end"]
    assert sent[2][1]["Offset"] == 200 * 10_000  # 600 ms on the engine clock, from 400 ms


@pytest.mark.parametrize(
    ("tag", "bits", "encoding"), [(1, 16, "pcm_s16le"), (6, 8, "pcm_alaw"), (7, 8, "pcm_mulaw")]
)
def test_wave_header_formats(tag, bits, encoding):
    parsed = parse_wave_header(header(8000, 1, tag, bits) + b"\0\0")
    assert parsed.audio == AudioFormat(encoding, 8000, 1) and parsed.data_offset == 44


def test_end_of_audio_said_twice_is_taken_once():
    dialect = started("/speech/recognition/conversation/cognitiveservices/v1")
    assert dialect.receive_bytes(audio("r1", b"")) == [ForceEndpoint(marker="r1")]
    assert dialect.receive_bytes(audio("r1", b"")) == []
    assert dialect.state is State.FLUSHING


def test_odd_chunks_are_carried_to_whole_samples():
    dialect = connected()
    dialect.receive_bytes(audio("r1", header(8000)))
    assert dialect.receive_bytes(audio("r1", b"\1\2\3")) == [RawAudio(b"\1\2")]
    assert dialect.receive_bytes(audio("r1", b"\4")) == [RawAudio(b"\3\4")]


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        (b"\x00", "shorter than its 2-byte header length"),
        (b"\xff\xff" + b"x" * 10, "header length"),
        (struct.pack(">H", 4) + b"\xff\xfe:a", "not ASCII"),
        (encode_binary("audio", "r1", b"OggS" + b"\0" * 40), "RIFF/WAVE header"),
        (encode_binary("audio", "r1", header(tag=85, bits=0)), "Unsupported audio format"),
        (encode_binary("audio", "r1", header(rate=4000)), "Unsupported sample rate"),
        (struct.pack(">H", 9) + b"X-Foo:bar", "no Path header"),
    ],
)
def test_hostile_binary_frames_are_bad_requests(frame, says):
    dialect = connected()
    with pytest.raises(PeerError) as info:
        dialect.receive_bytes(frame)
    assert close_code_of(info.value) == 1007 and says in info.value.reason


def test_audio_before_context_and_bad_text_frames():
    dialect = UspProtocol(parse_handshake("/speech/universal/v2", {}))
    with pytest.raises(PeerError, match="before speech.context"):
        dialect.receive_bytes(audio("r1", header()))
    with pytest.raises(PeerError, match="not JSON"):
        dialect.receive_text(encode_text("speech.context", "r1", None) + "{nope")
    with pytest.raises(PeerError, match="no X-RequestId"):
        dialect.receive_text("Path:speech.context\r\n\r\n{}")
    assert dialect.receive_text("Path:telemetry\r\nX-RequestId:r\r\n\r\n{}") == []


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (ErrorKind.BAD_AUDIO, 1007),
        (ErrorKind.LIMIT, 4429),
        (ErrorKind.QUOTA, 4429),
        (ErrorKind.BUSY, 4429),
        (ErrorKind.TIMEOUT, 4000),
        (ErrorKind.INTERNAL, 4000),
    ],
)
def test_errors_close_with_codes_the_sdk_does_not_retry(kind, code):
    dialect = connected()
    [close] = dialect.render(Error(kind, "why"))
    assert close == Close(code, "why")
    assert dialect.render(Error(kind, "again")) == []


def started(path="/speech/recognition/interactive/cognitiveservices/v1") -> UspProtocol:
    dialect = connected(path)
    dialect.receive_bytes(audio("r1", header()))
    [start] = dialect.take_replies()
    dialect.render(start)
    return dialect


def test_idle_between_requests_is_a_quiet_close():
    """The SDK keeps its socket between recognitions: timing it out then is no error to show
    (the SDK reconnects for its next request); during a request it is a ConnectionFailure."""
    idle = ProtocolError.of(ErrorKind.TIMEOUT, "idle")
    assert started().error(idle) == [Close(4000, "idle")]
    dialect = started()
    dialect.render(TurnUpdate(0, 0, (Word("One.", 0, 400, 0.9, True),), True, True))
    assert dialect.state is State.IDLE
    assert dialect.error(idle) == [Close(1000, "idle")]


def test_context_options():
    hs = parse_handshake(
        "/speech/recognition/conversation/cognitiveservices/v1",
        {"language": "en-us", "format": "detailed", "lidEnabled": "en-US,de-DE"},
    )
    body = {
        "languageId": {"languages": ["en-US", "de-DE"]},
        "dgi": {"Groups": [{"Items": [{"Text": "Stella"}, {"Text": "Kowloon"}]}]},
        "phraseOutput": {"format": "Detailed", "detailed": {"options": ["WordTimings"]}},
    }
    context = read_context(body, hs)
    assert context.detailed and context.word_timings
    config = session_config(context)
    assert config.language_detection and "language" not in config.turn
    assert config.turn["keyterms"] == ("Stella", "Kowloon")


@pytest.mark.parametrize(
    ("body", "query", "says"),
    [
        ({"phraseDetection": {"enrichment": {"pronunciationAssessment": {}}}}, {}, "pronunc"),
        ({}, {"cid": "abc"}, "custom speech models"),
        ({"translation": {"targetLanguages": ["fr"]}}, {}, "into English only"),
        ({"phraseDetection": {"language": "xx-XX"}}, {}, "Unsupported language"),
    ],
)
def test_unsupported_options_are_refused(body, query, says):
    with pytest.raises(PeerError, match=says) as info:
        hs = parse_handshake("/stt/speech/universal/v2", query)
        session_config(read_context(body, hs))
    assert close_code_of(info.value) == 1007


def test_detailed_phrase_words_in_ticks():
    dialect = connected(
        phraseOutput={"format": "Detailed", "detailed": {"options": ["WordTimings"]}}
    )
    dialect.receive_bytes(audio("r1", header()))
    [start] = dialect.take_replies()
    dialect.render(start)
    words = (Word("Hello,", 100, 400, 0.5, True), Word("world!", 400, 900, 1.0, True))
    [(_, body)] = texts(dialect.render(TurnUpdate(0, 0, words, True, True)))
    [best] = body["NBest"]
    assert best["Lexical"] == "hello world" and best["Display"] == "Hello, world!"
    assert best["Confidence"] == 0.75
    assert best["Words"] == [
        {"Word": "hello", "Offset": 1_000_000, "Duration": 3_000_000, "Confidence": 0.5},
        {"Word": "world", "Offset": 4_000_000, "Duration": 5_000_000, "Confidence": 1.0},
    ]


def test_credentials_map_onto_streamscribe_keys():
    assert credentials({"ocp-apim-subscription-key": "k"}, {}) == {"authorization": "k"}
    assert credentials({"authorization": "Bearer t"}, {}) == {"authorization": "Bearer t"}
    assert credentials({}, {}) == {}


def test_session_end_closes_an_open_request():
    dialect = connected()
    dialect.receive_bytes(audio("r1", header()))
    [start] = dialect.take_replies()
    dialect.render(start)
    sent = texts(dialect.render(SessionEnded(0, 0, EndReason.EXPIRED)))
    assert [p for p, _ in sent] == ["turn.end", "close"] and sent[1][1]["code"] == 4000
    assert json.dumps(sent)  # plain JSON all the way


def spoken(*pairs: tuple[str, str]) -> tuple[Word, ...]:
    """(text, speaker) words, one every 300 ms."""
    return tuple(Word(t, i * 300, i * 300 + 250, 0.9, True, s) for i, (t, s) in enumerate(pairs))


def diarizing() -> UspProtocol:
    dialect = connected(
        "/speech/universal/v2",  # the ConversationTranscriber's path
        phraseDetection={"mode": "Conversation", "speakerDiarization": {"mode": "Anonymous"}},
    )
    dialect.receive_bytes(audio("r1", header()))
    [start] = dialect.take_replies()
    dialect.render(start)
    return dialect


def test_a_turn_that_changes_speaker_is_two_phrases_as_the_transcriber_sends():
    dialect = diarizing()
    words = spoken(
        ("Are", "A"), ("you", "A"), ("there?", "A"), ("Yes,", "B"), ("I", "B"), ("am.", "B")
    )
    sent = texts(dialect.render(TurnUpdate(0, 0, words, True, True, speaker="A")))
    assert [p for p, _ in sent] == ["speech.phrase", "speech.phrase"]
    first, second = (body for _, body in sent)
    assert first["DisplayText"] == "Are you there?" and first["SpeakerId"] == "Guest-1"
    assert second["DisplayText"] == "Yes, I am." and second["SpeakerId"] == "Guest-2"
    assert first["Offset"] == 0 and first["Duration"] == 8_500_000
    assert second["Offset"] == 9_000_000 and second["Duration"] == 8_500_000


def test_a_one_word_label_flicker_does_not_split_a_phrase():
    dialect = diarizing()
    words = spoken(("one", "A"), ("two", "A"), ("three", "B"), ("four", "A"), ("five", "A"))
    [(_, body)] = texts(dialect.render(TurnUpdate(0, 0, words, True, True, speaker="A")))
    assert body["DisplayText"] == "one two three four five" and body["SpeakerId"] == "Guest-1"


def test_without_diarization_a_turn_stays_one_phrase():
    dialect = connected("/speech/universal/v2", phraseDetection={"mode": "Conversation"})
    dialect.receive_bytes(audio("r1", header()))
    [start] = dialect.take_replies()
    dialect.render(start)
    words = spoken(("Are", "A"), ("you", "A"), ("there?", "A"), ("Yes,", "B"), ("I", "B"))
    sent = texts(dialect.render(TurnUpdate(0, 0, words, True, True, speaker="A")))
    assert len(sent) == 1 and sent[0][1]["DisplayText"] == "Are you there? Yes, I"

"""OpenAI Realtime transcription dialect, sans-I/O: client events in, engine events in, wire out.

Each test reads as a short transcript of one connection. Replies to client events are rendered
in the order the session loop queues them (`take_replies()` then the engine's events), exactly as
on a socket. Rendered events are validated with the official SDK's own models.
"""

from __future__ import annotations

import base64
import itertools
import json

import pytest
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionDeltaEvent,
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeErrorEvent,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)
from openai.types.realtime.realtime_transcription_session_create_request import (
    RealtimeTranscriptionSessionCreateRequest,
)

from streamscribe.errors import LocalProtocolError, ProtocolError
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
    SessionStarted,
    SpeechStarted,
    TurnUpdate,
    UpdateConfig,
    Word,
)
from streamscribe.protocols.common import Close, SendJson
from streamscribe.protocols.openai_common import OpenAIError
from streamscribe.protocols.openai_realtime import (
    MESSAGE_BURST,
    RealtimeProtocol,
    parse_handshake,
    session_config,
)
from streamscribe.protocols.openai_realtime_session import (
    MANUAL_SILENCE_MS,
    RealtimeSettings,
    engine_turn,
    parse_session,
)

SDK_MODELS = {
    "session.created": SessionCreatedEvent,
    "session.updated": SessionUpdatedEvent,
    "input_audio_buffer.speech_started": InputAudioBufferSpeechStartedEvent,
    "input_audio_buffer.speech_stopped": InputAudioBufferSpeechStoppedEvent,
    "input_audio_buffer.committed": InputAudioBufferCommittedEvent,
    "conversation.item.input_audio_transcription.delta": (
        ConversationItemInputAudioTranscriptionDeltaEvent
    ),
    "conversation.item.input_audio_transcription.completed": (
        ConversationItemInputAudioTranscriptionCompletedEvent
    ),
    "error": RealtimeErrorEvent,
}

# ------------------------------------------------------------------ helpers


class Connection:
    """A protocol object wired like the session loop wires it, recording what goes out."""

    def __init__(self, beta: bool = False, multilingual: bool = True, clock=None) -> None:
        counter = itertools.count(1)
        kwargs = {"clock": clock} if clock else {}
        self.p = RealtimeProtocol(
            session_config({"intent": "transcription"}),
            beta=beta,
            multilingual=multilingual,
            model_name="tiny.en",
            make_id=lambda prefix: f"{prefix}_{next(counter)}",
            **kwargs,
        )
        self.out: list[dict] = []
        self.closes: list[Close] = []
        self.deliver(SessionStarted("0b7d-42", 1_900_000_000))

    def deliver(self, *events) -> list[dict]:
        sent = []
        for event in events:
            for o in self.p.render(event):
                if isinstance(o, Close):
                    self.closes.append(o)
                else:
                    assert isinstance(o, SendJson)
                    sent.append(json.loads(o.text))  # what the client parses off the wire
        self.out += sent
        return sent

    def send(self, message: dict | str) -> tuple[list, list[dict]]:
        """A client event: the engine commands it became, and the replies rendered at once."""
        text = message if isinstance(message, str) else json.dumps(message)
        commands = self.p.receive_text(text)
        return commands, self.deliver(*self.p.take_replies())

    def append(self, ms: int) -> list:
        pcm = b"\x01\x00" * (24 * ms)
        commands, replies = self.send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
        )
        assert replies == []
        return commands

    def types(self) -> list[str]:
        return [m["type"] for m in self.out]


def validated(message: dict) -> None:
    model = SDK_MODELS.get(message["type"])
    if model is not None:
        model.model_validate(message)  # strict: types the SDK declares


def words(*spec: tuple[str, int, int, bool]) -> tuple[Word, ...]:
    return tuple(Word(t, a, b, 0.9, final) for t, a, b, final in spec)


def turn(order: int, spec, end: bool = False, formatted: bool = False, forced=False) -> TurnUpdate:
    return TurnUpdate(0, order, words(*spec), end, formatted=formatted, forced=forced)


def vad_update(**turn_detection) -> dict:
    return {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {"input": {"turn_detection": turn_detection or None}},
        },
    }


# ------------------------------------------------------------------ handshake and session


def test_handshake_reads_the_dialect_and_a_browser_key():
    ga = parse_handshake({}, [])
    assert (ga.beta, ga.api_key, ga.subprotocol) == (False, None, None)
    beta = parse_handshake({"openai-beta": "realtime=v1"}, [])
    assert beta.beta
    browser = parse_handshake(
        {}, ["realtime", "openai-insecure-api-key.sk-123", "openai-beta.realtime-v1"]
    )
    assert (browser.beta, browser.api_key, browser.subprotocol) == (True, "sk-123", "realtime")


def test_a_conversation_session_is_refused_naming_the_fix():
    with pytest.raises(OpenAIError) as info:
        session_config({"model": "gpt-realtime"})
    assert "intent=transcription" in info.value.message
    assert info.value.body()["code"] == "unsupported_intent"
    config = session_config({"intent": "transcription"})
    assert (config.audio.encoding, config.audio.sample_rate) == ("pcm_s16le", 24000)
    assert config.turn["format_turns"] is True


def test_session_created_is_first_and_parses_as_a_transcription_session():
    c = Connection()
    (created,) = c.out
    validated(created)
    assert created["type"] == "session.created" and created["event_id"] == "event_1"
    session = created["session"]
    assert session["id"] == "sess_0b7d42" and session["expires_at"] == 1_900_000_000
    RealtimeTranscriptionSessionCreateRequest.model_validate(session)
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"


def test_beta_connection_gets_beta_names_and_layout():
    c = Connection(beta=True)
    assert c.out[0]["type"] == "transcription_session.created"
    assert c.out[0]["session"]["input_audio_format"] == "pcm16"
    commands, replies = c.send(
        {
            "type": "transcription_session.update",
            "session": {
                "input_audio_format": "pcm16",
                "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                "turn_detection": None,
            },
        }
    )
    assert [r["type"] for r in replies] == ["transcription_session.updated"]
    session = replies[0]["session"]
    assert session["turn_detection"] is None
    assert session["input_audio_transcription"]["model"] == "gpt-4o-transcribe"
    (update,) = commands
    assert update.changes["min_turn_silence_ms"] == MANUAL_SILENCE_MS


def test_session_update_maps_server_vad_onto_the_engine():
    c = Connection()
    commands, replies = c.send(
        {
            "type": "session.update",
            "event_id": "evt_a",
            "session": {
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {
                            "model": "gpt-4o-transcribe",
                            "language": "en",
                            "prompt": "Stella",
                            "keywords": ["Stella"],
                        },
                        "turn_detection": {
                            "type": "server_vad",
                            "threshold": 0.6,
                            "prefix_padding_ms": 250,
                            "silence_duration_ms": 700,
                        },
                    }
                },
                "include": ["item.input_audio_transcription.logprobs"],
            },
        }
    )
    (update,) = commands
    assert isinstance(update, UpdateConfig)
    assert update.changes == {
        "language": "en",
        "prompt": "Stella",
        "keyterms": ("Stella",),
        "min_turn_silence_ms": 700,
        "max_turn_silence_ms": 1280,
        "vad_threshold": 0.6,
        "pre_roll_ms": 250,
    }
    (updated,) = replies
    validated(updated)
    vad = updated["session"]["audio"]["input"]["turn_detection"]
    assert vad == {
        "type": "server_vad",
        "threshold": 0.6,
        "prefix_padding_ms": 250,
        "silence_duration_ms": 700,
    }
    assert updated["session"]["include"] == ["item.input_audio_transcription.logprobs"]


def test_semantic_vad_eagerness_sets_silence_rules():
    settings = parse_session(
        {"type": "transcription", "audio": {"input": {"turn_detection": {"type": "semantic_vad",
         "eagerness": "high"}}}},
        RealtimeSettings(),
    )  # fmt: skip
    eager = engine_turn(settings)
    relaxed = engine_turn(
        parse_session(
            {"turn_detection": {"type": "semantic_vad", "eagerness": "low"}}, RealtimeSettings()
        )
    )
    assert eager["min_turn_silence_ms"] < relaxed["min_turn_silence_ms"]
    assert eager["max_turn_silence_ms"] < relaxed["max_turn_silence_ms"]


@pytest.mark.parametrize(
    ("session", "param", "code"),
    [
        ({"type": "realtime"}, "session.type", "unsupported_feature"),
        (
            {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
            "session.audio.input.format.rate",
            "invalid_value",
        ),
        (
            {"audio": {"input": {"transcription": {"language": "xx"}}}},
            "session.audio.input.transcription.language",
            "invalid_value",
        ),
        (
            {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}}},
            "session.audio.input.turn_detection.threshold",
            "invalid_value",
        ),
        (
            {"audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5}}}},
            "session.audio.input.turn_detection.idle_timeout_ms",
            "unsupported_feature",
        ),
        ({"audio": {"output": {}}}, "session.audio.output", "unknown_parameter"),
        ({"voice": "alloy"}, "session.voice", "unknown_parameter"),
        (
            {"audio": {"input": {"format": {"type": "audio/pcmu", "rate": 24000}}}},
            "session.audio.input.format.rate",
            "invalid_value",
        ),
        ({"input_audio_format": "opus"}, "session.input_audio_format", "invalid_value"),
        (
            {"audio": {"input": {"noise_reduction": {"type": "studio"}}}},
            "session.audio.input.noise_reduction.type",
            "invalid_value",
        ),
    ],
)
def test_bad_session_updates_answer_an_error_and_change_nothing(session, param, code):
    c = Connection()
    commands, replies = c.send({"type": "session.update", "event_id": "evt_9", "session": session})
    assert commands == []
    (error,) = replies
    validated(error)
    assert error["type"] == "error"
    assert error["error"]["param"] == param and error["error"]["code"] == code
    assert (
        error["error"]["event_id"] == "evt_9" and error["error"]["type"] == "invalid_request_error"
    )
    assert c.p.settings == RealtimeSettings()  # nothing applied
    assert not c.closes  # the session goes on


def test_another_language_on_an_english_only_model_names_the_fix():
    c = Connection(multilingual=False)
    _, (error,) = c.send(
        {"type": "session.update", "session": {"audio": {"input": {"transcription": {
            "language": "de"}}}}}
    )  # fmt: skip
    assert error["error"]["code"] == "model_not_multilingual"
    assert "--model base" in error["error"]["message"] and "tiny.en" in error["error"]["message"]
    _, (ok,) = c.send(
        {"type": "session.update", "session": {"audio": {"input": {"transcription": {
            "language": "en"}}}}}
    )  # fmt: skip
    assert ok["type"] == "session.updated"


# ------------------------------------------------------------------ client events


def test_append_decodes_base64_into_100_ms_pieces():
    c = Connection()
    commands = c.append(250)
    assert [len(cmd.data) for cmd in commands] == [4800, 4800, 2400]
    assert all(isinstance(cmd, RawAudio) for cmd in commands)
    assert b"".join(cmd.data for cmd in commands) == b"\x01\x00" * 6000


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ('{"type": "input_audio_buffer.append", "audio": "not base64!"}', "invalid_audio"),
        ('{"type": "input_audio_buffer.append", "audio": "AAEC"}', "invalid_audio"),  # 3 bytes
        ('{"type": "input_audio_buffer.append"}', "invalid_audio"),
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"type": "response.create"}', "unsupported_event"),
        ('{"type": "input_audio_buffer.flush"}', "invalid_event_type"),
        ('{"type": "input_audio_buffer.commit"}', "input_audio_buffer_commit_empty"),
    ],
)
def test_bad_client_events_get_an_error_event_and_the_session_goes_on(message, code):
    c = Connection()
    commands, replies = c.send(message)
    assert commands == []
    (error,) = replies
    validated(error)
    assert error["error"]["code"] == code and error["error"]["message"]
    assert not c.closes
    assert c.append(100)  # still serving


def test_binary_frames_are_answered_with_an_error_event():
    c = Connection()
    assert c.p.receive_bytes(b"\x00\x00") == []
    (error,) = c.deliver(*c.p.take_replies())
    assert error["type"] == "error" and "base64" in error["error"]["message"]


def test_a_flood_of_events_ends_the_session_with_an_error_and_a_close():
    now = [0.0]
    c = Connection(clock=lambda: now[0])
    for _ in range(MESSAGE_BURST):
        c.p.receive_text('{"type": "input_audio_buffer.clear"}')
    with pytest.raises(ProtocolError) as info:
        c.p.receive_text('{"type": "input_audio_buffer.clear"}')
    assert info.value.kind is ErrorKind.RATE
    sent = c.p.error(info.value)
    assert [o.code for o in sent if isinstance(o, Close)] == [1008]
    assert json.loads(sent[0].text)["error"]["code"] == "rate_limit_exceeded"


# ------------------------------------------------------------------ server VAD


def test_server_vad_item_order_and_append_only_deltas():
    c = Connection()
    c.deliver(SpeechStarted(0, 480))
    c.deliver(turn(0, [("hello", 500, 800, False)]))  # tentative only: no delta
    c.deliver(turn(0, [("hello", 500, 800, True), ("word", 900, 1200, False)]))
    c.deliver(turn(0, [("hello", 500, 800, True), ("world", 900, 1200, False)]))  # revised
    c.deliver(turn(0, [("hello", 500, 800, True), ("world", 900, 1200, True)], end=True))
    c.deliver(turn(0, [("Hello", 500, 800, True), ("world.", 900, 1200, True)], True, True))
    assert c.types()[1:] == [
        "input_audio_buffer.speech_started",
        "conversation.item.input_audio_transcription.delta",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]
    for message in c.out:
        validated(message)
    started, d1, stopped, committed, d2, d3, completed = c.out[1:]
    item = started["item_id"]
    assert started["audio_start_ms"] == 480 and stopped["audio_end_ms"] == 1200
    assert {d1["item_id"], stopped["item_id"], committed["item_id"], completed["item_id"]} == {item}
    assert committed["previous_item_id"] is None
    # the tentative "word" never went out; the formatted turn's full stop is the last delta
    assert (d1["delta"], d2["delta"], d3["delta"]) == ("Hello", " world", ".")
    assert completed["transcript"] == "Hello world." == d1["delta"] + d2["delta"] + d3["delta"]
    assert completed["usage"] == {"type": "duration", "seconds": 0.72}
    assert len({m["event_id"] for m in c.out}) == len(c.out)


def test_items_chain_and_noise_items_end_empty():
    c = Connection()
    c.deliver(SpeechStarted(0, 100))
    c.deliver(turn(0, [("one", 100, 400, True)], end=True))
    c.deliver(turn(0, [("One.", 100, 400, True)], True, True))
    c.deliver(SpeechStarted(0, 2000))  # noise: the engine dropped it, no words came
    c.deliver(SpeechStarted(0, 5000))
    c.deliver(turn(1, [("two", 5000, 5400, True)], end=True))
    c.deliver(turn(1, [("Two.", 5000, 5400, True)], True, True))
    committed = [m for m in c.out if m["type"] == "input_audio_buffer.committed"]
    completed = [m for m in c.out if m["type"].endswith("transcription.completed")]
    assert [m["transcript"] for m in completed] == ["One.", "", "Two."]
    assert [m["item_id"] for m in committed] == [m["item_id"] for m in completed]
    assert committed[1]["previous_item_id"] == committed[0]["item_id"]
    assert committed[2]["previous_item_id"] == committed[1]["item_id"]


def test_logprobs_come_per_word_when_included():
    c = Connection()
    c.send(
        {"type": "session.update", "session": {"include": [
            "item.input_audio_transcription.logprobs"]}}
    )  # fmt: skip
    c.deliver(SpeechStarted(0, 0))
    c.deliver(turn(0, [("hi", 0, 300, True), ("there", 300, 600, True)], end=True))
    c.deliver(turn(0, [("Hi", 0, 300, True), ("there.", 300, 600, True)], True, True))
    delta = next(m for m in c.out if m["type"].endswith(".delta"))
    validated(delta)
    assert [lp["token"] for lp in delta["logprobs"]] == ["hi", " there"]
    assert all(lp["logprob"] < 0 for lp in delta["logprobs"])
    completed = c.out[-1]
    validated(completed)
    assert len(completed["logprobs"]) == 2


# ------------------------------------------------------------------ manual commit


def test_manual_commit_commits_then_completes_at_the_flush():
    c = Connection()
    commands, replies = c.send(vad_update())
    assert commands[0].changes["max_turn_silence_ms"] == MANUAL_SILENCE_MS
    assert replies[0]["session"]["audio"]["input"]["turn_detection"] is None
    c.append(300)
    c.deliver(SpeechStarted(0, 40))  # manual mode: no VAD events go out
    c.deliver(turn(0, [("first", 40, 300, True), ("try", 300, 500, False)]))
    commands, replies = c.send({"type": "input_audio_buffer.commit", "event_id": "evt_c"})
    assert commands == [ForceEndpoint(marker="commit-1")]
    (committed,) = replies
    item = committed["item_id"]
    c.deliver(turn(0, [("first", 40, 300, True), ("try", 300, 500, True)], end=True, forced=True))
    c.deliver(turn(0, [("First", 40, 300, True), ("try.", 300, 500, True)], True, True, True))
    c.deliver(Flushed("commit-1"))
    assert c.types()[2:] == [
        "conversation.item.input_audio_transcription.delta",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert all(m.get("item_id") == item for m in c.out[2:])
    deltas = [m["delta"] for m in c.out if m["type"].endswith(".delta")]
    assert deltas == ["First", " try", "."]
    assert c.out[-1]["transcript"] == "First try." == "".join(deltas)


def test_manual_items_span_engine_turns_until_the_commit():
    c = Connection()
    c.send(vad_update())
    c.append(200)
    c.deliver(turn(0, [("long", 0, 400, True)], end=True))  # the engine's 45 s cap ended a turn
    c.deliver(turn(0, [("Long.", 0, 400, True)], True, True))
    c.deliver(turn(1, [("speech", 500, 900, True)]))
    _, (committed,) = c.send({"type": "input_audio_buffer.commit"})
    c.deliver(turn(1, [("speech", 500, 900, True)], end=True, forced=True))
    c.deliver(turn(1, [("Speech.", 500, 900, True)], True, True, True))
    c.deliver(Flushed("commit-1"))
    completed = c.out[-1]
    assert completed["item_id"] == committed["item_id"]
    assert completed["transcript"] == "Long. Speech."
    deltas = [m["delta"] for m in c.out if m["type"].endswith(".delta")]
    assert deltas == ["Long", ".", " Speech", "."]
    assert "".join(deltas) == completed["transcript"]


def test_deltas_add_up_to_the_completed_transcript_even_when_the_final_decode_differs():
    """The cloud's deltas concatenate to `completed`; a delta is never taken back, so a word the
    final (beam) decode spelled differently stays as it went out."""
    c = Connection()
    c.deliver(SpeechStarted(0, 0))
    c.deliver(turn(0, [("its", 0, 300, True), ("fine", 300, 600, False)]))
    c.deliver(turn(0, [("its", 0, 300, True), ("fine", 300, 600, True)], end=True))
    c.deliver(turn(0, [("It's", 0, 300, True), ("fine?", 300, 600, True)], True, True))
    deltas = [m["delta"] for m in c.out if m["type"].endswith(".delta")]
    completed = c.out[-1]
    assert deltas == ["Its", " fine", "?"]
    assert completed["transcript"] == "".join(deltas) == "Its fine?"


def test_commit_of_silence_completes_an_empty_item():
    c = Connection()
    c.send(vad_update())
    c.append(500)
    commands, (committed,) = c.send({"type": "input_audio_buffer.commit"})
    c.deliver(Flushed(commands[0].marker))
    completed = c.out[-1]
    validated(completed)
    assert completed["item_id"] == committed["item_id"] and completed["transcript"] == ""


def test_clear_discards_the_item_in_progress():
    c = Connection()
    c.send(vad_update())
    c.append(300)
    c.deliver(turn(0, [("oops", 0, 300, True)]))
    commands, replies = c.send({"type": "input_audio_buffer.clear"})
    assert [r["type"] for r in replies] == ["input_audio_buffer.cleared"]
    c.deliver(turn(0, [("oops", 0, 300, True), ("no", 300, 500, True)], end=True, forced=True))
    c.deliver(turn(0, [("Oops, no.", 0, 500, True)], True, True, True))
    c.deliver(Flushed(commands[0].marker))
    after = c.out[c.out.index(replies[0]) + 1 :]
    assert after == []  # nothing more about the cleared item
    # and the buffer is empty: a commit now has nothing to commit
    _, (error,) = c.send({"type": "input_audio_buffer.commit"})
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"


# ------------------------------------------------------------------ ending


def test_a_client_close_ends_quietly_and_a_shutdown_says_why():
    c = Connection()
    assert c.deliver(SessionEnded(1000, 2000, EndReason.CLIENT_GONE)) == []
    assert [x.code for x in c.closes] == [1000]
    s = Connection()
    (error,) = s.deliver(SessionEnded(1000, 2000, EndReason.SHUTDOWN))
    validated(error)
    assert error["error"]["code"] == "server_shutting_down"
    assert [x.code for x in s.closes] == [1001]


@pytest.mark.parametrize(
    ("kind", "close", "code"),
    [
        (ErrorKind.TIMEOUT, 1000, "session_idle_timeout"),
        (ErrorKind.INTERNAL, 1011, "server_error"),
        (ErrorKind.BUSY, 1013, "server_busy"),
        (ErrorKind.AUTH, 1008, "invalid_api_key"),
        (ErrorKind.QUOTA, 1008, "insufficient_quota"),
    ],
)
def test_fatal_errors_render_an_error_event_then_the_close(kind, close, code):
    c = Connection()
    (error,) = c.deliver(Error(kind, "why it ended"))
    validated(error)
    assert error["error"]["code"] == code and error["error"]["message"] == "why it ended"
    assert [x.code for x in c.closes] == [close]
    with pytest.raises(LocalProtocolError, match="in state CLOSED"):
        c.deliver(SessionEnded(0, 0))  # the sender never renders after the close


# ------------------------------------------------------------------ G.711, noise reduction


@pytest.mark.parametrize(
    ("session", "encoding", "ga", "beta"),
    [
        ({"audio": {"input": {"format": {"type": "audio/pcmu"}}}}, "pcm_mulaw", True, False),
        ({"audio": {"input": {"format": {"type": "audio/pcma"}}}}, "pcm_alaw", True, False),
        ({"input_audio_format": "g711_ulaw"}, "pcm_mulaw", False, True),
        ({"input_audio_format": "g711_alaw"}, "pcm_alaw", False, True),
    ],
)
def test_g711_named_after_connect_settles_the_format_before_audio(session, encoding, ga, beta):
    c = Connection(beta=beta)
    kind = "session.update" if ga else "transcription_session.update"
    commands, (updated,) = c.send({"type": kind, "session": session})
    assert commands[0] == AudioFormatSettled(AudioFormat(encoding, 8000, 1))
    assert isinstance(commands[1], UpdateConfig)
    validated(updated)
    if ga:
        assert updated["session"]["audio"]["input"]["format"] == session["audio"]["input"]["format"]
    else:
        assert updated["session"]["input_audio_format"] == session["input_audio_format"]
    law = b"\xd5" * 800  # 100 ms at 8 kHz, one byte a sample
    commands, _ = c.send(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(law).decode()}
    )
    assert commands == [RawAudio(law)]
    commands, replies = c.send({"type": "input_audio_buffer.commit"})  # 100 ms: enough
    assert [r["type"] for r in replies] == ["input_audio_buffer.committed"]


def test_the_format_cannot_change_once_audio_came_but_the_same_format_again_is_fine():
    c = Connection()
    c.append(100)
    pcmu = {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}
    commands, (error,) = c.send({"type": "session.update", "session": pcmu})
    assert commands == [] and error["type"] == "error"
    assert error["error"]["param"] == "session.audio.input.format"
    assert "cannot change once audio has been appended" in error["error"]["message"]
    assert not c.closes  # the session goes on, in PCM
    same = {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}}
    commands, (updated,) = c.send({"type": "session.update", "session": same})
    assert [type(x) for x in commands] == [UpdateConfig] and updated["type"] == "session.updated"


def test_noise_reduction_is_accepted_and_the_session_says_it_is_not_applied():
    c = Connection()
    near = {"audio": {"input": {"noise_reduction": {"type": "near_field"}}}}
    _, (updated,) = c.send({"type": "session.update", "session": near})
    validated(updated)
    assert updated["session"]["audio"]["input"]["noise_reduction"] is None

"""AssemblyAI v2 realtime dialect, sans-I/O: query in, client frames in, events in, frames out.

Each test reads as a short transcript of one connection. Rendered frames are also validated with
the official SDK 0.64.2 models (in a subprocess: the venv's own `assemblyai` is 1.x), which is
what the SDK's reader thread does with every message.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamscribe.errors import LocalProtocolError, ProtocolError
from streamscribe.events import (
    AudioFormat,
    AudioProgress,
    EndReason,
    Error,
    ErrorKind,
    Flushed,
    ForceEndpoint,
    RawAudio,
    SessionConfig,
    SessionEnded,
    SessionStarted,
    SpeechStarted,
    Terminate,
    TurnUpdate,
    UpdateConfig,
    Word,
)
from streamscribe.protocols.assemblyai_v2 import (
    CONTROL_BURST,
    PARTIAL_EVERY_MS,
    STALE_UTTERANCE_MS,
    State,
    V2Options,
    V2Protocol,
    iso,
    parse_options,
    parse_query,
)
from streamscribe.protocols.common import Close, SendJson, coded

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / ".venv" / "sdk" / "assemblyai-0.64.2"
NOW = datetime(2026, 11, 23, 8, 9, 11, 2311, tzinfo=UTC)
CHUNK = b"\x01\x00" * 1600  # 100 ms of 16 kHz pcm_s16le

# ------------------------------------------------------------------ helpers


def query(**params: object) -> dict[str, str]:
    return {"sample_rate": "16000", **{k: str(v) for k, v in params.items()}}


def refused(params: dict[str, str]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_query(params)
    return info.value


def protocol(options: V2Options | None = None, **config: object) -> V2Protocol:
    cfg = parse_query(query(**config))
    return V2Protocol(cfg, options or V2Options(), clock=lambda: 0.0, now=lambda: NOW)


def sent(outgoing: list) -> list[dict]:
    return [o.data for o in outgoing if isinstance(o, SendJson)]


def closes(outgoing: list) -> list[Close]:
    return [o for o in outgoing if isinstance(o, Close)]


def words(*spec: tuple[str, int, int, bool]) -> tuple[Word, ...]:
    return tuple(Word(text, a, b, 0.9, final) for text, a, b, final in spec)


def partial(order: int, *spec: tuple[str, int, int, bool]) -> TurnUpdate:
    return TurnUpdate(0, order, words(*spec), end_of_turn=False)


def final(order: int, *spec: tuple[str, int, int, bool], formatted: bool) -> TurnUpdate:
    return TurnUpdate(0, order, words(*spec), end_of_turn=True, formatted=formatted)


def error_of(p: V2Protocol, frame: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        if isinstance(frame, bytes):
            p.receive_bytes(frame)
        else:
            p.receive_text(frame)
    return info.value


# ------------------------------------------------------------------ query


def test_query_defaults_ask_for_formatted_finals_and_the_partial_clock():
    config = parse_query(query())
    assert config.audio == AudioFormat("pcm_s16le", 16000, 1)
    assert config.turn == {"format_turns": True}
    assert config.progress_interval_ms == PARTIAL_EVERY_MS
    assert parse_options(query()) == V2Options(partials=True, session_information=False)


def test_query_as_the_python_sdk_sends_it():
    # /v2/realtime/ws?sample_rate=16000&word_boost=["foo", "bar"]&encoding=pcm_s16le&...=True
    q = query(
        word_boost='["foo", "bar"]',
        encoding="pcm_mulaw",
        enable_extra_session_information="True",
        disable_partial_transcripts="True",
        token="tk_x",
    )
    config = parse_query(q)
    assert config.audio.encoding == "pcm_mulaw"
    assert config.turn["keyterms"] == ("foo", "bar")
    assert parse_options(q) == V2Options(partials=False, session_information=True)


@pytest.mark.parametrize("value", [None, "0", "-16000", "sixteen", "7999", "96000", "16000.5"])
def test_bad_sample_rate_closes_4000_naming_it(value):
    params = query() if value is None else query(sample_rate=value)
    if value is None:
        del params["sample_rate"]
    err = refused(params)
    assert err.close_code == 4000
    assert "sample_rate" in err.reason


@pytest.mark.parametrize(
    "value", ["[not json", '["ok", 3]', '{"a": 1}', json.dumps(["w"] * 101), json.dumps(["x" * 51])]
)
def test_bad_word_boost_closes_4104(value):
    err = refused(query(word_boost=value))
    assert err.close_code == 4104
    assert "word_boost" in err.reason


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("encoding", "opus"),
        ("disable_partial_transcripts", "maybe"),
        ("enable_extra_session_information", "2"),
    ],
)
def test_other_bad_parameters_close_1008_naming_them(name, value):
    err = refused(query(**{name: value}))
    assert err.close_code == 1008
    assert name in err.reason and "expected" in err.reason


# ------------------------------------------------------------------ client -> server


def test_binary_audio_passes_through_and_an_odd_byte_waits_for_the_next_frame():
    p = protocol()
    assert p.receive_bytes(CHUNK) == [RawAudio(CHUNK)]
    odd = CHUNK + b"\x07"
    assert p.receive_bytes(odd) == [RawAudio(CHUNK)]
    assert p.receive_bytes(b"\x00" + CHUNK[:-1]) == [RawAudio(b"\x07\x00" + CHUNK[:-2])]


def test_short_frames_are_held_until_they_make_10_ms():
    p = protocol()
    ms_5 = b"\x01\x00" * 80
    assert p.receive_bytes(ms_5) == []
    assert p.receive_bytes(ms_5) == [RawAudio(ms_5 * 2)]


def test_a_short_last_frame_before_terminate_session_is_transcribed():
    p = protocol()
    assert p.receive_bytes(CHUNK) == [RawAudio(CHUNK)]
    tail = b"\x02\x00" * 40  # 2.5 ms
    assert p.receive_bytes(tail) == []
    assert p.receive_text('{"terminate_session": true}') == [RawAudio(tail), Terminate()]


def test_a_short_frame_before_force_end_utterance_is_part_of_the_utterance():
    p = protocol()
    tail = b"\x02\x00" * 40
    assert p.receive_bytes(tail) == []
    commands = p.receive_text('{"force_end_utterance": true}')
    assert commands[0] == RawAudio(tail) and isinstance(commands[1], ForceEndpoint)


def test_a_flood_of_short_frames_closes_4032():
    p = protocol()  # the clock stands still: only the burst is allowed
    for _ in range(400):
        p.receive_bytes(b"\x00\x00" * 8)
    with pytest.raises(ProtocolError) as info:
        p.receive_bytes(b"\x00\x00" * 8)
    assert info.value.close_code == 4032
    assert "more than 200 such frames a second" in info.value.reason


def test_base64_audio_data_is_audio_too():
    p = protocol()
    text = json.dumps({"audio_data": base64.b64encode(CHUNK).decode()})
    assert p.receive_text(text) == [RawAudio(CHUNK)]


@pytest.mark.parametrize(
    ("frame", "code", "needle"),
    [
        (b"", 4032, "too short"),  # no audio at all
        (b"\x00\x00" * 16000 * 3, 4033, "too long"),  # 3 s
        ('{"audio_data": "%%%"}', 4101, "base64"),
        ('{"audio_data": 5}', 4101, "base64"),
        ("not json", 4100, "Invalid JSON"),
        ("[1, 2]", 4101, "not a JSON object"),
        ("{}", 4101, "unknown field"),
        ('{"message_type": "Hello"}', 4101, "message_type"),
        ('{"force_end_utterance": "yes"}', 4101, "force_end_utterance"),
        ('{"terminate_session": 1}', 4101, "terminate_session"),
        ('{"end_utterance_silence_threshold": 500.5}', 4101, "end_utterance_silence_threshold"),
        ('{"end_utterance_silence_threshold": true}', 4101, "end_utterance_silence_threshold"),
        ('{"end_utterance_silence_threshold": "500"}', 4101, "end_utterance_silence_threshold"),
        ('{"end_utterance_silence_threshold": 20001}', 4101, "0 to 20000"),
        ('{"end_utterance_silence_threshold": -1}', 4101, "0 to 20000"),
        ('{"end_utterance_silence_threshold": 1' + "0" * 4000 + "}", 4101, "milliseconds"),
    ],
)
def test_bad_frames_get_the_v2_close_code_and_a_reason_naming_the_fix(frame, code, needle):
    err = error_of(protocol(), frame)
    assert err.close_code == code
    assert needle in err.reason
    assert len(err.reason) < 300


def test_text_frames_are_bounded_by_the_longest_audio_frame():
    p = protocol()
    assert p.max_text_chars > len(base64.b64encode(b"\x00" * 64000))  # 2 s of 16 kHz audio
    err = error_of(p, "x" * (p.max_text_chars + 1))
    assert err.close_code == 4101 and "text frame" in err.reason


def test_force_end_utterance_is_a_marked_force_endpoint():
    p = protocol()
    [command] = p.receive_text('{"force_end_utterance": true}')
    assert isinstance(command, ForceEndpoint) and command.channel is None
    assert command.marker
    assert p.receive_text('{"force_end_utterance": false}') == []


def test_silence_threshold_sets_both_ends_of_the_engine_rule():
    p = protocol()
    assert p.receive_text('{"end_utterance_silence_threshold": 700}') == [
        UpdateConfig({"min_turn_silence_ms": 700, "max_turn_silence_ms": 700})
    ]
    assert p.receive_text('{"end_utterance_silence_threshold": 0}') == [
        UpdateConfig({"min_turn_silence_ms": 0, "max_turn_silence_ms": 0})
    ]


def test_terminate_session_stops_parsing_everything_after_it():
    p = protocol()
    assert p.receive_text('{"terminate_session": false}') == []
    assert p.receive_text('{"terminate_session": true}') == [Terminate()]
    assert p.state is State.TERMINATING
    assert p.receive_bytes(CHUNK) == []
    assert p.receive_text("not even json") == []


def test_control_messages_are_rate_limited_but_audio_data_is_not():
    p = protocol()  # the clock stands still: no tokens come back
    audio = json.dumps({"audio_data": base64.b64encode(CHUNK).decode()})
    for _ in range(CONTROL_BURST * 2):
        p.receive_text(audio)
    for _ in range(CONTROL_BURST):
        p.receive_text('{"end_utterance_silence_threshold": 500}')
    err = error_of(p, '{"end_utterance_silence_threshold": 500}')
    assert err.close_code == 4029 and err.kind is ErrorKind.RATE


# ------------------------------------------------------------------ server -> client


def test_session_begins_carries_a_uuid4_and_an_iso_expiry():
    sid = str(uuid.uuid4())
    [msg] = sent(protocol().render(SessionStarted(sid, 1_795_000_000)))
    assert msg == {
        "message_type": "SessionBegins",
        "session_id": sid,
        "expires_at": iso(datetime.fromtimestamp(1_795_000_000, UTC)),
    }
    assert datetime.fromisoformat(msg["expires_at"]).year == 2026


def test_partials_then_one_formatted_final_per_utterance():
    p = protocol()
    [first] = sent(p.render(partial(0, ("hello", 120, 480, True), ("world", 520, 900, False))))
    assert first == {
        "message_type": "PartialTranscript",
        "audio_start": 0,
        "audio_end": 900,
        "confidence": 0.9,
        "text": "hello world",
        "words": [
            {"start": 120, "end": 480, "confidence": 0.9, "text": "hello"},
            {"start": 520, "end": 900, "confidence": 0.9, "text": "world"},
        ],
        "created": "2026-11-23T08:09:11.002311",
    }
    assert (
        p.render(final(0, ("hello", 120, 480, True), ("world", 520, 900, True), formatted=False))
        == []
    )
    [fin] = sent(
        p.render(final(0, ("Hello", 120, 480, True), ("world.", 520, 950, True), formatted=True))
    )
    assert fin["message_type"] == "FinalTranscript"
    assert fin["text"] == "Hello world."
    assert (fin["audio_start"], fin["audio_end"]) == (0, 950)
    assert fin["punctuated"] is True and fin["text_formatted"] is True
    # the next utterance starts where this one ended
    [nxt] = sent(p.render(partial(1, ("again", 2000, 2300, False))))
    assert nxt["audio_start"] == 950


def test_empty_partials_on_the_audio_clock_between_utterances_only():
    p = protocol()
    [empty] = sent(p.render(AudioProgress(500)))
    assert (empty["text"], empty["words"], empty["confidence"]) == ("", [], 0.0)
    assert (empty["audio_start"], empty["audio_end"]) == (0, 500)
    p.render(partial(0, ("hi", 600, 800, False)))
    assert p.render(AudioProgress(1000)) == []  # an utterance is in progress
    p.render(final(0, ("Hi.", 600, 800, True), formatted=True))
    [after] = sent(p.render(AudioProgress(1500)))
    assert (after["text"], after["audio_start"], after["audio_end"]) == ("", 800, 1500)


def test_partials_audio_end_never_goes_back():
    p = protocol()
    ends = []
    for event in (AudioProgress(1000), partial(0, ("hi", 600, 800, False)), AudioProgress(1500)):
        ends += [m["audio_end"] for m in sent(p.render(event))]
    assert ends == sorted(ends) and ends[0] == 1000


def test_an_utterance_that_never_ends_gives_way_to_empty_partials():
    """Words shown but no final (the final decode found nothing): silence is silence again."""
    p = protocol()
    p.render(AudioProgress(500))
    p.render(partial(0, ("um", 600, 800, False)))
    assert p.render(AudioProgress(500 + STALE_UTTERANCE_MS - 1)) == []
    [empty] = sent(p.render(AudioProgress(600 + STALE_UTTERANCE_MS)))
    assert empty["text"] == ""


def test_disable_partial_transcripts_sends_finals_only():
    p = protocol(V2Options(partials=False))
    assert p.render(AudioProgress(500)) == []
    assert p.render(partial(0, ("hi", 0, 300, False))) == []
    assert sent(p.render(final(0, ("Hi.", 0, 300, True), formatted=True)))[0]["text"] == "Hi."


def test_force_end_utterance_with_nothing_to_end_gets_an_empty_final():
    p = protocol()
    [force] = p.receive_text('{"force_end_utterance": true}')
    p.render(AudioProgress(1000))
    [fin] = sent(p.render(Flushed(force.marker)))
    assert fin["message_type"] == "FinalTranscript" and fin["text"] == ""
    assert fin["audio_end"] == 1000


def test_force_end_utterance_that_ended_an_utterance_gets_that_final_only():
    p = protocol()
    p.render(partial(0, ("hi", 0, 300, False)))
    [force] = p.receive_text('{"force_end_utterance": true}')
    assert sent(p.render(final(0, ("Hi.", 0, 300, True), formatted=True)))
    assert p.render(Flushed(force.marker)) == []
    assert p.render(Flushed("someone-else")) == []


def test_speech_started_has_no_v2_message():
    assert protocol().render(SpeechStarted(0, 100)) == []


def test_end_information_then_terminated_then_close_1000():
    p = protocol(V2Options(session_information=True))
    out = p.render(SessionEnded(audio_ms=1530, session_ms=2000))
    assert sent(out) == [
        {"message_type": "SessionInformation", "audio_duration_seconds": 1.53},
        {"message_type": "SessionTerminated"},
    ]
    assert closes(out) == [Close(1000)]
    assert p.state is State.CLOSED
    with pytest.raises(LocalProtocolError, match="AssemblyAI v2: tried to render"):
        p.render(partial(1, ("late", 0, 1, False)))


def test_end_without_information_and_on_shutdown():
    out = protocol().render(SessionEnded(1000, 1000))
    assert sent(out) == [{"message_type": "SessionTerminated"}]
    out = protocol().render(SessionEnded(1000, 1000, EndReason.SHUTDOWN))
    assert closes(out)[0].code == 1001


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (ErrorKind.AUTH, 4001),
        (ErrorKind.EXPIRED, 4008),
        (ErrorKind.TIMEOUT, 4031),
        (ErrorKind.LIMIT, 4102),
        (ErrorKind.QUOTA, 4002),
        (ErrorKind.RATE, 4029),
        (ErrorKind.BUSY, 1013),
        (ErrorKind.INTERNAL, 1011),
    ],
)
def test_errors_send_the_reason_then_close_with_the_v2_code(kind, code):
    p = protocol()
    out = p.render(Error(kind, "what went wrong and the fix"))
    assert sent(out) == [{"error": "what went wrong and the fix"}]
    assert closes(out) == [Close(code, "what went wrong and the fix")]
    assert p.error(ProtocolError(kind, "again")) == []  # one close only


def test_a_dialect_code_wins_over_the_kind():
    out = protocol().error(coded(ErrorKind.BAD_REQUEST, "x" * 500, 4104))
    [close] = closes(out)
    assert close.code == 4104 and len(close.reason.encode()) <= 123


# ------------------------------------------------------------------ the SDK's own models


@pytest.mark.skipif(not SDK.exists(), reason="the AssemblyAI 0.64.2 SDK is not installed (make)")
def test_every_message_passes_the_sdk_0_64_2_models():
    p = protocol(V2Options(session_information=True))
    out = []
    out += p.render(SessionStarted(str(uuid.uuid4()), 1_795_000_000))
    out += p.render(AudioProgress(500))
    out += p.render(partial(0, ("hi", 600, 800, False)))
    out += p.render(final(0, ("Hi.", 600, 800, True), formatted=True))
    [force] = p.receive_text('{"force_end_utterance": true}')
    out += p.render(Flushed(force.marker))
    out += p.render(SessionEnded(2000, 2500))
    messages = sent(out)
    assert [m.get("message_type") for m in messages] == [
        "SessionBegins",
        "PartialTranscript",
        "PartialTranscript",
        "FinalTranscript",
        "FinalTranscript",
        "SessionInformation",
        "SessionTerminated",
    ]
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "drivers" / "aai_v2_validate.py")],
        input=json.dumps(messages),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(SDK)},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [None] * len(messages)


@pytest.mark.skipif(not SDK.exists(), reason="the AssemblyAI 0.64.2 SDK is not installed (make)")
def test_the_sdk_models_would_catch_a_wrong_type():
    """The check above can fail: a float time or a uuid1 session id is refused."""
    bad = [
        {
            "message_type": "SessionBegins",
            "session_id": str(uuid.uuid1()),
            "expires_at": "2026-11-23T08:09:10",
        },
        {
            "message_type": "PartialTranscript",
            "audio_start": 0.5,
            "audio_end": 1,
            "confidence": 0,
            "text": "",
            "words": [],
            "created": "2026-11-23T08:09:10",
        },
    ]
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "drivers" / "aai_v2_validate.py")],
        input=json.dumps(bad),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(SDK)},
    )
    assert all(json.loads(result.stdout)), result.stdout


def test_config_is_a_plain_session_config():
    assert isinstance(parse_query(query()), SessionConfig)


def test_the_code_this_dialect_raised_survives_the_trip_through_the_session_loop():
    """The session loop hands a ProtocolError from receive_* back to `error()`: its code stays."""
    p = protocol()
    err = error_of(p, b"\x00\x00" * 48000)  # 3 s: too long
    assert closes(p.error(err)) == [Close(4033, err.reason)]


# ------------------------------------------------------------------ any input at all

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["audio_data", "force_end_utterance", "end_utterance_silence_threshold", "terminate_session"]
)
V2_CODES = frozenset({1008, 4000, 4029, 4032, 4033, 4100, 4101, 4104})


def check(exc: BaseException) -> None:
    assert isinstance(exc, ProtocolError), f"{type(exc).__name__}: {exc!r}"[:300]
    assert exc.close_code in V2_CODES and exc.reason.strip()
    exc.reason.encode("utf-8")
    for out in protocol().error(exc):
        if isinstance(out, SendJson):
            out.text.encode("utf-8")
        else:
            assert len(out.reason.encode("utf-8")) <= 123


@PROPERTY
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "sample_rate",
                "encoding",
                "word_boost",
                "disable_partial_transcripts",
                "enable_extra_session_information",
            ]
        )
        | st.text(max_size=8),
        st.text(max_size=40),
        max_size=5,
    )
)
def test_any_query_gives_a_config_or_a_protocol_error(params):
    try:
        parse_query(params)
        parse_options(params)
    except Exception as exc:  # noqa: BLE001 - the property is about what escapes
        check(exc)


@PROPERTY
@given(
    st.one_of(
        JSON.map(json.dumps),
        st.dictionaries(FIELDS, JSON, min_size=1, max_size=3).map(json.dumps),
        st.text(max_size=200),
    )
)
@example('{"end_utterance_silence_threshold": 1e999}')
@example('{"\\ud800": true}')
@example('{"audio_data": "AAAA\\n"}')
def test_any_text_frame_gives_commands_or_a_protocol_error(text):
    try:
        protocol().receive_text(text)
    except Exception as exc:  # noqa: BLE001
        check(exc)


@PROPERTY
@given(st.binary(max_size=70_000))
def test_any_binary_frame_gives_audio_or_a_protocol_error(data):
    try:
        commands = protocol().receive_bytes(data)
    except Exception as exc:  # noqa: BLE001
        check(exc)
        return
    assert all(isinstance(c, RawAudio) and len(c.data) % 2 == 0 for c in commands)

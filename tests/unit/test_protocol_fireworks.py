"""Fireworks streaming dialect, sans-I/O: query in, client frames in, events in, frames out.

Each test reads as a short transcript of one connection; the client-side rules the protocol
document lists (integer segment ids, `word` and `is_final` on every word, the last word of the
last segment deciding finality, barrier echoes as messages of their own) are asserted as such.
"""

from __future__ import annotations

import json

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
    SessionEnded,
    SessionStarted,
    SpeechStarted,
    Terminate,
    TurnUpdate,
    Word,
)
from streamscribe.protocols.common import Close, SendJson
from streamscribe.protocols.fireworks import (
    CONTROL_BURST,
    MAX_CHUNK_BYTES,
    FireworksOptions,
    FireworksProtocol,
    State,
    http_error,
    parse_options,
    parse_query,
)

CHUNK = b"\x01\x00" * 800  # 50 ms of 16 kHz PCM16, as the cookbook sends

# ------------------------------------------------------------------ helpers


def refused(pairs) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_query(pairs)
    return info.value


def protocol(options: FireworksOptions | None = None) -> FireworksProtocol:
    return FireworksProtocol(parse_query({}), options or FireworksOptions(), clock=lambda: 0.0)


def sent(outgoing: list) -> list[dict]:
    return [o.data for o in outgoing if isinstance(o, SendJson)]


def closes(outgoing: list) -> list[Close]:
    return [o for o in outgoing if isinstance(o, Close)]


def words(*spec: tuple[str, int, int, bool]) -> tuple[Word, ...]:
    return tuple(Word(text, a, b, 0.8, final) for text, a, b, final in spec)


def partial(order: int, *spec) -> TurnUpdate:
    return TurnUpdate(0, order, words(*spec), end_of_turn=False)


def ended(order: int, *spec, formatted: bool) -> TurnUpdate:
    return TurnUpdate(0, order, words(*spec), end_of_turn=True, formatted=formatted)


def barrier(p: FireworksProtocol, message: dict) -> list:
    return p.receive_text(json.dumps(message))


def error_of(p: FireworksProtocol, frame: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        if isinstance(frame, bytes):
            p.receive_bytes(frame)
        else:
            p.receive_text(frame)
    return info.value


# ------------------------------------------------------------------ query


def test_defaults_16k_pcm16_mono_with_formatted_segments():
    config = parse_query({})
    assert config.audio == AudioFormat("pcm_s16le", 16000, 1)
    assert config.turn == {"format_turns": True}
    assert config.progress_interval_ms is None
    assert parse_options({}) == FireworksOptions(False, False, None)


def test_the_livekit_plugin_query_is_accepted():
    pairs = [
        ("language", "en"),
        ("text_timeout_seconds", "1.0"),
        ("max_retries", "1"),
        ("response_format", "verbose_json"),
        ("skip_vad", "False"),
        ("vad_kwargs", '{"threshold": 0.15}'),
        ("model", "fireworks-asr-large"),
        ("Authorization", "sk-secret"),
        ("something_new", "x"),
    ]
    config = parse_query(pairs)
    assert config.turn == {
        "format_turns": True,
        "language": "en",
        "vad_threshold": 0.15,
        "max_turn_silence_ms": 1000,
        "min_turn_silence_ms": 400,
    }
    assert config.model == "fireworks-asr-large"
    assert "sk-secret" not in json.dumps(config.turn)


def test_language_and_prompt_reach_the_engine():
    config = parse_query({"language": "EN", "prompt": "Stella, station."})
    assert config.turn["language"] == "en"
    assert config.turn["prompt"] == "Stella, station."
    assert parse_options({"language": "en"}).language == "en"


@pytest.mark.parametrize(
    "pairs",
    [
        [("timestamp_granularities", "word"), ("timestamp_granularities", "segment")],
        [("timestamp_granularities", "word,segment")],
        [("timestamp_granularities[]", "segment"), ("timestamp_granularities[]", "word")],
    ],
)
def test_timestamp_granularities_repeated_or_comma_separated(pairs):
    assert parse_options(pairs) == FireworksOptions(True, True, None)


def test_one_granularity_only():
    assert parse_options({"timestamp_granularities": "word"}) == FireworksOptions(True, False)


@pytest.mark.parametrize(
    ("pairs", "needle"),
    [
        ({"language": "klingon"}, "language"),
        ({"temperature": "hot"}, "temperature"),
        ({"response_format": "srt"}, "response_format"),
        ({"skip_vad": "true"}, "skip_vad"),
        ({"skip_vad": "perhaps"}, "skip_vad"),
        ({"vad_kwargs": "{not json"}, "vad_kwargs"),
        ({"vad_kwargs": "[1]"}, "vad_kwargs"),
        ({"vad_kwargs": '{"min_silence_duration_ms": 300}'}, "min_silence_duration_ms"),
        ({"vad_kwargs": '{"threshold": 2}'}, "threshold"),
        ({"text_timeout_seconds": "0.1"}, "text_timeout_seconds"),
        ({"text_timeout_seconds": "60"}, "text_timeout_seconds"),
        ({"max_retries": "99"}, "max_retries"),
        ({"sample_rate": "8000"}, "16000"),
        ({"timestamp_granularities": "word,char"}, "timestamp_granularities"),
        ({"prompt": "x" * 4001}, "prompt"),
    ],
)
def test_bad_or_unbuilt_parameters_are_refused_by_name(pairs, needle):
    err = refused(pairs)
    assert err.kind is ErrorKind.BAD_REQUEST
    assert needle in err.reason
    status, body = http_error(err)
    assert status == 400
    assert body == {"error": {"message": err.reason, "type": "invalid_request_error", "code": 400}}


def test_zero_temperature_is_what_we_do_anyway():
    assert "temperature" not in parse_query({"temperature": "0"}).turn


def test_a_sampling_temperature_is_accepted_and_decoding_stays_deterministic():
    assert parse_query({"temperature": "0.2"}) == parse_query({})


@pytest.mark.parametrize(
    ("kind", "status"),
    [(ErrorKind.AUTH, 401), (ErrorKind.LIMIT, 429), (ErrorKind.QUOTA, 402), (ErrorKind.BUSY, 503)],
)
def test_refusals_before_the_upgrade_are_http_errors(kind, status):
    got, body = http_error(ProtocolError(kind, "why"))
    assert got == status and body["error"]["message"] == "why"


# ------------------------------------------------------------------ client -> server


def test_audio_passes_through_and_an_odd_byte_waits_for_the_next_frame():
    p = protocol()
    assert p.receive_bytes(CHUNK) == [RawAudio(CHUNK)]
    assert p.receive_bytes(CHUNK + b"\x05") == [RawAudio(CHUNK)]
    assert p.receive_bytes(b"\x00") == [RawAudio(b"\x05\x00")]
    assert p.receive_bytes(b"") == []


def test_a_frame_far_longer_than_a_live_chunk_closes_1009():
    err = error_of(protocol(), b"\x00" * (MAX_CHUNK_BYTES + 2))
    assert err.close_code == 1009 and "ms" in err.reason


def test_checkpoint_is_a_marked_force_endpoint():
    p = protocol()
    [force] = barrier(p, {"checkpoint_id": "one"})
    assert isinstance(force, ForceEndpoint) and force.marker and force.channel is None
    assert p.state is State.OPEN


def test_the_final_checkpoint_flushes_then_ends_and_nothing_after_counts():
    p = protocol()
    force, end = barrier(p, {"checkpoint_id": "final"})
    assert isinstance(force, ForceEndpoint) and end == Terminate()
    assert p.state is State.FINISHING
    assert p.receive_bytes(CHUNK) == []
    assert p.receive_text("not json") == []


def test_the_final_trace_ends_the_stream_too():
    p = protocol()
    commands = barrier(p, {"event_id": "e", "object": "stt.input.trace", "trace_id": "final"})
    assert commands[-1] == Terminate()


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ("not json", "Invalid JSON"),
        ('"final"', "not a JSON object"),
        ('{"checkpoint_id": null}', "checkpoint_id"),
        ('{"checkpoint_id": ["a"]}', "checkpoint_id"),
        ('{"checkpoint_id": ""}', "checkpoint_id"),
        ('{"checkpoint_id": "' + "x" * 300 + '"}', "checkpoint_id"),
        ('{"object": "stt.input.trace"}', "trace_id"),
        ('{"object": "stt.input.trace", "trace_id": 5}', "trace_id"),
        ('{"object": "stt.state.clear", "reset_id": "r", "event_id": 3}', "event_id"),
        ('{"object": "stt.dance"}', "stt.dance"),
        ('{"type": "Finalize"}', "missing"),
        ("{" * 100_000, "text frame"),
    ],
)
def test_bad_messages_close_1003_with_a_reason(frame, needle):
    err = error_of(protocol(), frame)
    assert err.close_code == 1003
    assert needle in err.reason
    assert len(err.reason) < 300


def test_text_messages_are_rate_limited():
    p = protocol()
    for i in range(CONTROL_BURST):
        barrier(p, {"checkpoint_id": f"c{i}"})
    err = error_of(p, '{"checkpoint_id": "one too many"}')
    assert err.close_code == 1008 and err.kind is ErrorKind.RATE


# ------------------------------------------------------------------ server -> client


def test_partial_update_is_the_whole_segment_list_with_a_tentative_last_word():
    p = protocol()
    [msg] = sent(p.render(partial(0, ("hello", 100, 400, True), ("world", 450, 800, True))))
    assert msg == {
        "task": "transcribe",
        "language": "en",
        "text": "hello world",
        "words": msg["segments"][0]["words"],
        "segments": [
            {
                "id": 0,
                "text": "hello world",
                "words": [
                    {
                        "word": "hello",
                        "language": "en",
                        "probability": 0.8,
                        "hallucination_score": 0.0,
                        "is_final": True,
                    },
                    {
                        "word": "world",
                        "language": "en",
                        "probability": 0.8,
                        "hallucination_score": 0.0,
                        "is_final": False,  # the segment is not done until its turn ends
                    },
                ],
            }
        ],
    }


def test_segments_are_revised_by_id_and_old_ones_are_always_re_sent():
    p = protocol()
    p.render(partial(0, ("hello", 100, 400, False)))
    assert p.render(ended(0, ("hello", 100, 400, True), formatted=False)) == []
    [done] = sent(p.render(ended(0, ("Hello.", 100, 420, True), formatted=True)))
    assert done["segments"][0]["text"] == "Hello."
    assert all(w["is_final"] for w in done["segments"][0]["words"])
    [later] = sent(p.render(partial(1, ("and", 900, 1000, False))))
    assert [s["id"] for s in later["segments"]] == [0, 1]
    assert all(type(s["id"]) is int for s in later["segments"])
    assert later["text"] == "Hello. and"
    assert later["segments"][0] == done["segments"][0]
    last = later["segments"][-1]["words"][-1]
    assert last["is_final"] is False  # interim, by the LiveKit plugin's rule


def test_times_in_seconds_only_with_granularities():
    update = partial(0, ("hi", 1234, 1500, False))
    [plain] = sent(protocol().render(update))
    assert "start" not in plain["segments"][0] and "start" not in plain["words"][0]
    [timed] = sent(protocol(FireworksOptions(True, True)).render(update))
    assert timed["segments"][0]["start"] == 1.234 and timed["segments"][0]["end"] == 1.5
    assert timed["words"][0]["start"] == 1.234 and timed["words"][0]["end"] == 1.5
    [words_only] = sent(protocol(FireworksOptions(True, False)).render(update))
    assert "start" in words_only["words"][0] and "start" not in words_only["segments"][0]


def test_language_follows_the_engine_then_the_query():
    p = protocol(FireworksOptions(language="de"))
    [msg] = sent(p.render(partial(0, ("hallo", 0, 300, False))))
    assert msg["language"] == "de" and msg["words"][0]["language"] == "de"
    update = TurnUpdate(0, 0, words(("Hallo.", 0, 300, True)), True, True, language="fr")
    [msg] = sent(p.render(update))
    assert msg["language"] == "fr"


def test_checkpoint_echo_is_its_own_message_after_the_flush():
    p = protocol()
    [force] = barrier(p, {"checkpoint_id": 7})
    assert p.render(Flushed("not-ours")) == []
    assert sent(p.render(Flushed(force.marker))) == [{"checkpoint_id": 7}]
    assert p.render(Flushed(force.marker)) == []  # echoed once


def test_trace_echo_copies_the_event_id():
    p = protocol()
    [force] = barrier(p, {"event_id": "ev1", "object": "stt.input.trace", "trace_id": "t"})
    assert sent(p.render(Flushed(force.marker))) == [
        {"event_id": "ev1", "object": "stt.output.trace", "trace_id": "t"}
    ]


def test_state_clear_starts_a_fresh_segment_list():
    p = protocol()
    p.render(ended(0, ("Before.", 0, 300, True), formatted=True))
    [force] = barrier(p, {"event_id": "ev2", "object": "stt.state.clear", "reset_id": "r1"})
    assert sent(p.render(Flushed(force.marker))) == [
        {"event_id": "ev2", "object": "stt.state.cleared", "reset_id": "r1"}
    ]
    [msg] = sent(p.render(partial(1, ("after", 900, 1200, False))))
    assert [s["id"] for s in msg["segments"]] == [1]  # ids keep counting, old text is gone
    assert msg["text"] == "after"


def test_events_without_a_fireworks_message():
    p = protocol()
    for event in (SessionStarted("id", 0), SpeechStarted(0, 10), AudioProgress(500)):
        assert p.render(event) == []


def test_end_closes_1000_and_shutdown_1001():
    p = protocol()
    assert p.render(SessionEnded(1000, 1000)) == [Close(1000)]
    assert p.state is State.CLOSED
    with pytest.raises(LocalProtocolError, match="render an event in state CLOSED"):
        p.render(partial(0, ("late", 0, 1, False)))  # the sender stops after the close
    [close] = protocol().render(SessionEnded(1000, 1000, EndReason.SHUTDOWN))
    assert close.code == 1001


@pytest.mark.parametrize(
    ("kind", "code", "kind_name"),
    [
        (ErrorKind.BAD_REQUEST, 1003, "invalid_request_error"),
        (ErrorKind.TIMEOUT, 1008, "timeout"),
        (ErrorKind.EXPIRED, 1008, "session_expired"),
        (ErrorKind.BUSY, 1013, "server_busy"),
        (ErrorKind.INTERNAL, 1011, "server_error"),
        (ErrorKind.QUOTA, 1008, "payment_required"),
    ],
)
def test_errors_send_the_error_object_then_close(kind, code, kind_name):
    p = protocol()
    out = p.render(Error(kind, "what went wrong"))
    assert sent(out) == [{"error": {"message": "what went wrong", "type": kind_name, "code": code}}]
    assert closes(out) == [Close(code, "what went wrong")]
    assert p.error(ProtocolError(kind, "again")) == []


def test_the_code_this_dialect_raised_survives_the_trip_through_the_session_loop():
    p = protocol()
    err = error_of(p, b"\x00" * (MAX_CHUNK_BYTES + 2))
    assert closes(p.error(err)) == [Close(1009, err.reason)]


# ------------------------------------------------------------------ any input at all

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [
        "language",
        "prompt",
        "temperature",
        "response_format",
        "timestamp_granularities",
        "skip_vad",
        "vad_kwargs",
        "text_timeout_seconds",
        "max_retries",
        "sample_rate",
        "model",
    ]
)


def check(exc: BaseException, codes: frozenset[int]) -> None:
    assert isinstance(exc, ProtocolError), f"{type(exc).__name__}: {exc!r}"[:300]
    assert exc.close_code in codes and exc.reason.strip()
    exc.reason.encode("utf-8")
    for out in protocol().error(exc):
        if isinstance(out, SendJson):
            out.text.encode("utf-8")
        else:
            assert len(out.reason.encode("utf-8")) <= 123


@PROPERTY
@given(st.lists(st.tuples(KEYS | st.text(max_size=8), st.text(max_size=40)), max_size=6))
def test_any_query_gives_a_config_or_a_protocol_error(pairs):
    try:
        parse_query(pairs)
        parse_options(pairs)
    except Exception as exc:  # noqa: BLE001 - the property is about what escapes
        check(exc, frozenset({1003}))


@PROPERTY
@given(st.one_of(JSON.map(json.dumps), st.text(max_size=200)))
@example('{"checkpoint_id": "\\ud800"}')
@example('{"object": "stt.input.trace", "trace_id": "x", "event_id": "\\udfff"}')
@example("[" * 50_000)
def test_any_text_frame_gives_commands_or_a_protocol_error(text):
    p = protocol()
    try:
        commands = p.receive_text(text)
    except Exception as exc:  # noqa: BLE001
        check(exc, frozenset({1003, 1008}))
        return
    for command in commands:
        if isinstance(command, ForceEndpoint):
            for out in p.render(Flushed(command.marker)):
                out.text.encode("utf-8")  # the echo goes out as valid UTF-8

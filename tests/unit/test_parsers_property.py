"""Property tests for every parser of client input: whatever arrives, a checked result or a
`ProtocolError` with the dialect's close code and a reason that fits a close frame — never any
other exception (which the session loop would turn into a 3005 "server error" and a log trace).

Parsers under test: `assemblyai_v3.parse_query`, `parse_update`, `V3Protocol.receive_text`,
`V3Protocol.receive_bytes` and `common.QueryReader`. Hypothesis generates the bulk; the named
cases are the classic bombs (deep nesting, 10^5-digit numbers, NaN/Infinity, 1e999, lone
surrogates, non-object JSON), pinned so they run on every test run whatever Hypothesis draws.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamscribe.errors import ProtocolError
from streamscribe.events import (
    ForceEndpoint,
    KeepAlive,
    RawAudio,
    SessionConfig,
    Terminate,
    UpdateConfig,
)
from streamscribe.protocols import assemblyai_v3 as v3
from streamscribe.protocols.common import (
    WHISPER_LANGUAGES,
    Close,
    QueryReader,
    RateLimit,
    SendJson,
    close_reason,
    loads_json,
)

# the 2-core machine may be busy with a benchmark: no per-example deadline
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ the contract


def check_error(exc: BaseException, codes: frozenset[int] = frozenset({3006, 3007})) -> None:
    """A refusal the session loop can send as is: Error message + close frame."""
    assert isinstance(exc, ProtocolError), f"{type(exc).__name__}: {exc!r}"[:300]
    assert exc.close_code in codes, (exc.close_code, exc.reason)
    assert exc.reason.strip(), "empty reason"
    exc.reason.encode("utf-8")  # valid UTF-8: no lone surrogate from the client's text
    reason = close_reason(exc.reason)
    assert 0 < len(reason.encode("utf-8")) <= 123
    # and the dialect renders it: an Error frame that encodes, then the close
    out = v3.V3Protocol(SessionConfig()).error(exc)
    assert isinstance(out[0], SendJson) and isinstance(out[-1], Close)
    assert json.loads(out[0].text.encode("utf-8"))["error_code"] == exc.close_code
    assert out[-1].code == exc.close_code and len(out[-1].reason.encode("utf-8")) <= 123


def outcome(fn, *args):
    """fn(*args), or the exception it raised (checked by the caller)."""
    try:
        return fn(*args), None
    except Exception as exc:  # noqa: BLE001 - the point is to catch anything
        return None, exc


def finite_in(value, lo, hi) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and lo <= value <= hi
    )


def check_turn_settings(turn: dict) -> None:
    """Engine turn settings as the engine can take them: right types, finite, in range."""
    for name, value in turn.items():
        if name in ("min_turn_silence_ms", "max_turn_silence_ms"):
            assert type(value) is int and finite_in(value, 0, 60000), (name, value)
        elif name in ("end_of_turn_confidence_threshold", "vad_threshold"):
            assert type(value) is float and finite_in(value, 0.0, 1.0), (name, value)
        elif name in ("format_turns", "translate"):
            assert type(value) is bool
        elif name == "keyterms":
            assert type(value) is tuple and len(value) <= v3.MAX_KEYTERMS
            assert all(type(k) is str and len(k) <= v3.MAX_KEYTERM_CHARS for k in value)
        elif name == "prompt":
            assert type(value) is str and len(value) <= v3.MAX_PROMPT_CHARS
        elif name == "language":  # None: an update that unpins it (detect again)
            assert value is None or value in WHISPER_LANGUAGES
        else:
            raise AssertionError(f"unknown turn setting {name}={value!r}")


# ------------------------------------------------------------------ strategies

# every character, lone surrogates included (Hypothesis leaves them out by default)
any_char = st.characters(exclude_categories=())
any_text = st.text(any_char, max_size=80)

# fmt: off
NUMBER_BOMBS = [
    "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "infinity", "1e999", "-1e999", "1e400",
    "1_000", "16_000", "١٦٠٠٠", "１６０００", "0x3e80", "16000.0", " 16000 ", "16000.", ".5", "1e4",
    "4.8e4", "+8000", "-0", "00016000", "9" * 5000, "1" * 100000, "\ud800", "16000\x00", "",
]
# fmt: on
number_text = st.one_of(
    st.integers().map(str),
    st.integers(min_value=-100000, max_value=100000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-2, max_value=70000).map(str),
    st.from_regex(r"\A[ +-]?[0-9_.eE]{1,12} ?\Z"),
    st.sampled_from(NUMBER_BOMBS),
)
list_text = st.one_of(
    st.lists(any_text, max_size=5).map(json.dumps),
    st.lists(st.text(max_size=60), max_size=120).map(json.dumps),
    st.sampled_from(
        ["[", "[]", "[[]]", "[1]", '["a", null]', "[" * 100000, '["\\ud800"]', "[NaN]", '"x"']
    ),
)
query_value = st.one_of(any_text, number_text, list_text, st.sampled_from(["true", "False", "on"]))
QUERY_NAMES = [
    "sample_rate", "encoding", "format_turns", "end_of_turn_confidence_threshold",
    "min_turn_silence", "min_end_of_turn_silence_when_confident", "max_turn_silence",
    "vad_threshold", "keyterms_prompt", "prompt", "language_codes", "language_code",
    "language", "inactivity_timeout", "language_detection", "speaker_labels", "speech_model",
]  # fmt: skip
queries = st.dictionaries(
    st.one_of(st.sampled_from(QUERY_NAMES), st.text(max_size=10)), query_value, max_size=8
)
# queries that mostly get past sample_rate, so the other parameters are reached
queries_with_rate = st.builds(
    lambda rate, rest: {**rest, "sample_rate": rate},
    st.sampled_from(["16000", "8000", "48000"]),
    st.dictionaries(st.sampled_from(QUERY_NAMES), query_value, max_size=6),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**4000),
    st.floats(allow_nan=True, allow_infinity=True),
    any_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
UPDATE_FIELDS = [*v3._TURN_FIELDS, "language_codes", "session_heartbeat", "type"]
update_messages = st.dictionaries(
    st.one_of(st.sampled_from(UPDATE_FIELDS), st.text(max_size=8)), json_values, max_size=6
).map(lambda m: {**m, "type": "UpdateConfiguration"})
messages = st.one_of(
    update_messages,
    st.builds(
        lambda kind, extra: {**extra, "type": kind},
        st.one_of(
            st.sampled_from(["Terminate", "ForceEndpoint", "KeepAlive", "UpdateConfiguration"]),
            json_values,
        ),
        st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    ),
    json_values,
)


def dumps(value) -> str:
    """Python's json writes NaN/Infinity and lone surrogates escaped; both must be handled."""
    return json.dumps(value, allow_nan=True)


texts = st.one_of(
    messages.map(dumps),
    messages.map(lambda m: json.dumps(m, allow_nan=True, ensure_ascii=False)),
    any_text,
    st.text(any_char, min_size=100, max_size=2000),
    # a valid message cut, or with one character replaced: the near-misses
    st.builds(lambda t, n: t[:n], messages.map(dumps), st.integers(0, 60)),
)

BOMBS = [
    "[" * 100000,
    "[" * 60000,  # under the size cap: reaches the parser's recursion limit
    "{" * 100000,
    '{"a":' * 100000,
    '{"type":' + "[" * 100000,
    '{"type":"UpdateConfiguration","prompt":' + "[" * 50000 + "]" * 50000 + "}",
    '{"type":' + "[" * 990 + "]" * 990 + "}",  # nesting the parser takes, but repr would not
    "1" * 100000,  # a 10^5-digit int: past Python's int-from-string limit
    '{"type":"UpdateConfiguration","max_turn_silence":' + "9" * 5000 + "}",
    '{"type":"UpdateConfiguration","max_turn_silence":' + "9" * 4000 + "}",
    '{"type":"UpdateConfiguration","end_of_turn_confidence_threshold":' + "9" * 4000 + "}",
    '{"type":"UpdateConfiguration","max_turn_silence":1e999}',
    '{"type":"UpdateConfiguration","max_turn_silence":-1e999}',
    '{"type":"UpdateConfiguration","vad_threshold":NaN}',
    '{"type":"UpdateConfiguration","vad_threshold":Infinity}',
    '{"type":"KeepAlive","x":NaN}',
    '{"type":"KeepAlive","x":-Infinity}',
    "NaN",
    "Infinity",
    "1e999",
    '"\\ud800"',
    '{"type":"\\ud800"}',
    '{"type":"\\udfff\\ud800KeepAlive"}',
    '{"type":"UpdateConfiguration","prompt":"\\ud800"}',
    "\ud800",
    '{"type":"Ter\ud800minate"}',
    "\x00" * 100,
    "[]",
    "null",
    "42",
    '"KeepAlive"',
    '{"type":"UpdateConfiguration","min_turn_silence":null,'
    '"min_end_of_turn_silence_when_confident":null}',
    '{"type":"UpdateConfiguration","keyterms_prompt":' + json.dumps(["w"] * 5000) + "}",
    '{"type":"UpdateConfiguration","prompt":"' + "p" * 60000 + '"}',
    '{"type":"KeepAlive","pad":"' + "x" * 2_000_000 + '"}',
    '{"audio_data":"UklGRiQAAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAACABAAZGF0YQAAAAA="}',
]

# ------------------------------------------------------------------ parse_query


def check_query(query: dict[str, str]) -> None:
    config, exc = outcome(v3.parse_query, query)
    if exc is not None:
        check_error(exc, frozenset({3006}))
        return
    assert isinstance(config, SessionConfig)
    assert config.audio.encoding in v3.ENCODINGS
    assert type(config.audio.sample_rate) is int and 8000 <= config.audio.sample_rate <= 48000
    if config.inactivity_timeout_s is not None:
        assert finite_in(config.inactivity_timeout_s, 5, 3600)
    check_turn_settings(config.turn)


@PROPERTY
@given(queries)
def test_parse_query_any_query(query):
    check_query(query)


@PROPERTY
@given(queries_with_rate)
def test_parse_query_any_parameter_beside_a_good_sample_rate(query):
    check_query(query)


@pytest.mark.parametrize("name", QUERY_NAMES)
@pytest.mark.parametrize(
    "value",
    ["nan", "inf", "-Infinity", "1e999", "9" * 5000, "1" * 100000, "\ud800", "[" * 100000,
     "[NaN]", '["\\ud800"]', '["' + '","'.join(["k"] * 101) + '"]', "x" * 5000, "١٦٠٠٠"],
)  # fmt: skip
def test_parse_query_bombs(name, value):
    check_query({"sample_rate": "16000", name: value})


@pytest.mark.parametrize("rate", ["١٦٠٠٠", "１６０００", "16_000", "1" * 100000, "0x3e80"])
def test_sample_rate_takes_only_plain_ascii_numbers(rate):
    with pytest.raises(ProtocolError) as info:
        v3.parse_query({"sample_rate": rate})
    check_error(info.value, frozenset({3006}))
    assert len(info.value.reason) < 200  # a huge value is quoted in part, not whole


def test_unknown_language_codes_stop_at_the_edge():
    with pytest.raises(ProtocolError) as info:
        v3.parse_query({"sample_rate": "16000", "language_code": "xx"})
    assert "xx" in info.value.reason and "e.g. en" in info.value.reason
    assert (
        v3.parse_query({"sample_rate": "16000", "language_code": "MULTI"}).turn.get("language")
        is None
    )


def test_keyterm_limits_name_the_limit():
    many = json.dumps([f"term{i}" for i in range(v3.MAX_KEYTERMS + 1)])
    with pytest.raises(ProtocolError, match="at most 100"):
        v3.parse_query({"sample_rate": "16000", "keyterms_prompt": many})
    with pytest.raises(ProtocolError, match="longer than 50 characters"):
        v3.parse_query({"sample_rate": "16000", "keyterms_prompt": json.dumps(["k" * 51])})
    exact = [f"t{i}".ljust(50, "x") for i in range(v3.MAX_KEYTERMS)]
    turn = v3.parse_query({"sample_rate": "16000", "keyterms_prompt": json.dumps(exact)}).turn
    assert turn["keyterms"] == tuple(exact)


# ------------------------------------------------------------------ QueryReader


@PROPERTY
@given(
    value=st.one_of(number_text, any_text),
    lo=st.one_of(st.none(), st.integers(-1000, 1000)),
    span=st.one_of(st.none(), st.integers(0, 100000)),
)
def test_query_reader_int(value, lo, span):
    hi = None if span is None or lo is None else lo + span
    result, exc = outcome(QueryReader({"n": value}, 3006).int, "n", None, lo, hi)
    if exc is not None:
        check_error(exc, frozenset({3006}))
        return
    if result is None:
        assert value == ""
        return
    assert type(result) is int
    assert (lo is None or result >= lo) and (hi is None or result <= hi)


@PROPERTY
@given(
    value=st.one_of(number_text, any_text),
    lo=st.one_of(st.none(), st.floats(-10, 10)),
    hi=st.one_of(st.none(), st.floats(10, 1e6)),
)
def test_query_reader_float(value, lo, hi):
    result, exc = outcome(QueryReader({"x": value}, 3006).float, "x", None, lo, hi)
    if exc is not None:
        check_error(exc, frozenset({3006}))
        return
    if result is None:
        assert value == ""
        return
    assert type(result) is float and math.isfinite(result)
    assert (lo is None or result >= lo) and (hi is None or result <= hi)


@PROPERTY
@given(value=query_value)
def test_query_reader_bool_choice_and_lists(value):
    q = QueryReader({"v": value}, 3006)
    result, exc = outcome(q.bool, "v")
    if exc is not None:
        check_error(exc, frozenset({3006}))
    else:
        assert type(result) is bool
    result, exc = outcome(q.choice, "v", ("a", "b"), "a")
    if exc is not None:
        check_error(exc, frozenset({3006}))
    else:
        assert result in ("a", "b")
    result, exc = outcome(q.string_list, "v", 3, 10)
    if exc is not None:
        check_error(exc, frozenset({3006}))
    else:
        assert type(result) is tuple and len(result) <= 3
        assert all(type(s) is str and s and s == s.strip() and len(s) <= 10 for s in result)


@pytest.mark.parametrize(
    "value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "1" * 100000, "1_0", "١"]
)
def test_query_reader_numbers_are_finite_plain_decimals(value):
    q = QueryReader({"n": value}, 3006)
    for read in (q.int, q.float):
        with pytest.raises(ProtocolError) as info:
            read("n")
        check_error(info.value, frozenset({3006}))


def test_query_reader_quotes_a_huge_value_in_part():
    with pytest.raises(ProtocolError) as info:
        QueryReader({"n": "z" * 100000}, 3006).int("n")
    assert len(info.value.reason) < 120 and "zzz" in info.value.reason


# ------------------------------------------------------------------ parse_update


def check_update(message: dict) -> None:
    changes, exc = outcome(v3.parse_update, message)
    if exc is not None:
        check_error(exc, frozenset({3006}))
        return
    assert isinstance(changes, dict)
    check_turn_settings(changes)


@PROPERTY
@given(update_messages)
def test_parse_update_any_fields(message):
    check_update(message)


@pytest.mark.parametrize("field", [k for k, (_, kind) in v3._TURN_FIELDS.items()])
@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -float("inf"), 10**4000, -(10**4000), 1e308, -1, True, "1",
     [], {}, ["\ud800"], "\ud800", ["k"] * 101, "p" * 5000, None],
)  # fmt: skip
def test_parse_update_bombs(field, value):
    check_update({"type": "UpdateConfiguration", field: value})


def test_nan_is_rejected_for_every_numeric_setting():
    for field, (_, kind) in v3._TURN_FIELDS.items():
        if kind in (int, float):
            with pytest.raises(ProtocolError, match=field):
                v3.parse_update({field: float("nan")})


# ------------------------------------------------------------------ receive_text


def check_text(text: str, proto: v3.V3Protocol | None = None) -> None:
    proto = proto or v3.V3Protocol(v3.parse_query({"sample_rate": "16000"}))
    commands, exc = outcome(proto.receive_text, text)
    if exc is not None:
        check_error(exc)
        return
    assert isinstance(commands, list)
    for command in commands:
        assert isinstance(command, Terminate | ForceEndpoint | KeepAlive | UpdateConfig), command
        if isinstance(command, UpdateConfig):
            assert command.changes
            check_turn_settings(command.changes)


@PROPERTY
@given(texts)
@example("[" * 100000)
@example('{"type":"UpdateConfiguration","vad_threshold":NaN}')
@example('{"type":"\\ud800"}')
def test_receive_text_anything(text):
    check_text(text)


@pytest.mark.parametrize("text", BOMBS, ids=lambda t: repr(t[:30]))
def test_receive_text_bombs(text):
    check_text(text)


@pytest.mark.parametrize("text", BOMBS[:8], ids=lambda t: repr(t[:30]))
def test_bombs_say_invalid_json_or_message(text):
    proto = v3.V3Protocol(v3.parse_query({"sample_rate": "16000"}))
    with pytest.raises(ProtocolError) as info:
        proto.receive_text(text)
    assert info.value.close_code == 3006
    assert info.value.reason.startswith(("Invalid JSON", "Invalid Message"))


@pytest.mark.parametrize("bomb", ["[" * 60000, '{"a":' * 12000, '{"type":' + "[" * 60000])
def test_deep_nesting_is_invalid_json(bomb):
    """Nesting past the parser's recursion limit (RecursionError inside json) is bad JSON."""
    assert len(bomb) <= v3.MAX_TEXT_CHARS  # reaches the parser
    with pytest.raises(ProtocolError, match="^Invalid JSON"):
        v3.V3Protocol(SessionConfig()).receive_text(bomb)
    with pytest.raises(ValueError):
        loads_json("[" * 100000)


def test_a_lone_surrogate_type_is_escaped_in_the_reason():
    with pytest.raises(ProtocolError) as info:
        v3.V3Protocol(SessionConfig()).receive_text('{"type":"\\ud800"}')
    assert "\\ud800" in info.value.reason
    check_error(info.value)


def test_an_oversized_text_frame_is_refused_before_parsing():
    with pytest.raises(ProtocolError, match="text frame of 2000029 characters"):
        v3.V3Protocol(SessionConfig()).receive_text(BOMBS[-2])


def test_v2_style_base64_audio_in_text_says_where_audio_goes():
    with pytest.raises(ProtocolError, match="binary frames") as info:
        v3.V3Protocol(SessionConfig()).receive_text(BOMBS[-1])
    assert info.value.close_code == 3006


@PROPERTY
@given(st.lists(texts, min_size=1, max_size=30))
def test_receive_text_sequences_keep_the_contract(sequence):
    """A conversation of arbitrary frames: after the first refusal the session is over, but
    until then (and after Terminate) every frame keeps the contract."""
    proto = v3.V3Protocol(v3.parse_query({"sample_rate": "16000"}))
    for text in sequence:
        commands, exc = outcome(proto.receive_text, text)
        if exc is not None:
            check_error(exc)
            return
        if proto.state is not v3.State.OPEN:
            assert proto.receive_text("not json") == []  # flushing: not even parsed


# ------------------------------------------------------------------ the control-message rate


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_tiny_text_frames_is_closed_3007():
    clock = FakeClock()
    proto = v3.V3Protocol(v3.parse_query({"sample_rate": "16000"}), clock=clock)
    for _ in range(v3.CONTROL_BURST):
        assert proto.receive_text('{"type":"KeepAlive"}') == [KeepAlive()]
    with pytest.raises(ProtocolError) as info:
        proto.receive_text('{"type":"KeepAlive"}')
    check_error(info.value)
    assert info.value.close_code == 3007 and "rate" in info.value.reason.lower()


def test_a_steady_keepalive_never_trips_the_rate_limit():
    clock = FakeClock()
    proto = v3.V3Protocol(v3.parse_query({"sample_rate": "16000"}), clock=clock)
    for _ in range(5000):  # 40 a second for 125 s
        clock.now += 0.025
        assert proto.receive_text('{"type":"KeepAlive"}') == [KeepAlive()]


def test_rate_limit_refills_at_its_rate():
    clock = FakeClock()
    bucket = RateLimit(rate=10, burst=5, clock=clock)
    assert [bucket.allow() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.5  # five more tokens
    assert [bucket.allow() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 100  # never more than the burst
    assert sum(bucket.allow() for _ in range(20)) == 5


# ------------------------------------------------------------------ receive_bytes

configs = st.builds(
    lambda encoding, rate: v3.parse_query({"sample_rate": str(rate), "encoding": encoding}),
    st.sampled_from(v3.ENCODINGS),
    st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]),
)


@PROPERTY
@given(configs, st.one_of(st.binary(max_size=4000), st.integers(0, 200_000).map(bytes)))
@example(v3.parse_query({"sample_rate": "16000"}), b'{"type":"Terminate"}')
@example(v3.parse_query({"sample_rate": "16000"}), b"\x00" * 3201)
@example(v3.parse_query({"sample_rate": "16000"}), b"\x00" * (2 * 2**20))
def test_receive_bytes_anything(config, data):
    proto = v3.V3Protocol(config)
    commands, exc = outcome(proto.receive_bytes, data)
    if exc is not None:
        check_error(exc, frozenset({3007}))
        return
    width = 2 if config.audio.encoding == "pcm_s16le" else 1
    assert len(data) % width == 0
    ms = len(data) / width / config.audio.sample_rate * 1000
    assert 0 < ms <= 1000.5
    assert commands == ([RawAudio(data)] if ms >= 49.5 else [])  # short frames are held


def test_json_sent_as_binary_says_to_use_text_frames():
    proto = v3.V3Protocol(v3.parse_query({"sample_rate": "16000"}))
    with pytest.raises(ProtocolError, match="text frames") as info:
        proto.receive_bytes(b'{"type": "Terminate"}')
    assert info.value.close_code == 3007


def test_close_reason_survives_lone_surrogates():
    reason = close_reason("bad \ud800 value " * 20)
    assert len(reason.encode("utf-8")) <= 123

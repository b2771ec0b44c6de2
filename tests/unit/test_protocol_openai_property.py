"""Property tests for the OpenAI parsers: whatever a client sends, a checked result or OpenAI's
own error (rendered as an `error` event or an HTTP error body) — never any other exception.

Parsers under test: `openai_batch.parse_form`, `openai_realtime_session.parse_session` and
`RealtimeProtocol.receive_text` / `receive_bytes`. The named examples are the classic bombs
(deep nesting, huge numbers, NaN, lone surrogates, non-object JSON) and wrong JSON types in
every field, pinned so they run whatever Hypothesis draws.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamscribe.errors import ProtocolError
from streamscribe.events import ErrorKind, ForceEndpoint, RawAudio, UpdateConfig
from streamscribe.protocols.common import SendJson
from streamscribe.protocols.openai_batch import BatchRequest, parse_form
from streamscribe.protocols.openai_common import OpenAIError, error_body
from streamscribe.protocols.openai_realtime import RealtimeProtocol, session_config
from streamscribe.protocols.openai_realtime_session import RealtimeSettings, parse_session

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "model",
        "language",
        "prompt",
        "response_format",
        "temperature",
        "stream",
        "timestamp_granularities[]",
        "include[]",
        "languages[]",
        "keywords[]",
        "chunking_strategy",
        "known_speaker_names[]",
    ]
) | st.text(max_size=12)


def check_refusal(exc: BaseException) -> None:
    assert isinstance(exc, OpenAIError), f"{type(exc).__name__}: {exc!r}"[:300]
    body = error_body(exc)["error"]
    assert body["message"].strip() and body["type"] == "invalid_request_error"
    json.dumps(body, ensure_ascii=False).encode("utf-8")  # sendable, whatever the input was


@PROPERTY
@given(st.dictionaries(field_names, st.lists(st.text(max_size=30), min_size=1, max_size=3)))
@example({"model": ["m"], "temperature": ["nan"]})
@example({"model": ["m"], "temperature": ["1e999"]})
@example({"model": ["m"], "chunking_strategy": ["[" * 100_000]})
@example({"model": ["m"], "chunking_strategy": ['{"type": "server_vad", "threshold": 1e999}']})
@example({"model": ["m"], "language": ["\ud800"]})
@example({"model": ["m"], "stream": ["1" * 10_000]})
def test_parse_form_answers_or_refuses(fields):
    try:
        req = parse_form(fields)
    except BaseException as exc:  # noqa: BLE001 -- the property: nothing but OpenAIError
        check_refusal(exc)
        return
    assert isinstance(req, BatchRequest) and req.model.strip()


@PROPERTY
@given(json_values)
@example({"type": "transcription", "audio": {"input": {"turn_detection": {"type": "server_vad",
         "threshold": float("nan"), "silence_duration_ms": 10**400}}}})  # fmt: skip
@example({"turn_detection": {"type": "server_vad", "silence_duration_ms": 10**400}})
@example({"turn_detection": {"type": "server_vad", "prefix_padding_ms": 2.5}})
@example({"audio": {"input": {"transcription": {"language": 5, "keywords": "x"}}}})
@example({"audio": {"input": {"format": ["pcm16"]}}})
@example({"input_audio_transcription": {"languages": [None]}, "include": "x"})
@example({"turn_detection": {"type": "semantic_vad", "eagerness": ["low"]}})
@example({"audio": []})
def test_parse_session_answers_or_refuses(session):
    try:
        settings_ = parse_session(session, RealtimeSettings())
    except BaseException as exc:  # noqa: BLE001
        check_refusal(exc)
        return
    assert isinstance(settings_, RealtimeSettings)


def protocol() -> RealtimeProtocol:
    return RealtimeProtocol(session_config({"intent": "transcription"}), clock=lambda: 0.0)


@PROPERTY
@given(st.text(max_size=200) | json_values.map(json.dumps))
@example("[" * 100_000)
@example('{"type": "input_audio_buffer.append", "audio": 1e999}')
@example('{"type": "session.update", "session": {"audio": {"input": NaN}}}')
@example('{"type": "\ud800"}')
@example('{"type": "input_audio_buffer.append", "audio": "' + "A" * 10_001 + '"}')
@example('{"type": ["session.update"], "event_id": {"a": 1}}')
def test_realtime_events_become_commands_or_error_events(text):
    p = protocol()
    commands = p.receive_text(text)  # raises only past the rate limit, never here
    assert all(isinstance(c, RawAudio | ForceEndpoint | UpdateConfig) for c in commands)
    for reply in p.take_replies():
        for out in p.render(reply):
            assert isinstance(out, SendJson)
            message = json.loads(out.text.encode("utf-8"))
            assert message["type"] and message["event_id"]
            if message["type"] == "error":
                assert message["error"]["message"].strip()


@PROPERTY
@given(st.binary(max_size=64))
def test_binary_frames_are_refused_with_an_event(data):
    p = protocol()
    assert p.receive_bytes(data) == []
    (reply,) = p.take_replies()
    (out,) = p.render(reply)
    assert json.loads(out.text)["type"] == "error"


def test_rate_limit_is_the_only_fatal_refusal():
    p = protocol()
    try:
        for _ in range(10_000):
            p.receive_text("not json")
    except ProtocolError as exc:
        assert exc.kind is ErrorKind.RATE
    else:
        raise AssertionError("a flood of events was never refused")

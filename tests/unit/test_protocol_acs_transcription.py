"""ACS transcription out, without sockets: job and action bodies (every refusal names the field),
locales, the TranscriptionMetadata / TranscriptionData frames (names, casing, integer ticks,
lexical words, one Final per phrase sharing its intermediates' offset) and the CloudEvents."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamscribe.errors import ProtocolError
from streamscribe.events import TurnUpdate, Word
from streamscribe.protocols.acs_transcription import (
    TranscriptionRenderer,
    callback_event,
    lexical,
    locale_language,
    metadata_message,
    parse_action,
    parse_job_request,
    result_information,
    ticks,
)

OPTIONS = {"transportUrl": "wss://customer.example/transcripts", "locale": "en-US"}


def turn(words, end=False, formatted=False, order=0) -> TurnUpdate:
    return TurnUpdate(
        channel=0,
        turn_order=order,
        words=tuple(Word(t, s, e, c, end) for t, s, e, c in words),
        end_of_turn=end,
        formatted=formatted,
    )


# ---------------------------------------------------------------------------- requests


def test_a_full_job_request():
    job = parse_job_request(
        {
            "callConnectionId": "02009180-9dc2",
            "correlationId": "corr",
            "serverCallId": "server",
            "callbackUri": "https://app.example/cb",
            "operationContext": "ctx",
            "transcriptionOptions": {
                **OPTIONS,
                "transportType": "websocket",
                "startTranscription": True,
                "enableIntermediateResults": True,
                "locale": "de-DE",
            },
            "transportBearerToken": "secret",
            "transportReconnectSeconds": 5,
        },
        "generated",
    )
    assert job.call_connection_id == "02009180-9dc2"
    assert job.options.language == "de" and job.options.locale == "de-DE"
    assert job.options.start_transcription and job.options.enable_intermediate_results
    assert job.transport_token == "secret" and job.reconnect_s == 5.0
    public = job.public()
    assert "secret" not in repr(public) and public["transportAuthorization"] is True
    assert "secret" not in repr(job)


def test_defaults_and_the_older_transcriptionConfiguration_key():
    job = parse_job_request({"transcriptionConfiguration": OPTIONS}, "new-id")
    assert job.call_connection_id == job.correlation_id == job.server_call_id == "new-id"
    assert not job.options.start_transcription and not job.options.enable_intermediate_results
    assert job.callback_uri is None and job.reconnect_s == 30.0


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({**OPTIONS, "transportUrl": "https://x/y"}, "not a WebSocket URL"),
        ({**OPTIONS, "transportUrl": "ws:///path"}, "has no host"),
        ({**OPTIONS, "transportUrl": "ws://h:99999/"}, "not a valid URL"),
        ({**OPTIONS, "transportUrl": None}, "transportUrl is required"),
        ({**OPTIONS, "locale": "english"}, "not a locale"),
        ({**OPTIONS, "locale": "qq-QQ"}, "'qq' is not supported"),
        ({**OPTIONS, "locales": ["en-US", "de-DE"]}, "several locales"),
        ({**OPTIONS, "piiRedactionOptions": {"enable": True}}, "PII redaction"),
        ({**OPTIONS, "summarizationOptions": {"enable": True}}, "summarization"),
        ({**OPTIONS, "enableIntermediateResults": 1}, "true or false"),
        ({**OPTIONS, "speechModelEndpointId": 3}, "speechModelEndpointId"),
        ({**OPTIONS, "transportUri": "ws://x"}, "Unknown field in transcriptionOptions"),
    ],
)
def test_bad_options_name_the_field(options, reason):
    with pytest.raises(ProtocolError) as info:
        parse_job_request({"transcriptionOptions": options}, "id")
    assert reason in info.value.reason


def test_switched_off_preview_options_are_accepted():
    job = parse_job_request(
        {
            "transcriptionOptions": {
                **OPTIONS,
                "enableSentimentAnalysis": False,
                "piiRedactionOptions": {"enable": False},
            }
        },
        "id",
    )
    assert job.options.locale == "en-US"


@pytest.mark.parametrize(
    ("locale", "language"),
    [("en-US", "en"), ("de_DE", "de"), ("fr", "fr"), ("nb-NO", "no"), ("zh-Hans-CN", "zh")],
)
def test_locales_map_to_languages(locale, language):
    assert locale_language(locale) == language


def test_actions():
    assert parse_action(None, "start").locale is None
    update = parse_action(
        {"locale": "de-DE", "operationContext": "x", "operationCallbackUri": "http://h/cb"},
        "update",
    )
    assert (update.language, update.operation_context) == ("de", "x")
    assert update.operation_callback_uri == "http://h/cb"
    for body, action, reason in [
        ({}, "update", "needs a locale"),
        ({"locale": "xx"}, "update", "not supported"),
        ({"locale": "en-US"}, "stop", "Unknown field"),
        ({"operationCallbackUri": "file:///x"}, "stop", "operationCallbackUri"),
        ([], "start", "JSON object"),
    ]:
        with pytest.raises(ProtocolError) as info:
            parse_action(body, action)
        assert reason in info.value.reason


# ---------------------------------------------------------------------------- frames


def test_metadata_frame():
    assert metadata_message("sub", "en-US", "call", "corr") == {
        "kind": "TranscriptionMetadata",
        "transcriptionMetadata": {
            "subscriptionId": "sub",
            "locale": "en-US",
            "callConnectionId": "call",
            "correlationId": "corr",
        },
    }
    with_model = metadata_message("sub", "en-US", "call", "corr", "base")
    meta = with_model["transcriptionMetadata"]
    assert meta["speechModelEndpointId"] == meta["speechRecognitionModelEndpointId"] == "base"


def test_a_phrase_intermediates_then_one_final_in_display_form():
    r = TranscriptionRenderer(intermediate=True)
    who = "4:+15551234567"
    first = r.render(turn([("my", 30905, 31145, 0.9)]), who)
    again = r.render(turn([("my", 30905, 31145, 0.9)]), who)
    grown = r.render(turn([("my", 30910, 31145, 0.9), ("date", 31145, 31455, 0.8)]), who)
    unformatted = r.render(turn([("my", 30910, 31145, 0.9)], end=True), who)
    final = r.render(
        turn([("My", 30910, 31145, 0.9), ("date.", 31145, 31455, 0.7)], True, True), who
    )
    assert again is None and unformatted is None  # no repeats; the display re-send is the Final
    assert first is not None and grown is not None and final is not None
    assert not first.final and final.final
    data = final.message["transcriptionData"]
    assert final.message["kind"] == "TranscriptionData"
    assert data == {
        "text": "My date.",
        "format": "display",
        "confidence": 0.8,
        "offset": 309050000,  # the phrase's first offset, kept though the first word moved
        "duration": 5500000,
        "words": [
            {"text": "my", "offset": 309100000, "duration": 2350000},
            {"text": "date", "offset": 311450000, "duration": 3100000},
        ],
        "participantRawID": who,
        "resultStatus": "Final",
    }
    assert grown.message["transcriptionData"]["offset"] == data["offset"]
    assert grown.message["transcriptionData"]["resultStatus"] == "Intermediate"
    for value in (data["offset"], data["duration"], *(w["offset"] for w in data["words"])):
        assert type(value) is int


def test_without_intermediate_results_only_finals_and_phrases_are_per_participant():
    r = TranscriptionRenderer(intermediate=False)
    assert r.render(turn([("hi", 0, 200, 0.9)]), "a") is None
    assert r.render(turn([("yes", 100, 300, 0.9)]), "b") is None
    a = r.render(turn([("Hi.", 0, 200, 0.9)], True, True), "a")
    b = r.render(turn([("Yes.", 100, 300, 0.9)], True, True), "b")
    assert a.message["transcriptionData"]["participantRawID"] == "a"
    assert b.message["transcriptionData"]["offset"] == ticks(100)
    # the next phrase of "a" (a new turn number) gets its own offset
    c = r.render(turn([("Ok.", 5000, 5200, 0.9)], True, True, order=1), "a")
    assert c.message["transcriptionData"]["offset"] == 50_000_000


def test_a_phrase_starts_at_the_speech_onset_and_keeps_that_offset():
    r = TranscriptionRenderer(intermediate=True)
    r.speech_started("a", 900)
    first = r.render(turn([("later", 1500, 1800, 0.9)]), "a")
    final = r.render(
        turn([("Early", 1000, 1300, 0.9), ("later.", 1500, 1800, 0.9)], True, True), "a"
    )
    assert first.message["transcriptionData"]["offset"] == ticks(900)
    assert final.message["transcriptionData"]["offset"] == ticks(900)
    assert final.message["transcriptionData"]["duration"] == ticks(900)
    r.speech_started("a", 5000)  # an onset after the first word does not move the phrase later
    late = r.render(turn([("Hm.", 4800, 4900, 0.9)], True, True, order=1), "a")
    assert late.message["transcriptionData"]["offset"] == ticks(4800)


def test_words_that_are_only_punctuation_are_left_out_and_empty_turns_send_nothing():
    r = TranscriptionRenderer(intermediate=True)
    assert r.render(turn([("...", 0, 100, 0.5)], True, True), "a") is None
    out = r.render(turn([("Well", 0, 100, 0.5), ("-", 100, 120, 0.1)], True, True), "a")
    assert [w["text"] for w in out.message["transcriptionData"]["words"]] == ["well"]


def test_lexical_and_ticks():
    assert lexical("Don't!") == "don't" and lexical("'Hello,'") == "hello"
    assert ticks(30905.834) == 309058340 and ticks(1000) == 10_000_000


def test_callback_events_are_cloud_events():
    event = callback_event(
        "TranscriptionFailed",
        event_id="e1",
        time="2025-01-01T00:00:00.000Z",
        call_connection_id="call",
        server_call_id="server",
        correlation_id="corr",
        status_details="streamConnectionUnsuccessful",
        result=result_information(400, 8501, "cannot connect"),
        operation_context="ctx",
    )
    assert event == {
        "id": "e1",
        "source": "calling/callConnections/call",
        "type": "Microsoft.Communication.TranscriptionFailed",
        "subject": "calling/callConnections/call",
        "time": "2025-01-01T00:00:00.000Z",
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "data": {
            "transcriptionUpdate": {
                "transcriptionStatus": "transcriptionFailed",
                "transcriptionStatusDetails": "streamConnectionUnsuccessful",
            },
            "callConnectionId": "call",
            "serverCallId": "server",
            "correlationId": "corr",
            "resultInformation": {"code": 400, "subCode": 8501, "message": "cannot connect"},
            "operationContext": "ctx",
        },
    }


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=10,
)
_options = st.fixed_dictionaries(
    {},
    optional={
        "transportUrl": _json | st.sampled_from(["ws://h/x", "wss://h:1/", "ws://[::1", "ws://"]),
        "locale": _json | st.sampled_from(["en-US", "de", "xx-YY", "e"]),
        "transportType": _json,
        "startTranscription": _json,
        "enableIntermediateResults": _json,
        "locales": _json,
        "piiRedactionOptions": _json,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "transcriptionOptions": _options | _json,
            "callConnectionId": _json,
            "callbackUri": _json | st.sampled_from(["http://h/cb", "https://", "http://h:99999"]),
            "operationContext": _json,
            "transportReconnectSeconds": _json,
        },
    )
    | _json,
    st.sampled_from(["start", "stop", "update"]),
)
def test_any_body_gives_a_request_or_a_protocol_error_never_a_crash(body, action):
    for parse in (lambda: parse_job_request(body, "id"), lambda: parse_action(body, action)):
        try:
            parse()
        except ProtocolError as exc:
            assert exc.reason

"""AssemblyAI v3 dialect, sans-I/O: query in, client frames in, engine events out, wire frames out.

Each test reads as a short transcript of one connection: what the client sent, what the protocol
object turned it into, what went back on the wire. Rendered frames are also validated with the
official SDK's pydantic models (protocol document §3.2, §6), which is what a real client does.
"""

from __future__ import annotations

import json

import pytest
from assemblyai.streaming.v3 import BeginEvent, TerminationEvent, TurnEvent

from streamscribe.errors import LocalProtocolError, ProtocolError
from streamscribe.events import (
    AudioFormat,
    EndReason,
    Error,
    ErrorKind,
    ForceEndpoint,
    KeepAlive,
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
from streamscribe.protocols.assemblyai_v3 import (
    CLOSE_CODES,
    TRANSITIONS,
    State,
    V3Protocol,
    parse_query,
    parse_update,
)
from streamscribe.protocols.common import (
    IGNORED,
    Close,
    QueryReader,
    SendJson,
    Step,
    chunk_ms,
    close_reason,
)

# ------------------------------------------------------------------ helpers


def query(**params: object) -> dict[str, str]:
    """A query string as the route hands it over: every value a string."""
    return {"sample_rate": "16000", **{k: str(v) for k, v in params.items()}}


def rejected(params: dict[str, str]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_query(params)
    err = info.value
    assert err.close_code == 3006, err.reason
    assert err.kind is ErrorKind.BAD_REQUEST
    return err


def protocol(**params: object) -> V3Protocol:
    return V3Protocol(parse_query(query(**params)))


def pcm(ms: float, sample_rate: int = 16000, encoding: str = "pcm_s16le") -> bytes:
    samples = round(sample_rate * ms / 1000)
    return b"\x00" * (samples * (2 if encoding == "pcm_s16le" else 1))


def sent(outgoing: list) -> list[dict]:
    """The JSON frames of a render() result, as the client would parse them off the wire."""
    return [json.loads(o.text) for o in outgoing if isinstance(o, SendJson)]


def closes(outgoing: list) -> list[Close]:
    return [o for o in outgoing if isinstance(o, Close)]


def word(text: str, start: int, end: int, final: bool = True, conf: float = 0.9) -> Word:
    return Word(text, start, end, conf, final)


def turn(
    *words: Word, order: int = 0, end: bool = False, formatted: bool = False, **kw
) -> TurnUpdate:
    return TurnUpdate(
        channel=0, turn_order=order, words=words, end_of_turn=end, formatted=formatted, **kw
    )


def render_one(proto: V3Protocol, event) -> dict:
    frames = sent(proto.render(event))
    assert len(frames) == 1
    return frames[0]


def text_error(proto: V3Protocol, text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        proto.receive_text(text)
    assert info.value.close_code == 3006
    return info.value


# ------------------------------------------------------------------ parse_query: sample_rate


def test_sample_rate_is_required_and_the_reason_shows_how_to_add_it():
    err = rejected({"encoding": "pcm_s16le"})
    assert "sample_rate" in err.reason
    assert "sample_rate=16000" in err.reason


def test_empty_sample_rate_counts_as_missing():
    err = rejected({"sample_rate": ""})
    assert "Missing sample_rate" in err.reason


@pytest.mark.parametrize("rate", ["8000", "11025", "16000", "22050", "44100", "48000", "16000.0"])
def test_sample_rates_in_range_are_accepted(rate):
    assert parse_query({"sample_rate": rate}).audio.sample_rate == int(float(rate))


@pytest.mark.parametrize("rate", ["7999", "48001", "0", "-16000", "96000"])
def test_sample_rate_out_of_range_names_the_accepted_range(rate):
    err = rejected({"sample_rate": rate})
    assert f"sample_rate={rate!r}" in err.reason
    assert "between 8000 and 48000" in err.reason


@pytest.mark.parametrize("rate", ["abc", "16k", "16000.5", "nan", "inf", "1e400"])
def test_non_integer_sample_rate_is_rejected(rate):
    err = rejected({"sample_rate": rate})
    assert "sample_rate" in err.reason
    assert "an integer" in err.reason


def test_sample_rate_with_surrounding_spaces_is_read():
    assert parse_query({"sample_rate": " 8000 "}).audio.sample_rate == 8000


# ------------------------------------------------------------------ parse_query: encoding


def test_defaults_for_a_minimal_query():
    config = parse_query({"sample_rate": "16000"})
    assert config.audio == AudioFormat(encoding="pcm_s16le", sample_rate=16000, channels=1)
    assert config.turn == {"format_turns": False}
    assert config.inactivity_timeout_s is None
    assert config.language_detection is False
    assert config.speaker_labels is False
    assert config.model is None


@pytest.mark.parametrize("encoding", ["pcm_s16le", "pcm_mulaw"])
def test_classic_encodings_are_accepted(encoding):
    assert parse_query(query(encoding=encoding)).audio.encoding == encoding


@pytest.mark.parametrize("encoding", ["opus", "ogg_opus", "aac", "pcm_alaw", "PCM_S16LE", "wav"])
def test_other_encodings_are_rejected_naming_the_accepted_ones(encoding):
    err = rejected(query(encoding=encoding))
    assert f"encoding={encoding!r}" in err.reason
    assert "pcm_s16le" in err.reason and "pcm_mulaw" in err.reason


# ------------------------------------------------------------------ parse_query: booleans


@pytest.mark.parametrize(
    ("raw", "value"),
    [("True", True), ("False", False), ("true", True), ("false", False), ("TRUE", True)],
)
def test_booleans_as_the_python_sdk_and_browsers_send_them(raw, value):
    config = parse_query(query(format_turns=raw, language_detection=raw, speaker_labels=raw))
    assert config.turn["format_turns"] is value
    assert config.language_detection is value
    assert config.speaker_labels is value


def test_a_bad_boolean_names_the_accepted_values():
    err = rejected(query(format_turns="maybe"))
    assert "format_turns='maybe'" in err.reason
    assert "true or false" in err.reason


# ------------------------------------------------------------------ parse_query: keyterms


def test_keyterms_prompt_is_a_json_list_as_the_sdk_urlencodes_it():
    config = parse_query(query(keyterms_prompt='["foo", "bar baz", "  ", " qux "]'))
    assert config.turn["keyterms"] == ("foo", "bar baz", "qux")


def test_an_empty_keyterms_list_sets_nothing():
    assert "keyterms" not in parse_query(query(keyterms_prompt="[]")).turn


def test_a_plain_keyterm_string_is_one_term():
    assert parse_query(query(keyterms_prompt="streamscribe")).turn["keyterms"] == ("streamscribe",)


@pytest.mark.parametrize("raw", ['["foo", "bar"', "[foo, bar]", "[1, 2]", '["a", null]', "[[]]"])
def test_bad_keyterms_json_names_the_expected_shape(raw):
    err = rejected(query(keyterms_prompt=raw))
    assert "keyterms_prompt" in err.reason
    assert "JSON array of strings" in err.reason


# ------------------------------------------------------------------ parse_query: turn silences


def test_min_turn_silence_new_name():
    assert parse_query(query(min_turn_silence="250")).turn["min_turn_silence_ms"] == 250


def test_min_turn_silence_old_name_still_works():
    config = parse_query(query(min_end_of_turn_silence_when_confident="560"))
    assert config.turn["min_turn_silence_ms"] == 560


def test_new_min_turn_silence_name_wins_over_the_old_one():
    config = parse_query(
        query(min_turn_silence="300", min_end_of_turn_silence_when_confident="900")
    )
    assert config.turn["min_turn_silence_ms"] == 300


def test_the_old_name_is_not_even_validated_when_the_new_one_is_present():
    config = parse_query(
        query(min_turn_silence="300", min_end_of_turn_silence_when_confident="oops")
    )
    assert config.turn["min_turn_silence_ms"] == 300


@pytest.mark.parametrize(
    "name", ["min_turn_silence", "min_end_of_turn_silence_when_confident", "max_turn_silence"]
)
@pytest.mark.parametrize("raw", ["-1", "soon", "400.5"])
def test_bad_turn_silences_are_rejected(name, raw):
    err = rejected(query(**{name: raw}))
    assert name in err.reason
    assert "integer" in err.reason


def test_max_turn_silence():
    assert parse_query(query(max_turn_silence="1500")).turn["max_turn_silence_ms"] == 1500


def test_max_turn_silence_is_raised_to_min_turn_silence_when_both_given():
    turn_cfg = parse_query(query(min_turn_silence="2000", max_turn_silence="1000")).turn
    assert turn_cfg["min_turn_silence_ms"] == 2000
    assert turn_cfg["max_turn_silence_ms"] == 2000


def test_end_of_turn_confidence_threshold_range():
    cfg = parse_query(query(end_of_turn_confidence_threshold="0.7"))
    assert cfg.turn["end_of_turn_confidence_threshold"] == 0.7
    for raw in ("1.5", "-0.1", "nan", "high"):
        err = rejected(query(end_of_turn_confidence_threshold=raw))
        assert "end_of_turn_confidence_threshold" in err.reason
        assert "a number between 0.0 and 1.0" in err.reason


def test_vad_threshold_and_prompt_reach_the_turn_settings():
    turn_cfg = parse_query(query(vad_threshold="0.3", prompt="Names: Ada, Grace.")).turn
    assert turn_cfg["vad_threshold"] == 0.3
    assert turn_cfg["prompt"] == "Names: Ada, Grace."


# ------------------------------------------------------------------ parse_query: inactivity


@pytest.mark.parametrize("seconds", [5, 60, 3600])
def test_inactivity_timeout_in_range(seconds):
    assert parse_query(query(inactivity_timeout=seconds)).inactivity_timeout_s == float(seconds)


@pytest.mark.parametrize("raw", ["4", "3601", "0", "-5", "ten"])
def test_inactivity_timeout_out_of_range_names_the_range(raw):
    err = rejected(query(inactivity_timeout=raw))
    assert "inactivity_timeout" in err.reason
    assert "between 5 and 3600" in err.reason


# ------------------------------------------------------------------ parse_query: language


@pytest.mark.parametrize(
    ("params", "language"),
    [
        ({"language_codes": '["es"]'}, "es"),
        ({"language_codes": '["pt-BR"]'}, "pt"),
        ({"language_code": "de"}, "de"),
        ({"language_code": "EN-us"}, "en"),
        ({"language": "fr"}, "fr"),
        ({"language_codes": '["it"]', "language_code": "de"}, "it"),
    ],
)
def test_a_single_language_pins_the_decoder(params, language):
    assert parse_query(query(**params)).turn["language"] == language


def test_an_unknown_language_code_is_rejected_naming_examples():
    err = rejected(query(language_code="klingon"))
    assert "language code 'klingon'" in err.reason
    assert "en, es" in err.reason


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"language_codes": '["en", "es"]'},
        {"language_codes": '["Multi"]'},
        {"language_code": "multi"},
        {"language": "auto"},
        {"language_codes": "[]"},
    ],
)
def test_several_or_automatic_languages_leave_detection_on(params):
    assert "language" not in parse_query(query(**params)).turn


def test_language_detection_flag():
    assert parse_query(query(language_detection="True")).language_detection is True


# ------------------------------------------------------------------ parse_query: leniency


def test_unknown_parameters_from_newer_sdks_are_ignored():
    config = parse_query(
        query(
            speech_model="universal-streaming-english",
            token="t",
            session_heartbeat="True",
            llm_gateway='{"model": "x"}',
            redact_pii_policies='["a"]',
            mode="whatever",
            domain="medical",
        )
    )
    assert config.audio.sample_rate == 16000
    assert config.model == "universal-streaming-english"


def test_a_full_sdk_query_parses():
    # the path the SDK 1.8.2 built in the protocol document §7.1
    config = parse_query(
        {
            "end_of_turn_confidence_threshold": "0.7",
            "format_turns": "True",
            "keyterms_prompt": '["foo", "bar baz"]',
            "sample_rate": "16000",
            "min_turn_silence": "400",
        }
    )
    assert config.turn == {
        "format_turns": True,
        "end_of_turn_confidence_threshold": 0.7,
        "min_turn_silence_ms": 400,
        "keyterms": ("foo", "bar baz"),
    }


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"sample_rate": "x"},
        {"sample_rate": "16000", "encoding": "opus"},
        {"sample_rate": "16000", "format_turns": "x"},
        {"sample_rate": "16000", "keyterms_prompt": "[x"},
        {"sample_rate": "16000", "min_turn_silence": "x"},
        {"sample_rate": "16000", "max_turn_silence": "x"},
        {"sample_rate": "16000", "inactivity_timeout": "1"},
        {"sample_rate": "16000", "end_of_turn_confidence_threshold": "2"},
        {"sample_rate": "16000", "vad_threshold": "2"},
        {"sample_rate": "16000", "language_detection": "x"},
        {"sample_rate": "16000", "speaker_labels": "x"},
        {"sample_rate": "16000", "language_codes": "[1]"},
    ],
)
def test_every_query_error_is_3006_and_names_the_parameter(params):
    err = rejected(params)
    bad = next((k for k in params if k != "sample_rate"), "sample_rate")
    assert bad in err.reason
    assert "expected" in err.reason or "add sample_rate=" in err.reason


# ------------------------------------------------------------------ common helpers


def test_query_reader_without_a_code_leaves_it_to_the_dialect():
    with pytest.raises(ProtocolError) as info:
        QueryReader({"n": "x"}).int("n")
    assert info.value.close_code is None
    assert info.value.reason == "Invalid n='x': expected an integer"


def test_query_reader_range_wording():
    reader = QueryReader({"a": "-1", "b": "99"}, 3006)
    with pytest.raises(ProtocolError, match="an integer of at least 0"):
        reader.int("a", lo=0)
    with pytest.raises(ProtocolError, match="a number of at most 10"):
        reader.float("b", hi=10)


def test_chunk_ms():
    assert chunk_ms(1600, "pcm_s16le", 16000) == 50
    assert chunk_ms(400, "pcm_mulaw", 8000) == 50
    assert chunk_ms(3200, "pcm_s16le", 16000, channels=2) == 50


def test_close_reason_fits_in_123_bytes_even_with_multibyte_text():
    assert close_reason("short") == "short"
    exact = "x" * 123
    assert close_reason(exact) == exact
    for text in ("y" * 500, "é" * 200, "🎤" * 100, "a" + "€" * 100):
        reason = close_reason(text)
        assert len(reason.encode("utf-8")) <= 123
        assert reason.endswith("...")
        assert text.startswith(reason[:-3])


# ------------------------------------------------------------------ receive_bytes: chunk rule


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("encoding", ["pcm_s16le", "pcm_mulaw"])
@pytest.mark.parametrize("ms", [50, 100, 250, 1000])
def test_chunks_of_50_to_1000_ms_are_audio(sample_rate, encoding, ms):
    proto = protocol(sample_rate=sample_rate, encoding=encoding)
    data = pcm(ms, sample_rate, encoding)
    assert proto.receive_bytes(data) == [RawAudio(data)]


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("encoding", ["pcm_s16le", "pcm_mulaw"])
@pytest.mark.parametrize(("ms", "shown"), [(1100, 1100), (2000, 2000)])
def test_chunks_over_1000_ms_close_3007(sample_rate, encoding, ms, shown):
    proto = protocol(sample_rate=sample_rate, encoding=encoding)
    with pytest.raises(ProtocolError) as info:
        proto.receive_bytes(pcm(ms, sample_rate, encoding))
    assert info.value.close_code == 3007
    assert info.value.kind is ErrorKind.BAD_AUDIO
    assert info.value.reason == (
        f"Input duration violation: {shown} ms. Expected between 50 and 1000 ms"
    )


def test_an_empty_frame_closes_3007():
    with pytest.raises(ProtocolError) as info:
        protocol().receive_bytes(b"")
    assert info.value.close_code == 3007
    assert info.value.reason.startswith("Input duration violation: 0 ms")


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("encoding", ["pcm_s16le", "pcm_mulaw"])
def test_20_ms_frames_are_held_until_they_make_50_ms(sample_rate, encoding):
    """A voice-agent framework sends 20 ms frames: they go on in 60 ms pieces, in order."""
    proto = protocol(sample_rate=sample_rate, encoding=encoding)
    frames = [bytes([i]) * len(pcm(20, sample_rate, encoding)) for i in range(1, 7)]
    out = [proto.receive_bytes(f) for f in frames]
    assert out == [
        [],
        [],
        [RawAudio(b"".join(frames[:3]))],
        [],
        [],
        [RawAudio(b"".join(frames[3:]))],
    ]


def test_a_short_last_frame_before_terminate_is_transcribed_then_termination():
    """Pipecat and LiveKit send the 5-25 ms they still hold just before Terminate."""
    proto = protocol()
    assert proto.receive_bytes(pcm(100)) == [RawAudio(pcm(100))]
    tail = b"\x01\x00" * 80  # 5 ms
    assert proto.receive_bytes(tail) == []
    assert proto.receive_text('{"type": "Terminate"}') == [RawAudio(tail), Terminate()]
    assert proto.state is State.TERMINATING
    frames = proto.render(SessionEnded(audio_ms=105, session_ms=400, reason=EndReason.TERMINATED))
    assert [m["type"] for m in sent(frames)] == ["Termination"]
    assert frames[-1] == Close(1000)


def test_force_endpoint_sends_the_held_audio_first():
    proto = protocol()
    assert proto.receive_bytes(pcm(30)) == []
    assert proto.receive_text('{"type": "ForceEndpoint"}') == [RawAudio(pcm(30)), ForceEndpoint()]
    assert proto.receive_text('{"type": "Terminate"}') == [Terminate()]  # nothing held now


def test_a_flood_of_short_frames_closes_3007():
    now = [0.0]
    proto = V3Protocol(parse_query(query()), clock=lambda: now[0])
    frame = pcm(1)
    for _ in range(400):  # the burst
        proto.receive_bytes(frame)
    with pytest.raises(ProtocolError) as info:
        proto.receive_bytes(frame)
    assert info.value.close_code == 3007
    assert "Input duration violation: more than 200 frames shorter than 50 ms" in info.value.reason
    now[0] += 1.0  # 20 ms frames at real time never come near it
    assert proto.receive_bytes(pcm(20)) == []


def test_short_frames_that_are_not_whole_samples_still_close_3007():
    with pytest.raises(ProtocolError, match="not a whole number") as info:
        protocol().receive_bytes(b"\x00" * 321)
    assert info.value.close_code == 3007


def test_chunk_boundaries_at_16k_s16le():
    proto = protocol()
    assert proto.receive_bytes(b"\0" * 1600)  # exactly 50 ms
    assert proto.receive_bytes(b"\0" * 32000)  # exactly 1000 ms
    assert proto.receive_bytes(b"\0" * 1584)  # 49.5 ms: within half a millisecond
    assert proto.receive_bytes(b"\0" * 32016)  # 1000.5 ms: likewise
    assert proto.receive_bytes(b"\0" * 1582) == []  # 49.44 ms: held for the next frame
    with pytest.raises(ProtocolError) as info:
        proto.receive_bytes(b"\0" * 32018)  # 1000.56 ms
    assert info.value.close_code == 3007


def test_a_chunk_that_is_not_whole_samples_closes_3007():
    proto = protocol()
    with pytest.raises(ProtocolError) as info:
        proto.receive_bytes(b"\0" * 1601)
    assert info.value.close_code == 3007
    assert info.value.kind is ErrorKind.BAD_AUDIO
    assert "1601 bytes" in info.value.reason
    assert "pcm_s16le" in info.value.reason and "2 bytes each" in info.value.reason


def test_odd_length_is_fine_for_mulaw():
    proto = protocol(encoding="pcm_mulaw", sample_rate=8000)
    assert proto.receive_bytes(b"\xff" * 401) == [RawAudio(b"\xff" * 401)]


def test_an_empty_binary_frame_is_a_duration_violation():
    with pytest.raises(ProtocolError, match="Input duration violation: 0 ms"):
        protocol().receive_bytes(b"")


# ------------------------------------------------------------------ receive_text


def test_control_messages():
    proto = protocol()
    assert proto.receive_text('{"type":"KeepAlive"}') == [KeepAlive()]
    assert proto.receive_text('{"type":"ForceEndpoint"}') == [ForceEndpoint()]
    assert proto.receive_text('{"type": "Terminate"}') == [Terminate()]
    assert proto.state is State.TERMINATING


@pytest.mark.parametrize("text", ["not json", "{", '{"type":"Terminate"', "", "\x00"])
def test_bad_json_is_3006_invalid_json(text):
    err = text_error(protocol(), text)
    assert err.reason.startswith("Invalid JSON")
    assert err.kind is ErrorKind.BAD_REQUEST


def test_invalid_json_reason_quotes_at_most_60_characters():
    err = text_error(protocol(), "x" * 500)
    assert err.reason == "Invalid JSON: " + "x" * 60


@pytest.mark.parametrize("text", ["[]", '["Terminate"]', '"Terminate"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_invalid_message(text):
    err = text_error(protocol(), text)
    assert err.reason.startswith("Invalid Message: ")


@pytest.mark.parametrize(
    "text", ['{"type":"Stop"}', "{}", '{"type":null}', '{"type":"terminate"}', '{"type":1}']
)
def test_unknown_type_is_invalid_message_type_naming_the_known_ones(text):
    err = text_error(protocol(), text)
    assert err.reason.startswith("Invalid Message Type: ")
    for known in ("Terminate", "ForceEndpoint", "KeepAlive", "UpdateConfiguration"):
        assert known in err.reason


def test_a_huge_unknown_type_is_cut_in_the_reason():
    proto = protocol()
    err = text_error(proto, json.dumps({"type": "A" * 1000}))
    assert "A" * 40 in err.reason and "A" * 41 not in err.reason
    out = proto.error(err)
    assert sent(out)[0]["error"] == err.reason  # the whole fix is in the Error message
    assert len(out[-1].reason.encode()) <= 123  # the close reason is cut to fit


def test_update_configuration_maps_wire_names_to_engine_names():
    proto = protocol()
    message = {
        "max_turn_silence": 1500,
        "min_turn_silence": 300,
        "end_of_turn_confidence_threshold": 0.6,
        "vad_threshold": 0.4,
        "format_turns": True,
        "keyterms_prompt": ["foo", "bar baz"],
        "prompt": "Be brief.",
        "type": "UpdateConfiguration",  # the SDK may put type last
    }
    assert proto.receive_text(json.dumps(message)) == [
        UpdateConfig(
            {
                "max_turn_silence_ms": 1500,
                "min_turn_silence_ms": 300,
                "end_of_turn_confidence_threshold": 0.6,
                "vad_threshold": 0.4,
                "format_turns": True,
                "keyterms": ("foo", "bar baz"),
                "prompt": "Be brief.",
            }
        )
    ]
    assert proto.format_turns is True


def test_update_configuration_old_silence_name():
    cmds = protocol().receive_text(
        '{"type":"UpdateConfiguration","min_end_of_turn_silence_when_confident":700}'
    )
    assert cmds == [UpdateConfig({"min_turn_silence_ms": 700})]


@pytest.mark.parametrize(
    "message",
    [
        {"min_turn_silence": 300, "min_end_of_turn_silence_when_confident": 900},
        {"min_end_of_turn_silence_when_confident": 900, "min_turn_silence": 300},
    ],
)
def test_update_configuration_prefers_the_new_silence_name_in_any_order(message):
    cmds = protocol().receive_text(json.dumps({"type": "UpdateConfiguration", **message}))
    assert cmds == [UpdateConfig({"min_turn_silence_ms": 300})]


def test_update_configuration_ints_are_ints_and_floats_are_floats():
    (cmd,) = protocol().receive_text(
        '{"type":"UpdateConfiguration","max_turn_silence":1500.9,'
        '"end_of_turn_confidence_threshold":1}'
    )
    assert cmd.changes == {"max_turn_silence_ms": 1500, "end_of_turn_confidence_threshold": 1.0}
    assert type(cmd.changes["max_turn_silence_ms"]) is int
    assert type(cmd.changes["end_of_turn_confidence_threshold"]) is float


def test_update_configuration_ignores_unknown_and_null_fields():
    proto = protocol()
    assert (
        proto.receive_text(
            '{"type":"UpdateConfiguration","session_heartbeat":true,"max_turn_silence":null}'
        )
        == []
    )


@pytest.mark.parametrize(
    ("codes", "language"),
    [(["de"], "de"), (["fr-FR"], "fr"), (["multi"], None), (["en", "es"], None)],
)
def test_update_configuration_language_codes_pin_or_unpin_the_language(codes, language):
    proto = protocol()
    message = json.dumps({"type": "UpdateConfiguration", "language_codes": codes})
    assert proto.receive_text(message) == [UpdateConfig({"language": language})]


def test_update_configuration_refuses_an_unknown_language_code():
    with pytest.raises(ProtocolError, match="xx"):
        protocol().receive_text('{"type":"UpdateConfiguration","language_codes":["xx"]}')


def test_translate_and_max_speakers_are_read_from_the_query():
    config = parse_query({"sample_rate": "16000", "translate": "true", "max_speakers": "3"})
    assert config.turn["translate"] is True and config.max_speakers == 3
    with pytest.raises(ProtocolError, match="max_speakers"):
        parse_query({"sample_rate": "16000", "max_speakers": "0"})


@pytest.mark.parametrize(
    ("field", "value", "wording"),
    [
        ("max_turn_silence", "1500", "must be a number"),
        ("max_turn_silence", True, "must be a number"),
        ("min_turn_silence", [300], "must be a number"),
        ("end_of_turn_confidence_threshold", "high", "must be a number"),
        ("format_turns", "true", "must be true or false"),
        ("format_turns", 1, "must be true or false"),
        ("keyterms_prompt", '["foo"]', "must be a list of strings"),
        ("keyterms_prompt", ["foo", 1], "must be a list of strings"),
        ("prompt", 42, "must be a string"),
    ],
)
def test_update_configuration_type_errors_name_the_field(field, value, wording):
    err = text_error(protocol(), json.dumps({"type": "UpdateConfiguration", field: value}))
    assert err.reason == f"Invalid Message: {field} {wording}"


def test_update_configuration_null_new_name_falls_back_to_the_old_one():
    # was a TypeError (int(None)) escaping the sans-I/O layer
    cmds = protocol().receive_text(
        '{"type":"UpdateConfiguration","min_turn_silence":null,'
        '"min_end_of_turn_silence_when_confident":500}'
    )
    assert cmds == [UpdateConfig({"min_turn_silence_ms": 500})]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_turn_silence", -1),
        ("max_turn_silence", 60001),
        ("min_turn_silence", -400),
        ("min_end_of_turn_silence_when_confident", 10001),
        ("end_of_turn_confidence_threshold", 5.0),
        ("vad_threshold", -0.5),
    ],
)
def test_update_configuration_checks_ranges_like_the_query(field, value):
    err = text_error(protocol(), json.dumps({"type": "UpdateConfiguration", field: value}))
    assert err.reason.startswith(f"Invalid Message: {field} must be a number between ")


def test_parse_update_alone():
    assert parse_update({"type": "UpdateConfiguration"}) == {}
    assert parse_update({"format_turns": False}) == {"format_turns": False}


def test_messages_after_terminate_are_ignored():
    proto = protocol()
    assert proto.receive_text('{"type":"Terminate"}') == [Terminate()]
    assert proto.receive_text('{"type":"Terminate"}') == []
    assert proto.receive_text('{"type":"ForceEndpoint"}') == []
    assert proto.receive_text('{"type":"KeepAlive"}') == []
    assert proto.receive_text('{"type":"UpdateConfiguration","max_turn_silence":1}') == []
    assert proto.receive_text('{"type":"Nonsense"}') == []
    assert proto.receive_bytes(pcm(100)) == []
    assert proto.receive_bytes(b"\0") == []  # not even checked any more
    assert proto.state is State.TERMINATING


@pytest.mark.parametrize("text", ["not json", "[]", "{}"])
def test_malformed_frames_after_terminate_are_ignored_too(text):
    # a bad frame while the last turn is flushing must not turn a clean end into an error
    proto = protocol()
    proto.receive_text('{"type":"Terminate"}')
    assert proto.receive_text(text) == []


def test_nothing_is_received_after_close():
    proto = protocol()
    proto.render(SessionEnded(1000, 1000))
    assert proto.state is State.CLOSED
    assert proto.receive_text('{"type":"ForceEndpoint"}') == []
    assert proto.receive_text('{"type":"Terminate"}') == []
    assert proto.receive_bytes(pcm(100)) == []


# ------------------------------------------------------------------ render: Begin


def test_begin_is_sent_with_an_int_expiry():
    proto = protocol()
    frames = proto.render(SessionStarted("de5d9927-73a6-4be8-b52d-b4c07be37e6b", 1759796682))
    (begin,) = sent(frames)
    assert begin == {
        "type": "Begin",
        "id": "de5d9927-73a6-4be8-b52d-b4c07be37e6b",
        "expires_at": 1759796682,
    }
    event = BeginEvent.model_validate_json(frames[0].text)
    assert event.id == "de5d9927-73a6-4be8-b52d-b4c07be37e6b"
    assert int(event.expires_at.timestamp()) == 1759796682


def test_begin_expiry_given_as_float_is_still_an_int():
    begin = render_one(protocol(), SessionStarted("s", 1759796682.9))  # type: ignore[arg-type]
    assert type(begin["expires_at"]) is int


# ------------------------------------------------------------------ render: Turn

PARTIAL = turn(
    word("hi", 1920, 2000, conf=0.87),
    word("my", 2800, 2880, conf=0.81),
    word("name", 2960, 3040, final=False, conf=0.99),
    end_of_turn_confidence=0.001,
)


def test_partial_turn_matches_the_documented_example():
    frames = protocol().render(PARTIAL)
    assert sent(frames) == [
        {
            "type": "Turn",
            "turn_order": 0,
            "turn_is_formatted": False,
            "end_of_turn": False,
            "transcript": "hi my",
            "end_of_turn_confidence": 0.001,
            "words": [
                {
                    "start": 1920,
                    "end": 2000,
                    "text": "hi",
                    "confidence": 0.87,
                    "word_is_final": True,
                },
                {
                    "start": 2800,
                    "end": 2880,
                    "text": "my",
                    "confidence": 0.81,
                    "word_is_final": True,
                },
                {
                    "start": 2960,
                    "end": 3040,
                    "text": "name",
                    "confidence": 0.99,
                    "word_is_final": False,
                },
            ],
            "utterance": "",
        }
    ]
    event = TurnEvent.model_validate_json(frames[0].text)
    assert event.transcript == "hi my"
    assert [w.word_is_final for w in event.words] == [True, True, False]


def assert_sdk_types(message: dict) -> None:
    """Exact JSON types, stricter than pydantic's lax mode (which accepts 1.0 or "1" for int)."""
    assert type(message["turn_order"]) is int
    assert type(message["turn_is_formatted"]) is bool
    assert type(message["end_of_turn"]) is bool
    assert type(message["transcript"]) is str
    assert type(message["end_of_turn_confidence"]) is float
    for w in message["words"]:
        assert type(w["start"]) is int and type(w["end"]) is int
        assert type(w["text"]) is str
        assert type(w["confidence"]) is float
        assert type(w["word_is_final"]) is bool


def test_turn_types_are_exact_even_from_sloppy_engine_values():
    sloppy = TurnUpdate(
        channel=0,
        turn_order=3.0,  # type: ignore[arg-type]
        words=(Word("x", 10.0, 20.7, 1, 1),),  # type: ignore[arg-type]
        end_of_turn=1,  # type: ignore[arg-type]
        formatted=0,  # type: ignore[arg-type]
        end_of_turn_confidence=1,
    )
    proto = protocol()
    frames = proto.render(sloppy)
    message = sent(frames)[0]
    assert_sdk_types(message)
    assert message["turn_order"] == 3
    assert message["words"][0]["start"] == 10 and message["words"][0]["end"] == 20
    TurnEvent.model_validate_json(frames[0].text)


def test_unformatted_turn_transcript_holds_only_final_words():
    proto = protocol()
    message = render_one(
        proto, turn(word("a", 0, 1), word("b", 1, 2, final=False), word("c", 2, 3, final=False))
    )
    assert message["transcript"] == "a"
    assert [w["text"] for w in message["words"]] == ["a", "b", "c"]


def test_a_turn_with_only_tentative_words_has_an_empty_transcript():
    message = render_one(protocol(), turn(word("maybe", 0, 100, final=False)))
    assert message["transcript"] == ""
    TurnEvent.model_validate(message)


def test_end_of_turn_then_formatted_resend_share_the_turn_order():
    proto = protocol(format_turns="True")
    words = (word("hello", 0, 300), word("world", 350, 700))
    formatted_words = (word("Hello", 0, 300), word("world.", 350, 700))
    first = proto.render(turn(*words, order=4, end=True, end_of_turn_confidence=1.0))
    second = proto.render(
        turn(*formatted_words, order=4, end=True, formatted=True, end_of_turn_confidence=1.0)
    )
    a, b = sent(first)[0], sent(second)[0]
    assert (a["turn_order"], a["end_of_turn"], a["turn_is_formatted"]) == (4, True, False)
    assert (b["turn_order"], b["end_of_turn"], b["turn_is_formatted"]) == (4, True, True)
    assert a["transcript"] == "hello world"
    assert b["transcript"] == "Hello world."
    assert a["utterance"] == "hello world"
    assert b["utterance"] == "Hello world."
    for frame in (first[0], second[0]):
        assert_sdk_types(json.loads(frame.text))
        TurnEvent.model_validate_json(frame.text)


def test_formatted_turn_transcript_is_the_full_text_even_with_tentative_words():
    message = render_one(
        protocol(format_turns="true"),
        turn(word("Hi", 0, 1), word("there.", 1, 2, final=False), end=True, formatted=True),
    )
    assert message["transcript"] == "Hi there."


def test_confidences_are_rounded_to_four_places():
    message = render_one(
        protocol(), turn(word("a", 0, 1, conf=0.123456), end_of_turn_confidence=0.987654)
    )
    assert message["words"][0]["confidence"] == 0.1235
    assert message["end_of_turn_confidence"] == 0.9877


def test_an_empty_turn_is_still_valid_for_the_sdk():
    frames = protocol().render(turn())
    message = sent(frames)[0]
    assert message["words"] == [] and message["transcript"] == ""
    TurnEvent.model_validate_json(frames[0].text)


def test_language_fields_only_with_detection_and_only_at_end_of_turn():
    ended = turn(word("hola", 0, 100), end=True, language="es", language_confidence=0.93)
    partial = turn(word("hola", 0, 100), language="es", language_confidence=0.93)

    without = render_one(protocol(), ended)
    assert "language_code" not in without and "language_confidence" not in without

    proto = protocol(language_detection="true")
    assert "language_code" not in render_one(proto, partial)
    message = render_one(proto, ended)
    assert message["language_code"] == "es"
    assert message["language_confidence"] == 0.93
    event = TurnEvent.model_validate(message)
    assert event.language_code == "es"


def test_language_fields_are_left_out_when_the_engine_has_no_language():
    message = render_one(protocol(language_detection="true"), turn(word("x", 0, 1), end=True))
    assert "language_code" not in message


def test_a_zero_language_confidence_is_not_turned_into_certainty():
    message = render_one(
        protocol(language_detection="true"),
        turn(word("x", 0, 1), end=True, language="en", language_confidence=0.0),
    )
    assert message["language_confidence"] == 0.0


def test_speaker_labels_only_when_asked():
    update = TurnUpdate(
        0, 0, (Word("hi", 0, 1, 0.9, True, speaker="A"),), end_of_turn=True, speaker="A"
    )
    plain = render_one(protocol(), update)
    assert "speaker_label" not in plain and "speaker" not in plain["words"][0]
    labelled = render_one(protocol(speaker_labels="true"), update)
    assert labelled["speaker_label"] == "A"
    assert labelled["words"][0]["speaker"] == "A"
    TurnEvent.model_validate(labelled)


def test_speech_started_is_not_sent_in_v3():
    assert protocol().render(SpeechStarted(0, 1024)) == []


# ------------------------------------------------------------------ render: Termination


def test_termination_then_normal_close():
    proto = protocol()
    out = proto.render(SessionEnded(audio_ms=12000, session_ms=14200))
    assert sent(out) == [
        {"type": "Termination", "audio_duration_seconds": 12, "session_duration_seconds": 14}
    ]
    assert closes(out) == [Close(1000)]
    assert out[-1] == Close(1000)  # Termination is the last data frame
    assert proto.state is State.CLOSED
    event = TerminationEvent.model_validate_json(out[0].text)
    assert event.audio_duration_seconds == 12


@pytest.mark.parametrize(
    ("audio_ms", "seconds"), [(12500, 12), (12501, 13), (13500, 14), (499, 0), (0, 0), (1999, 2)]
)
def test_termination_durations_are_whole_seconds(audio_ms, seconds):
    out = protocol().render(SessionEnded(audio_ms=audio_ms, session_ms=audio_ms + 0.5))
    message = sent(out)[0]
    assert message["audio_duration_seconds"] == seconds
    assert type(message["audio_duration_seconds"]) is int
    assert type(message["session_duration_seconds"]) is int
    TerminationEvent.model_validate_json(out[0].text)  # 12.5 would fail int_from_float


@pytest.mark.parametrize("reason", list(EndReason))
def test_every_end_reason_renders_a_normal_termination(reason):
    out = protocol().render(SessionEnded(1000, 1000, reason))
    assert out[-1] == Close(1000)


# ------------------------------------------------------------------ render: errors


EXPECTED_CLOSE = {
    ErrorKind.AUTH: 1008,
    ErrorKind.BAD_REQUEST: 3006,
    ErrorKind.BAD_AUDIO: 3007,
    ErrorKind.RATE: 3007,
    ErrorKind.LIMIT: 3009,
    ErrorKind.QUOTA: 4002,  # Insufficient Funds: not 3009, which clients retry
    ErrorKind.EXPIRED: 3008,
    ErrorKind.TIMEOUT: 4031,
    ErrorKind.BUSY: 1013,
    ErrorKind.INTERNAL: 3005,
}


def test_every_error_kind_has_a_close_code():
    assert set(CLOSE_CODES) == set(ErrorKind)
    assert CLOSE_CODES == EXPECTED_CLOSE


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_error_event_sends_error_then_closes_with_the_same_code(kind):
    proto = protocol()
    out = proto.render(Error(kind, "something went wrong"))
    code = EXPECTED_CLOSE[kind]
    assert sent(out) == [{"type": "Error", "error_code": code, "error": "something went wrong"}]
    assert out[-1] == Close(code, "something went wrong")
    assert proto.state is State.CLOSED


def test_protocol_error_keeps_its_own_code():
    proto = protocol()
    with pytest.raises(ProtocolError) as info:
        proto.receive_bytes(b"\0" * 11)  # not whole samples
    out = proto.error(info.value)
    assert sent(out)[0]["error_code"] == 3007
    assert out[-1].code == 3007
    assert out[-1].reason == info.value.reason


def test_a_long_error_is_whole_in_the_message_and_cut_in_the_close_reason():
    long = "Invalid keyterms_prompt: " + "é" * 200
    out = protocol().render(Error(ErrorKind.BAD_REQUEST, long))
    assert sent(out)[0]["error"] == long
    (close,) = closes(out)
    assert close.code == 3006
    assert len(close.reason.encode("utf-8")) <= 123


@pytest.mark.parametrize(
    "late", [SessionStarted("s", 1), PARTIAL, SessionEnded(1000, 1000), Error(ErrorKind.AUTH, "x")]
)
def test_rendering_after_an_error_close_is_our_bug_and_says_so(late):
    proto = protocol()
    proto.render(Error(ErrorKind.INTERNAL, "boom"))
    with pytest.raises(LocalProtocolError) as info:
        proto.render(late)
    assert str(info.value) == "AssemblyAI v3: tried to render an event in state CLOSED"
    assert not isinstance(info.value, ProtocolError)  # never mistaken for the client's fault


def test_after_the_close_frames_and_a_second_error_are_documented_no_ops():
    """The loop may read one more frame before it notices an engine failure closed us, and
    the final `error()` may come after a cancelled sender rendered the close: both say nothing."""
    proto = protocol()
    proto.render(SessionEnded(1000, 1000))
    assert proto.receive_bytes(b"\0" * 1600) == []
    assert proto.receive_text('{"type": "ForceEndpoint"}') == []
    assert proto.error(ProtocolError(ErrorKind.BAD_AUDIO, "again")) == []
    assert proto.state is State.CLOSED
    with pytest.raises(LocalProtocolError, match="in state CLOSED"):
        proto.render(PARTIAL)


def test_the_transition_table_covers_every_state():
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.TERMINATING][Step.RECEIVE] is IGNORED


# ------------------------------------------------------------------ whole sessions


def test_transcript_of_a_clean_session():
    proto = V3Protocol(
        SessionConfig(audio=AudioFormat(sample_rate=16000), turn={"format_turns": True})
    )
    wire: list = []
    wire += proto.render(SessionStarted("abc", 1759796682))
    assert proto.receive_bytes(pcm(50)) == [RawAudio(pcm(50))]
    wire += proto.render(SpeechStarted(0, 0))
    wire += proto.render(turn(word("hello", 0, 300, final=False)))
    wire += proto.render(turn(word("hello", 0, 300), word("wor", 300, 500, final=False)))
    assert proto.receive_text('{"type":"ForceEndpoint"}') == [ForceEndpoint()]
    wire += proto.render(turn(word("hello", 0, 300), word("world", 300, 600), end=True))
    wire += proto.render(
        turn(word("Hello", 0, 300), word("world.", 300, 600), end=True, formatted=True)
    )
    assert proto.receive_text('{"type":"Terminate"}') == [Terminate()]
    wire += proto.render(SessionEnded(600, 2000))

    kinds = [json.loads(o.text)["type"] if isinstance(o, SendJson) else o for o in wire]
    assert kinds == ["Begin", "Turn", "Turn", "Turn", "Turn", "Termination", Close(1000)]
    turns = [json.loads(o.text) for o in wire if isinstance(o, SendJson)][1:5]
    assert [t["transcript"] for t in turns] == ["", "hello", "hello world", "Hello world."]
    assert {t["turn_order"] for t in turns} == {0}
    BeginEvent.model_validate_json(wire[0].text)
    for frame in wire[1:5]:
        TurnEvent.model_validate_json(frame.text)
    TerminationEvent.model_validate_json(wire[5].text)


def test_transcript_of_a_session_ended_by_a_bad_frame():
    proto = protocol()
    wire = proto.render(SessionStarted("abc", 1))
    try:
        proto.receive_text("[]")
    except ProtocolError as exc:
        wire += proto.error(exc)
    assert sent(wire)[1] == {"type": "Error", "error_code": 3006, "error": "Invalid Message: []"}
    assert wire[-1] == Close(3006, "Invalid Message: []")
    assert proto.receive_bytes(pcm(100)) == []


def test_a_formatted_turn_is_not_sent_to_a_client_that_did_not_ask_for_it():
    update = turn(word("Hi", 0, 1), end=True, formatted=True)
    assert protocol().render(update) == []
    assert protocol(format_turns="true").render(update)


def test_begin_carries_the_configuration_the_session_runs_with():
    proto = V3Protocol(parse_query(query()), model_name="tiny.en")
    (begin,) = sent(proto.render(SessionStarted("abc", 1_759_796_682)))
    assert begin["configuration"] == {"model": "tiny.en"}
    assert BeginEvent.model_validate(begin).configuration.model == "tiny.en"
    (plain,) = sent(protocol().render(SessionStarted("abc", 1_759_796_682)))
    assert "configuration" not in plain  # without a model name, as before

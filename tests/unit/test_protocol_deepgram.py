"""Deepgram live dialect, sans-I/O: query in, client frames in, engine events out, wire frames out.

Each test reads as a short transcript of one connection. Rendered frames are validated with the
official SDK's pydantic models (deepgram-sdk 7.17), strictly, which is more than the SDK itself
does (it builds them without validation), so a wrong type or a missing field fails here.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import wave
from datetime import UTC, datetime

import pytest
from deepgram.listen.v1.types.listen_v1configure_success import ListenV1ConfigureSuccess
from deepgram.listen.v1.types.listen_v1error import ListenV1Error
from deepgram.listen.v1.types.listen_v1metadata import ListenV1Metadata
from deepgram.listen.v1.types.listen_v1results import ListenV1Results
from deepgram.listen.v1.types.listen_v1speech_started import ListenV1SpeechStarted
from deepgram.listen.v1.types.listen_v1utterance_end import ListenV1UtteranceEnd

from streamscribe.errors import LocalProtocolError, ProtocolError
from streamscribe.events import (
    AudioFormat,
    AudioFormatSettled,
    AudioProgress,
    EndReason,
    Error,
    ErrorKind,
    Flushed,
    ForceEndpoint,
    KeepAlive,
    RawAudio,
    SessionEnded,
    SessionStarted,
    SpeechStarted,
    Terminate,
    TurnUpdate,
    UpdateConfig,
    Word,
)
from streamscribe.protocols.common import Close, SendJson, Step
from streamscribe.protocols.deepgram import (
    TRANSITIONS,
    DeepgramProtocol,
    State,
    parse_options,
    parse_query,
    session_config,
    wav_format,
)
from streamscribe.protocols.deepgram_options import http_error, plain_word, speaker_index, word_json

MODELS = {
    "Results": ListenV1Results,
    "Metadata": ListenV1Metadata,
    "SpeechStarted": ListenV1SpeechStarted,
    "UtteranceEnd": ListenV1UtteranceEnd,
    "Error": ListenV1Error,
    "ConfigureSuccess": ListenV1ConfigureSuccess,
}

# ------------------------------------------------------------------ helpers

RAW = [("model", "nova-3"), ("encoding", "linear16"), ("sample_rate", "16000")]


def options(*pairs: tuple[str, str], **params: str):
    return parse_options([*RAW, *pairs, *params.items()])


def rejected(*pairs: tuple[str, str], **params: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        options(*pairs, **params)
    assert info.value.kind is ErrorKind.BAD_REQUEST
    return info.value


def protocol(*pairs: tuple[str, str], **params: str) -> DeepgramProtocol:
    opts = options(*pairs, **params)
    now = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    proto = DeepgramProtocol(session_config(opts), opts, now=lambda: now)
    proto.render(SessionStarted("sess-1", 0))
    return proto


def sent(outgoing: list) -> list[dict]:
    """The JSON frames of a render() result as a client parses them, each validated strictly
    against the SDK's model for its type."""
    frames = [json.loads(o.text) for o in outgoing if isinstance(o, SendJson)]
    for frame in frames:
        MODELS[frame["type"]].model_validate(frame)
    return frames


def replies(proto: DeepgramProtocol) -> list[dict]:
    """The answers to the last client message, rendered as the session loop would."""
    return sent([o for r in proto.take_replies() for o in proto.render(r)])


def word(text: str, start: int, end: int, final: bool = True, conf: float = 0.9) -> Word:
    return Word(text, start, end, conf, final)


def turn(*words: Word, end: bool = False, formatted: bool = False, **kw) -> TurnUpdate:
    return TurnUpdate(
        channel=kw.pop("channel", 0),
        turn_order=kw.pop("order", 0),
        words=words,
        end_of_turn=end,
        formatted=formatted,
        **kw,
    )


HELLO = (word("hello", 100, 400), word("world", 480, 960))
HELLO_FMT = (word("Hello,", 100, 400), word("world.", 480, 960))


# ------------------------------------------------------------------ options


def test_a_minimal_query_becomes_a_session_config():
    config = parse_query(RAW)
    assert config.audio == AudioFormat("pcm_s16le", 16000, 1)
    assert config.turn == {"format_turns": False, "language": "en"}
    assert config.inactivity_timeout_s == 10.0  # Deepgram's no-audio rule
    assert config.model == "nova-3"
    assert config.language_detection is False


@pytest.mark.parametrize(
    ("name", "ours"), [("linear16", "pcm_s16le"), ("mulaw", "pcm_mulaw"), ("alaw", "pcm_alaw")]
)
def test_telephony_encodings_at_8_khz(name, ours):
    config = parse_query([("encoding", name), ("sample_rate", "8000")])
    assert config.audio == AudioFormat(ours, 8000, 1)


@pytest.mark.parametrize("encoding", ["opus", "flac", "linear32", "ogg-opus"])
def test_encodings_of_the_cloud_not_streamed_here_are_named(encoding):
    err = rejected(encoding=encoding)
    assert f"encoding='{encoding}' is not supported" in err.reason
    assert "linear16, mulaw or alaw" in err.reason


def test_an_unknown_encoding_is_called_unknown():
    assert "is unknown" in rejected(encoding="wav").reason


def test_sample_rate_is_required_with_an_encoding():
    with pytest.raises(ProtocolError) as info:
        parse_options([("encoding", "mulaw")])
    assert "Missing sample_rate" in info.value.reason and "sample_rate=16000" in info.value.reason


@pytest.mark.parametrize("rate", ["7999", "96000", "16k"])
def test_sample_rate_out_of_range_or_not_a_number(rate):
    assert "sample_rate" in rejected(sample_rate=rate).reason


def test_no_encoding_means_a_container_stream():
    opts = parse_options([("model", "nova-3")])
    assert opts.encoding is None and opts.sample_rate is None


def test_multichannel_gives_one_stream_per_channel():
    config = session_config(options(channels="2", multichannel="true"))
    assert config.audio.channels == 2


def test_several_channels_without_multichannel_are_refused_with_the_fix():
    err = rejected(channels="2")
    assert "multichannel=true" in err.reason


@pytest.mark.parametrize(
    ("value", "min_ms", "max_ms"), [("10", 200, 1280), ("300", 300, 1280), ("2000", 2000, 2000)]
)
def test_endpointing_sets_the_turn_silences(value, min_ms, max_ms):
    turn_settings = session_config(options(endpointing=value)).turn
    assert turn_settings["min_turn_silence_ms"] == min_ms
    assert turn_settings["max_turn_silence_ms"] == max_ms


def test_endpointing_false_keeps_the_engine_rules_and_clears_speech_final():
    opts = options(endpointing="false")
    assert opts.endpointing is False
    assert "min_turn_silence_ms" not in session_config(opts).turn


def test_endpointing_must_be_a_number_or_false():
    assert "endpointing" in rejected(endpointing="soon").reason


@pytest.mark.parametrize(("raw", "code"), [("en-US", "en"), ("es", "es"), ("pt-BR", "pt")])
def test_language_tags_become_model_languages(raw, code):
    assert session_config(options(language=raw)).turn["language"] == code


def test_language_multi_means_detection():
    config = session_config(options(language="multi"))
    assert "language" not in config.turn and config.language_detection is True


def test_an_unknown_language_is_refused():
    assert "language='xx-YY'" in rejected(language="xx-YY").reason


def test_keyterms_and_keywords_repeat_as_the_sdk_sends_them_and_become_the_prompt():
    opts = options(("keyterm", "Streamscribe"), ("keyterm", "soxr"), ("keywords", "Nova:2.5"))
    assert opts.keyterms == ("Streamscribe", "soxr", "Nova")
    assert session_config(opts).turn["keyterms"] == ("Streamscribe", "soxr", "Nova")


def test_too_many_keyterms_are_refused():
    assert "keyterm" in rejected(*[("keyterm", f"t{i}") for i in range(101)]).reason


@pytest.mark.parametrize("flag", ["punctuate", "smart_format"])
def test_punctuation_asks_for_the_formatted_turn(flag):
    assert session_config(options(**{flag: "true"})).turn["format_turns"] is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("redact", "pci"),
        ("search", "hello"),
        ("replace", "a:b"),
        ("detect_entities", "true"),
        ("profanity_filter", "true"),
        ("dictation", "true"),
        ("callback", "https://example.com/hook"),
    ],
)
def test_features_not_built_are_refused_by_name(name, value):
    err = rejected(**{name: value})
    assert err.reason.startswith(f"{name}=") and "not supported" in err.reason


def test_features_not_built_may_be_turned_off_explicitly():
    assert options(redact="false", profanity_filter="false").model == "nova-3"


def test_livekits_default_query_is_accepted():
    """livekit-plugins-deepgram 1.8 connects with these by default (filler_words on)."""
    opts = options(
        model="nova-3", punctuate="true", smart_format="false", no_delay="true",
        interim_results="true", encoding="linear16", vad_events="true", sample_rate="16000",
        channels="1", endpointing="25", filler_words="true", profanity_filter="false",
        numerals="false", mip_opt_out="false", language="en-US",
    )  # fmt: skip
    assert opts.filler_words and opts.language == "en"


def test_filler_words_become_a_turn_setting_and_a_warning_in_metadata():
    assert session_config(options(filler_words="true")).turn["filler_words"] is True
    assert "filler_words" not in session_config(options(filler_words="false")).turn
    proto = protocol(filler_words="true")
    (meta,) = sent(proto.render(SessionEnded(audio_ms=0, session_ms=10)))
    assert [w["parameter"] for w in meta["warnings"]] == ["filler_words"]
    ListenV1Metadata.model_validate(meta)
    (plain,) = sent(protocol().render(SessionEnded(audio_ms=0, session_ms=10)))
    assert "warnings" not in plain


def test_diarize_asks_for_speaker_labels_and_words_carry_integer_speakers():
    assert session_config(options(diarize="true")).speaker_labels is True
    assert session_config(options(diarize_model="latest")).speaker_labels is False
    word = Word("Hello,", 100, 400, 0.9, True, speaker="B")
    assert word_json(word, punctuated=True)["speaker"] == 1
    assert "speaker" not in word_json(Word("hi", 0, 100, 0.9, True), punctuated=False)


@pytest.mark.parametrize(
    ("label", "index"), [("A", 0), ("Z", 25), ("AA", 26), ("AZ", 51), ("BA", 52)]
)
def test_speaker_labels_map_to_deepgrams_integers(label, index):
    assert speaker_index(label) == index


def test_offline_meaningless_parameters_and_unknown_ones_are_accepted():
    opts = options(
        ("tag", "billing"), ("mip_opt_out", "true"), ("version", "latest"), ("numerals", "true")
    )
    assert opts.tags == ("billing",)
    opts = parse_options([*RAW, ("future_param", "x"), ("model", "nova-2-phonecall")])
    assert opts.model == "nova-2-phonecall"
    assert session_config(opts).model == "nova-2-phonecall"  # a model name we serve is used


def test_extra_is_key_value():
    assert options(("extra", "a:1"), ("extra", "b: two")).extra == {"a": "1", "b": "two"}
    assert "extra='nocolon'" in rejected(extra="nocolon").reason


def test_http_refusals_use_deepgrams_body():
    status, body = http_error(ErrorKind.AUTH, "Invalid credentials.")
    assert status == 401 and body["err_code"] == "INVALID_AUTH"
    status, body = http_error(ErrorKind.BAD_REQUEST, "bad")
    assert status == 400 and body["err_msg"] == "bad" and len(body["request_id"]) == 36
    # out of credit is 402, not the 429 of too many concurrent requests
    status, body = http_error(ErrorKind.QUOTA, "Daily audio limit reached")
    assert status == 402 and body["err_code"] == "ASR_PAYMENT_REQUIRED"
    assert http_error(ErrorKind.LIMIT, "too many")[0] == 429


def test_plain_words_are_lower_case_without_punctuation():
    assert [plain_word(w) for w in ("Hello,", "world.", "Night's", "--")] == [
        "hello",
        "world",
        "night's",
        "",
    ]


# ------------------------------------------------------------------ client frames


def test_audio_of_any_chunk_size_is_forwarded_in_whole_samples():
    proto = protocol()
    assert proto.receive_bytes(b"\x01\x02\x03") == [RawAudio(b"\x01\x02")]
    assert proto.receive_bytes(b"\x04") == [RawAudio(b"\x03\x04")]
    assert proto.receive_bytes(b"\x05") == []
    assert proto.audio_ms == 0  # two samples at 16 kHz


def test_stereo_frames_stay_whole():
    proto = protocol(channels="2", multichannel="true")
    assert proto.receive_bytes(b"\x00" * 6) == [RawAudio(b"\x00" * 4)]
    assert proto.receive_bytes(b"\x00" * 2) == [RawAudio(b"\x00" * 4)]


def test_an_empty_binary_frame_closes_the_stream_like_closestream():
    proto = protocol()
    assert proto.receive_bytes(b"") == [Terminate()]
    assert proto.state is State.CLOSING
    assert proto.receive_bytes(b"\x00\x00") == [] and proto.receive_text('{"type": "x"}') == []


def test_control_messages():
    proto = protocol()
    assert proto.receive_text('{"type": "KeepAlive"}') == [KeepAlive()]
    first = proto.receive_text('{"type": "Finalize"}')
    second = proto.receive_text('{"type":"Finalize"}')
    assert first == [ForceEndpoint(None, "finalize-1")]
    assert second == [ForceEndpoint(None, "finalize-2")]
    assert proto.receive_text('{"type": "CloseStream"}') == [Terminate()]
    assert proto.state is State.CLOSING


def test_finalize_may_name_a_channel():
    proto = protocol(channels="2", multichannel="true")
    assert proto.receive_text('{"type": "Finalize", "channel": 1}') == [
        ForceEndpoint(1, "finalize-1")
    ]
    assert proto.receive_text('{"type": "Finalize", "channel": 2}') == []
    (error,) = replies(proto)
    assert error["variant"] == "SchemaError" and "0 to 1" in error["description"]


def test_a_control_message_sent_as_a_binary_frame_is_still_honoured():
    proto = protocol()
    assert proto.receive_bytes(b'{"type": "KeepAlive"}') == [KeepAlive()]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not json", "Could not parse"),
        ("[1]", "JSON object"),
        ('{"type": "Dance"}', "Unknown message type Dance"),
        ('{"hello": 1}', "Unknown message type missing"),
        ("x" * 70000, "70000 characters"),
    ],
)
def test_bad_text_is_answered_with_a_schema_error_and_the_stream_goes_on(text, needle):
    proto = protocol()
    assert proto.receive_text(text) == []
    (error,) = replies(proto)
    assert error["variant"] == "SchemaError" and needle in error["description"]
    assert error["message"] == text[:1000] and error["code"] == "DATA-0000"
    assert proto.state is State.OPEN
    assert proto.receive_text('{"type": "KeepAlive"}') == [KeepAlive()]
    assert proto.take_replies() == []


def test_text_faster_than_the_rate_limit_closes_1008():
    t = [0.0]
    opts = options()
    proto = DeepgramProtocol(session_config(opts), opts, clock=lambda: t[0])
    for _ in range(100):
        proto.receive_text('{"type": "KeepAlive"}')
    with pytest.raises(ProtocolError) as info:
        proto.receive_text('{"type": "KeepAlive"}')
    assert info.value.kind is ErrorKind.RATE
    assert [o.code for o in proto.error(info.value) if isinstance(o, Close)] == [1008]


def test_configure_changes_keyterms_and_is_confirmed():
    proto = protocol()
    commands = proto.receive_text('{"type": "Configure", "keyterms": ["Kubernetes"]}')
    assert commands == [UpdateConfig({"keyterms": ("Kubernetes",)})]
    assert replies(proto) == [
        {"type": "ConfigureSuccess", "request_id": "sess-1", "keyterms": ["Kubernetes"]}
    ]


def test_configure_without_keyterms_keeps_them_and_an_empty_list_clears_them():
    proto = protocol(keyterm="Streamscribe")
    # the SDK sends every field of its model, unset ones as null
    assert proto.receive_text('{"type": "Configure", "keyterms": null, "features": null}') == []
    assert replies(proto)[0]["keyterms"] == ["Streamscribe"]
    assert proto.receive_text('{"type": "Configure", "keyterms": []}') == [
        UpdateConfig({"keyterms": ()})
    ]
    assert replies(proto)[0]["keyterms"] == []


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"features": {"numerals": True}}, "CONFIGURE_INTERNAL_ERROR"),
        ({"keyterms": "one"}, "CONFIGURE_KEYTERMS_NOT_SUPPORTED"),
        ({"keyterms": [f"t{i}" for i in range(101)]}, "CONFIGURE_KEYTERM_LIMIT_EXCEEDED"),
    ],
)
def test_configure_that_cannot_be_done_fails_loudly(message, code):
    proto = protocol()
    assert proto.receive_text(json.dumps({"type": "Configure", **message})) == []
    (frame,) = [json.loads(o.text) for r in proto.take_replies() for o in proto.render(r)]
    assert frame["type"] == "ConfigureFailure" and frame["code"] == code
    assert frame["request_id"] == "sess-1" and frame["description"]


# ------------------------------------------------------------------ engine events


def test_no_greeting_and_the_session_id_is_the_request_id():
    opts = options()
    proto = DeepgramProtocol(session_config(opts), opts)
    assert proto.render(SessionStarted("abc", 0)) == []
    frames = sent(proto.render(turn(*HELLO, end=True)))
    assert frames[0]["metadata"]["request_id"] == "abc"


def test_interims_only_when_asked_for():
    assert protocol().render(turn(word("hello", 100, 400, final=False))) == []
    proto = protocol(interim_results="true")
    (frame,) = sent(proto.render(turn(word("hello", 100, 400), word("wor", 480, 700, False))))
    assert frame["is_final"] is False and frame["speech_final"] is False
    assert frame["channel"]["alternatives"][0]["transcript"] == "hello wor"  # the whole turn
    assert frame["start"] == 0.0 and frame["duration"] == 0.7


def test_a_final_turn_in_seconds_with_real_confidences():
    proto = protocol()
    (frame,) = sent(proto.render(turn(word("hello", 100, 400, conf=0.8), HELLO[1], end=True)))
    assert frame["is_final"] is True and frame["speech_final"] is True
    assert frame["from_finalize"] is False
    assert frame["channel_index"] == [0, 1]
    alt = frame["channel"]["alternatives"][0]
    assert alt["transcript"] == "hello world"
    assert alt["confidence"] == pytest.approx(0.85)
    assert alt["words"][0] == {"word": "hello", "start": 0.1, "end": 0.4, "confidence": 0.8}
    assert isinstance(frame["start"], float) and isinstance(frame["duration"], float)


def test_without_punctuation_the_formatted_resend_is_not_sent():
    assert protocol().render(turn(*HELLO_FMT, end=True, formatted=True)) == []


def test_with_punctuation_the_formatted_turn_is_the_final():
    proto = protocol(punctuate="true")
    assert proto.render(turn(*HELLO, end=True)) == []
    (frame,) = sent(proto.render(turn(*HELLO_FMT, end=True, formatted=True)))
    alt = frame["channel"]["alternatives"][0]
    assert alt["transcript"] == "Hello, world."
    assert [(w["word"], w["punctuated_word"]) for w in alt["words"]] == [
        ("hello", "Hello,"),
        ("world", "world."),
    ]


def test_spans_tile_the_stream():
    proto = protocol(interim_results="true")
    first = sent(proto.render(turn(*HELLO, end=True)))[0]
    interim = sent(proto.render(turn(word("again", 2000, 2400, False), order=1)))[0]
    second = sent(proto.render(turn(word("again", 2000, 2500), end=True, order=1)))[0]
    assert first["start"] + first["duration"] == pytest.approx(0.96)
    assert interim["start"] == second["start"] == pytest.approx(0.96)
    assert second["start"] + second["duration"] == pytest.approx(2.5)


def test_a_turn_ended_by_finalize_is_from_finalize_and_not_speech_final():
    proto = protocol()
    proto.receive_text('{"type": "Finalize"}')
    frames = sent(proto.render(turn(*HELLO, end=True, forced=True)))
    assert [(f["is_final"], f["speech_final"], f["from_finalize"]) for f in frames] == [
        (True, False, True)
    ]
    assert proto.render(Flushed("finalize-1")) == []  # already answered by the turn


def test_a_finalize_with_nothing_pending_still_gets_an_empty_final():
    proto = protocol()
    proto.receive_bytes(b"\x00" * 32000)  # one second of audio, no speech
    proto.receive_text('{"type": "Finalize"}')
    (frame,) = sent(proto.render(Flushed("finalize-1")))
    assert frame["from_finalize"] is True and frame["is_final"] is True
    assert frame["channel"]["alternatives"][0] == {"transcript": "", "confidence": 0.0, "words": []}
    assert frame["start"] == 0.0 and frame["duration"] == 1.0


def test_markers_of_other_dialects_are_not_finalize():
    assert protocol().render(Flushed("checkpoint")) == []


def test_endpointing_false_never_sets_speech_final():
    (frame,) = sent(protocol(endpointing="false").render(turn(*HELLO, end=True)))
    assert frame["is_final"] is True and frame["speech_final"] is False


def test_utterance_end_follows_a_final_once_the_gap_is_heard():
    proto = protocol(utterance_end_ms="1000")
    assert [f["type"] for f in sent(proto.render(turn(*HELLO, end=True)))] == ["Results"]
    assert proto.render(AudioProgress(1900)) == []  # 0.94 s after the last word
    frames = sent(proto.render(AudioProgress(2000)))
    assert frames == [{"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 0.96}]
    assert proto.render(AudioProgress(5000)) == []  # once per utterance


def test_utterance_end_at_once_when_the_gap_was_heard_before_the_final():
    proto = protocol(utterance_end_ms="1000")
    proto.render(AudioProgress(2500))
    frames = sent(proto.render(turn(*HELLO, end=True)))
    assert [f["type"] for f in frames] == ["Results", "UtteranceEnd"]


def test_new_words_before_the_gap_keep_the_utterance_open():
    proto = protocol(utterance_end_ms="1000", interim_results="true")
    proto.render(turn(*HELLO, end=True))
    proto.render(AudioProgress(1500))
    proto.render(turn(word("and", 1700, 1900, False), order=1))  # speaking again
    assert proto.render(AudioProgress(3500)) == []  # no end while the turn is open
    final, end = sent(proto.render(turn(word("and", 1700, 1900), end=True, order=1)))
    assert final["type"] == "Results" and end["type"] == "UtteranceEnd"
    assert end["last_word_end"] == 1.9  # 1.6 s of audio heard past it already


def test_no_utterance_end_without_utterance_end_ms():
    proto = protocol()
    proto.render(turn(*HELLO, end=True))
    assert proto.render(AudioProgress(10000)) == []
    assert session_config(options()).progress_interval_ms is None
    assert session_config(options(utterance_end_ms="1000")).progress_interval_ms == 100


def test_speech_started_only_with_vad_events():
    assert protocol().render(SpeechStarted(0, 1234)) == []
    frames = sent(protocol(vad_events="true").render(SpeechStarted(0, 1234)))
    assert frames == [{"type": "SpeechStarted", "channel": [0], "timestamp": 1.234}]


def test_multichannel_results_name_their_channel():
    proto = protocol(channels="2", multichannel="true")
    (frame,) = sent(proto.render(turn(*HELLO, end=True, channel=1)))
    assert frame["channel_index"] == [1, 2]


def test_language_multi_reports_the_detected_language():
    (frame,) = sent(protocol(language="multi").render(turn(*HELLO, end=True, language="en")))
    alt = frame["channel"]["alternatives"][0]
    assert alt["languages"] == ["en"] and alt["words"][0]["language"] == "en"


def test_extra_is_echoed_in_every_results_metadata():
    (frame,) = sent(protocol(extra="team:blue").render(turn(*HELLO, end=True)))
    assert frame["metadata"]["extra"] == {"team": "blue"}


def test_after_closestream_only_finals_go_out():
    proto = protocol(interim_results="true", vad_events="true")
    proto.receive_text('{"type": "CloseStream"}')
    assert proto.render(turn(word("late", 100, 400, final=False))) == []
    assert proto.render(SpeechStarted(0, 500)) == []
    (frame,) = sent(proto.render(turn(word("late", 100, 400), end=True)))
    assert frame["is_final"] is True


def test_the_end_is_metadata_then_close_1000():
    proto = protocol()
    audio = b"\x01\x00" * 16000
    proto.receive_bytes(audio)
    out = proto.render(SessionEnded(audio_ms=1000, session_ms=1500))
    (meta,) = sent(out)
    assert meta["type"] == "Metadata" and meta["transaction_key"] == "deprecated"
    assert meta["request_id"] == "sess-1" and meta["channels"] == 1
    assert meta["duration"] == 1.0 and isinstance(meta["duration"], float)
    assert meta["sha256"] == hashlib.sha256(audio).hexdigest()
    assert meta["created"] == "2026-01-02T03:04:05.678Z"
    assert meta["models"] == list(meta["model_info"])
    assert out[-1] == Close(1000)
    with pytest.raises(LocalProtocolError):  # the sender never renders after the close
        proto.render(turn(*HELLO, end=True))


@pytest.mark.parametrize(
    ("kind", "code", "prefix"),
    [
        (ErrorKind.TIMEOUT, 1011, "NET-0001"),
        (ErrorKind.INTERNAL, 1011, "NET-0000"),
        (ErrorKind.EXPIRED, 1011, "NET-0000"),
        (ErrorKind.BAD_AUDIO, 1008, "DATA-0000"),
        (ErrorKind.QUOTA, 1008, "ASR_PAYMENT_REQUIRED"),
    ],
)
def test_errors_close_with_deepgrams_codes(kind, code, prefix):
    """The cloud sends no message before these closes: the code and reason say it all."""
    out = protocol().render(Error(kind, "what happened"))
    (close,) = out
    assert close.code == code and close.reason.startswith(prefix + " ")
    assert len(close.reason.encode()) <= 123


def test_the_no_audio_timeout_says_how_to_keep_the_stream_open():
    (close,) = protocol().error(ProtocolError(ErrorKind.TIMEOUT, "idle"))
    assert "KeepAlive" in close.reason and "10 s" in close.reason


def test_session_ended_with_an_error_reason_still_ends_cleanly():
    out = protocol().render(SessionEnded(0, 0, EndReason.CLIENT_GONE))
    assert out[-1] == Close(1000)


# ------------------------------------------------------------------ WAV streams


def wav_bytes(rate: int, channels: int, frames: bytes = b"\x00\x00" * 10) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames * channels)
    return buf.getvalue()


def g711_wav(code: int, rate: int = 8000) -> bytes:
    fmt = struct.pack("<HHIIHH", code, 1, rate, rate, 1, 8)
    data = b"\xff" * 80
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", 80)
    return b"RIFF" + struct.pack("<I", len(body) + 80) + body + data


def test_a_wav_header_gives_the_format_and_where_audio_starts():
    data = wav_bytes(8000, 2)
    fmt, offset = wav_format(data)
    assert fmt == AudioFormat("pcm_s16le", 8000, 2)
    assert offset == 44 and len(data) - offset == 40


@pytest.mark.parametrize(("code", "encoding"), [(7, "pcm_mulaw"), (6, "pcm_alaw")])
def test_g711_wav_streams(code, encoding):
    fmt, offset = wav_format(g711_wav(code))
    assert fmt == AudioFormat(encoding, 8000, 1) and offset == 44


def test_raw_audio_is_not_a_wav_header():
    assert wav_format(b"\x00\x01" * 100) is None


def test_unsupported_or_cut_wav_headers_are_refused():
    with pytest.raises(ProtocolError, match="format 3"):
        wav_format(g711_wav(3))  # IEEE float
    with pytest.raises(ProtocolError, match="Incomplete WAV header"):
        wav_format(wav_bytes(16000, 1)[:30])


# ------------------------------------------------------------------ WAV streams: the wait

WAV_QUERY = [("model", "nova-3")]  # no encoding=: the first binary frame is a WAV header


def wav_stream(*pairs: tuple[str, str]) -> DeepgramProtocol:
    opts = parse_options([*WAV_QUERY, *pairs])
    proto = DeepgramProtocol(session_config(opts), opts)
    proto.render(SessionStarted("sess-1", 0))
    return proto


def refusal(proto: DeepgramProtocol, data: bytes) -> tuple[ProtocolError, Close]:
    """The error a frame raises and the close the session loop then gets from `error()`."""
    with pytest.raises(ProtocolError) as info:
        proto.receive_bytes(data)
    (close,) = proto.error(info.value)
    return info.value, close


def test_without_encoding_the_stream_waits_for_its_format():
    assert wav_stream().state is State.AWAITING_FORMAT
    assert protocol().state is State.OPEN


def test_the_first_frame_settles_the_format_and_only_the_audio_after_the_header_goes_on():
    proto = wav_stream()
    data = wav_bytes(8000, 1, b"\x01\x00" * 10)
    assert proto.receive_bytes(data) == [
        AudioFormatSettled(AudioFormat("pcm_s16le", 8000, 1)),
        RawAudio(b"\x01\x00" * 10),
    ]
    assert proto.state is State.OPEN
    assert proto.receive_bytes(b"\x02\x00" * 4) == [RawAudio(b"\x02\x00" * 4)]  # no re-sniff


def test_a_header_alone_settles_the_format_with_no_audio_yet():
    proto = wav_stream()
    data = wav_bytes(16000, 1, b"")
    assert proto.receive_bytes(data) == [AudioFormatSettled(AudioFormat("pcm_s16le", 16000, 1))]
    assert proto.receive_bytes(b"\x01\x00") == [RawAudio(b"\x01\x00")]


def test_the_metadata_hashes_the_whole_stream_header_included():
    proto = wav_stream()
    data = wav_bytes(16000, 1)
    proto.receive_bytes(data)
    (metadata,) = sent(proto.render(SessionEnded(0, 0)))
    assert metadata["sha256"] == hashlib.sha256(data).hexdigest()


def test_keepalive_passes_at_once_and_finalize_waits_for_the_format():
    proto = wav_stream(("multichannel", "true"))
    assert proto.receive_text('{"type": "KeepAlive"}') == [KeepAlive()]
    assert proto.receive_text('{"type": "Finalize"}') == []
    assert proto.receive_text('{"type": "KeepAlive"}') == [KeepAlive()]
    assert proto.receive_text('{"type": "Finalize", "channel": 1}') == []
    assert proto.state is State.AWAITING_FORMAT
    out = proto.receive_bytes(wav_bytes(16000, 2, b"\x01\x00\x02\x00"))
    assert out == [
        AudioFormatSettled(AudioFormat("pcm_s16le", 16000, 2)),
        ForceEndpoint(None, marker="finalize-1"),
        ForceEndpoint(1, marker="finalize-2"),  # checked against the sniffed channels
        RawAudio(b"\x01\x00\x02\x00" * 2),
    ]


def test_closestream_before_any_audio_ends_the_wait_with_the_query_format():
    proto = wav_stream(("sample_rate", "8000"))
    assert proto.receive_text('{"type": "Finalize"}') == []
    out = proto.receive_text('{"type": "CloseStream"}')
    assert out == [
        AudioFormatSettled(AudioFormat("pcm_s16le", 8000, 1)),
        ForceEndpoint(None, marker="finalize-1"),
        Terminate(),
    ]
    assert proto.state is State.CLOSING
    assert proto.receive_bytes(wav_bytes(16000, 1)) == []  # after CloseStream: ignored


def test_an_empty_frame_before_any_audio_is_the_legacy_close():
    proto = wav_stream()
    assert proto.receive_bytes(b"") == [AudioFormatSettled(AudioFormat()), Terminate()]
    assert proto.state is State.CLOSING


def test_another_message_before_audio_ends_the_wait_as_the_route_did():
    """Configure (or anything but KeepAlive and Finalize) ends the wait: from then on binary
    frames are the query's raw format, exactly as before the wait moved into the dialect."""
    proto = wav_stream()
    out = proto.receive_text('{"type": "Configure", "keyterms": ["alpha"]}')
    assert out == [AudioFormatSettled(AudioFormat()), UpdateConfig({"keyterms": ("alpha",)})]
    assert [r["type"] for r in replies(proto)] == ["ConfigureSuccess"]
    assert proto.state is State.OPEN


def test_a_message_that_is_not_json_ends_the_wait_and_gets_its_schema_error():
    proto = wav_stream()
    assert proto.receive_text("not json") == [AudioFormatSettled(AudioFormat())]
    assert [r["variant"] for r in replies(proto)] == ["SchemaError"]


def test_at_most_64_messages_are_held():
    proto = wav_stream()
    for _ in range(63):
        assert proto.receive_text('{"type": "Finalize"}') == []
    out = proto.receive_text('{"type": "Finalize"}')
    assert out[0] == AudioFormatSettled(AudioFormat()) and len(out) == 65
    assert proto.state is State.OPEN


def test_a_first_frame_that_is_not_wav_is_refused_with_the_fix():
    proto = wav_stream()
    exc, close = refusal(proto, b"\x1a\x45\xdf\xa3" + b"\x00" * 60)  # WebM
    assert exc.kind is ErrorKind.BAD_AUDIO and "Unknown audio format" in exc.reason
    assert close.code == 1008 and close.reason.startswith("DATA-0000 Unknown audio format")
    assert proto.state is State.CLOSED


def test_a_stereo_wav_without_multichannel_is_refused():
    proto = wav_stream()
    exc, close = refusal(proto, wav_bytes(16000, 2))
    assert "2-channel WAV stream without multichannel=true" in exc.reason
    assert close.code == 1008


def test_a_stereo_wav_with_multichannel_is_two_channels():
    proto = wav_stream(("multichannel", "true"))
    out = proto.receive_bytes(wav_bytes(16000, 2, b"\x01\x00"))
    assert out[0] == AudioFormatSettled(AudioFormat("pcm_s16le", 16000, 2))
    assert proto.channels == 2


def test_a_header_cut_short_is_refused_not_waited_for():
    """The first binary frame must hold the whole header: a split header is not reassembled."""
    proto = wav_stream()
    exc, close = refusal(proto, wav_bytes(16000, 1)[:30])
    assert "Incomplete WAV header" in exc.reason and close.code == 1008


def test_an_idle_timeout_while_waiting_closes_net_0001():
    (close,) = wav_stream().error(ProtocolError(ErrorKind.TIMEOUT, "idle"))
    assert close.code == 1011 and close.reason.startswith("NET-0001 ")


def test_the_deepgram_table_covers_every_state():
    assert set(TRANSITIONS) == set(State)
    assert Step.SETTLE in TRANSITIONS[State.AWAITING_FORMAT]
    assert all(
        Step.SETTLE not in steps
        for state, steps in TRANSITIONS.items()
        if state is not State.AWAITING_FORMAT
    )


def test_rendering_after_the_close_is_our_bug():
    proto = protocol()
    proto.render(SessionEnded(0, 0))
    assert proto.receive_text('{"type": "KeepAlive"}') == []  # a late frame: ignored
    with pytest.raises(
        LocalProtocolError, match="Deepgram: tried to render an event in state CLOSED"
    ):
        proto.render(SessionEnded(0, 0))

"""Deepgram pre-recorded (`POST /v1/listen`), sans-I/O: options and final turns in, response out.

Responses are validated strictly with the SDK's own `ListenV1Response` model (deepgram-sdk 7.17).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from deepgram.types.listen_v1response import ListenV1Response

from streamscribe.errors import ProtocolError
from streamscribe.events import TurnUpdate, Word
from streamscribe.protocols.deepgram_prerecorded import parse_prerecorded, response

CREATED = datetime(2026, 5, 6, 7, 8, 9, 10000, tzinfo=UTC)


def turn(*words: tuple[str, int, int], channel: int = 0, order: int = 0, language=None):
    return TurnUpdate(
        channel=channel,
        turn_order=order,
        words=tuple(Word(t, s, e, 0.9, True) for t, s, e in words),
        end_of_turn=True,
        formatted=True,
        language=language,
    )


FIRST = turn(("Hello,", 100, 400), ("world.", 500, 900), ("Again?", 2500, 2900))
SECOND = turn(("Good", 4000, 4300), ("bye.", 4400, 4800), order=1)
OTHER = turn(("Other", 300, 700), ("side.", 800, 1200), channel=1)


def answer(channels, *params: tuple[str, str]) -> dict:
    body = response(
        channels,
        parse_prerecorded([("model", "nova-3"), *params]),
        request_id="req-1",
        sha256="ab" * 32,
        created=CREATED,
        duration_ms=5000,
    )
    ListenV1Response.model_validate(body)  # strictly: every required field, every type
    return body


def test_metadata():
    meta = answer([[FIRST]])["metadata"]
    assert meta["request_id"] == "req-1" and meta["sha256"] == "ab" * 32
    assert meta["created"] == "2026-05-06T07:08:09.010Z"
    assert meta["duration"] == 5.0 and meta["channels"] == 1
    (uuid,) = meta["models"]
    assert meta["model_info"][uuid]["name"] == "nova-3"


def test_one_channel_holds_every_word_in_seconds():
    (channel,) = answer([[FIRST, SECOND]])["results"]["channels"]
    (alt,) = channel["alternatives"]
    assert alt["transcript"] == "hello world again good bye"
    assert [w["start"] for w in alt["words"]] == [0.1, 0.5, 2.5, 4.0, 4.4]
    assert alt["confidence"] == pytest.approx(0.9)
    assert "utterances" not in answer([[FIRST]])["results"]


def test_punctuation_fills_punctuated_word_and_the_transcript():
    alt = answer([[FIRST]], ("punctuate", "true"))["results"]["channels"][0]["alternatives"][0]
    assert alt["transcript"] == "Hello, world. Again?"
    assert alt["words"][0] == {
        "word": "hello",
        "start": 0.1,
        "end": 0.4,
        "confidence": 0.9,
        "punctuated_word": "Hello,",
    }


def test_multichannel_gives_one_entry_per_channel():
    body = answer([[FIRST], [OTHER]], ("multichannel", "true"))
    assert body["metadata"]["channels"] == 2
    texts = [c["alternatives"][0]["transcript"] for c in body["results"]["channels"]]
    assert texts == ["hello world again", "other side"]


def test_utterances_split_at_turns_and_pauses_sorted_by_start():
    body = answer([[FIRST, SECOND], [OTHER]], ("utterances", "true"), ("multichannel", "true"))
    utterances = body["results"]["utterances"]
    assert [(u["channel"], u["transcript"]) for u in utterances] == [
        (0, "hello world"),
        (1, "other side"),
        (0, "again"),  # 1.6 s after "world": past utt_split (0.8 s)
        (0, "good bye"),
    ]
    assert utterances[0]["start"] == 0.1 and utterances[0]["end"] == 0.9
    assert len({u["id"] for u in utterances}) == 4


def test_utt_split_sets_the_pause():
    body = answer([[FIRST]], ("utterances", "true"), ("utt_split", "2"))
    assert [u["transcript"] for u in body["results"]["utterances"]] == ["hello world again"]


def test_smart_format_adds_paragraphs_of_sentences():
    alt = answer([[FIRST, SECOND]], ("smart_format", "true"))["results"]["channels"][0][
        "alternatives"
    ][0]
    paragraphs = alt["paragraphs"]
    assert paragraphs["transcript"] == "\nHello, world. Again?\n\nGood bye.\n"
    first = paragraphs["paragraphs"][0]
    assert [s["text"] for s in first["sentences"]] == ["Hello, world.", "Again?"]
    assert first["num_words"] == 3 and first["start"] == 0.1 and first["end"] == 2.9


def test_language_multi_reports_the_detected_language():
    body = answer([[turn(("hola", 0, 300), language="es")]], ("language", "multi"))
    channel = body["results"]["channels"][0]
    assert channel["detected_language"] == "es"
    assert channel["alternatives"][0]["languages"] == ["es"]


def test_silence_gives_an_empty_alternative_not_a_missing_one():
    (channel,) = answer([[]])["results"]["channels"]
    assert channel["alternatives"] == [{"transcript": "", "confidence": 0.0, "words": []}]


def test_tags_and_extra_come_back_in_metadata():
    meta = answer([[FIRST]], ("tag", "a"), ("tag", "b"), ("extra", "k:v"))["metadata"]
    assert meta["tags"] == ["a", "b"] and meta["extra"] == {"k": "v"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("summarize", "v2"),
        ("topics", "true"),
        ("intents", "true"),
        ("sentiment", "true"),
        ("detect_language", "true"),
        ("custom_topic", "sports"),
    ],
)
def test_batch_features_not_built_are_refused_by_name(name, value):
    with pytest.raises(ProtocolError) as info:
        parse_prerecorded([(name, value)])
    assert info.value.reason.startswith(f"{name}=") and "not supported" in info.value.reason


def test_container_encodings_are_read_from_the_file_raw_ones_need_a_rate():
    assert parse_prerecorded([("encoding", "opus")]).encoding is None
    assert parse_prerecorded([("encoding", "mulaw"), ("sample_rate", "8000")]).encoding == (
        "pcm_mulaw"
    )
    with pytest.raises(ProtocolError, match="linear32"):
        parse_prerecorded([("encoding", "linear32")])


def test_raw_stereo_may_be_mixed_down_in_a_file():
    opts = parse_prerecorded([("encoding", "linear16"), ("sample_rate", "8000"), ("channels", "2")])
    assert opts.channels == 2 and opts.multichannel is False

"""OpenAI batch transcription, sans-I/O: form fields in, `BatchRequest` out; turns in, bodies out.

Bodies and server-sent events are validated with the official SDK's own models, which is what the
client does with them; errors are checked for OpenAI's envelope and the parameter they name.
"""

from __future__ import annotations

import json

import pytest
from openai.types.audio import (
    Transcription,
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionVerbose,
    TranslationVerbose,
)

from streamscribe.events import TurnUpdate, Word
from streamscribe.protocols.openai_batch import (
    APPROXIMATED,
    BatchRequest,
    TranscriptStream,
    json_body,
    model_config,
    parse_form,
    segments,
    text_body,
    verbose_body,
)
from streamscribe.protocols.openai_common import (
    OpenAIError,
    error_body,
    language_code,
    language_name,
)


def form(**fields: str | list[str]) -> dict[str, list[str]]:
    out = {"model": ["whisper-1"]}
    for name, value in fields.items():
        out[name.replace("__", "[]")] = value if isinstance(value, list) else [value]
    return out


def refused(fields: dict, translation: bool = False) -> dict:
    with pytest.raises(OpenAIError) as info:
        parse_form(fields, translation=translation)
    body = error_body(info.value)["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error" and info.value.status == 400
    return body


def turns() -> list[TurnUpdate]:
    first = (
        Word("Hello", 500, 900, 0.9, True),
        Word("world.", 950, 1400, 0.8, True),
        Word("How", 1600, 1800, 0.95, True),
        Word("are", 1800, 1900, 0.95, True),
        Word("you?", 1900, 2300, 0.7, True),
    )
    second = (Word("Fine,", 6000, 6400, 0.9, True), Word("thanks.", 6450, 7000, 0.9, True))
    return [
        TurnUpdate(0, 0, first, True, True, language="en"),
        TurnUpdate(0, 1, second, True, True, language="en"),
    ]


# ------------------------------------------------------------------ parsing


def test_defaults_and_the_sdk_field_names():
    req = parse_form(form())
    assert req == BatchRequest(model="whisper-1")
    req = parse_form(
        form(
            language="de",
            prompt="Kowloon",
            response_format="verbose_json",
            temperature="0.0",
            timestamp_granularities__=["word", "segment"],
        )
    )
    assert (req.language, req.prompt, req.words, req.segments) == ("de", "Kowloon", True, True)
    # other clients send arrays without the brackets
    assert parse_form(form(response_format="verbose_json", timestamp_granularities="word")).words


def test_words_only_means_no_segments_and_streaming_reads_true():
    req = parse_form(form(response_format="verbose_json", timestamp_granularities__="word"))
    assert req.words and not req.segments
    assert parse_form(form(stream="true")).stream
    assert parse_form(form(stream="false")).stream is False


def test_keywords_lead_the_prompt_and_languages_hint_detection():
    req = parse_form(form(keywords__=["Stella", "Kowloon"], prompt="A trip."))
    assert req.prompt == "Stella, Kowloon. A trip."
    assert parse_form(form(languages__=["fr"])).language == "fr"
    assert parse_form(form(languages__=["fr", "de"])).language is None  # detect among them
    assert parse_form(form(language="French")).language == "fr"
    assert parse_form(form(language="pt-BR")).language == "pt"


def test_accepted_without_effect_chunking_and_model_names():
    for strategy in ("auto", '{"type": "server_vad", "silence_duration_ms": 300}'):
        assert parse_form(form(chunking_strategy=strategy)).model == "whisper-1"
    assert parse_form({"model": ["gpt-4o-transcribe"]}).model == "gpt-4o-transcribe"


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({}, "model", "model"),
        (form(response_format="bogus"), "response_format", "json, text, srt"),
        (form(response_format="diarized_json"), "response_format", "not supported"),
        (form(temperature="hot"), "temperature", "0-1"),
        (form(timestamp_granularities__="word"), "timestamp_granularities", "verbose_json"),
        (
            form(response_format="verbose_json", timestamp_granularities__="char"),
            "timestamp_granularities",
            "word or segment",
        ),
        (form(include__="logprobs", response_format="text"), "include", "json"),
        (form(include__="tokens"), "include", "logprobs"),
        (form(stream="true", response_format="srt"), "stream", "json or text"),
        (form(stream="maybe"), "stream", "true or false"),
        (form(language="xx"), "language", "ISO-639-1"),
        (form(known_speaker_names__="agent"), "known_speaker_names", "not supported"),
        (form(chunking_strategy="{}"), "chunking_strategy", "server_vad"),
        (form(speed="2"), "speed", "Unrecognized"),
        (form(prompt=["a", "b"]), "prompt", "once"),
        (form(prompt="x" * 4001), "prompt", "4000"),
    ],
)
def test_bad_fields_are_refused_naming_the_parameter(fields, param, words):
    body = refused(fields)
    assert body["param"] == param, body
    assert words in body["message"], body


def test_translation_takes_its_own_fields_only():
    req = parse_form(form(prompt="x"), translation=True)
    assert req.task == "translate"
    assert parse_form(form(language="de"), translation=True).language == "de"  # the source
    body = refused(form(timestamp_granularities__="word"), translation=True)
    assert body["param"] == "timestamp_granularities" and "translations" in body["message"]


def test_model_choice_sees_language_and_translation():
    config = model_config(parse_form(form(language="de")))
    assert config.turn == {"language": "de", "translate": False} and config.model == "whisper-1"
    assert model_config(parse_form(form(), translation=True)).turn["translate"] is True


def test_language_names_as_whisper_reports_them():
    assert language_name("de") == "german" and language_name(None) == "english"
    assert language_code("German") == "de" and language_code("zz") is None


# ------------------------------------------------------------------ responses


def test_json_body_parses_as_the_sdk_transcription():
    req = parse_form(form(include__="logprobs"))
    body = json_body(req, turns(), 7.5)
    result = Transcription.model_validate(body)
    assert result.text == "Hello world. How are you? Fine, thanks."
    assert body["usage"] == {"type": "duration", "seconds": 7.5}
    assert [lp["token"] for lp in body["logprobs"][:2]] == ["Hello", " world."]


def test_verbose_body_has_seconds_segments_and_words():
    req = parse_form(
        form(response_format="verbose_json", timestamp_granularities__=["word", "segment"])
    )
    body = verbose_body(req, turns(), 7.5)
    result = TranscriptionVerbose.model_validate(body)
    assert (body["task"], result.language, result.duration) == ("transcribe", "english", 7.5)
    assert [s.text for s in result.segments] == [" Hello world.", " How are you?", " Fine, thanks."]
    assert [s.id for s in result.segments] == [0, 1, 2]
    assert (result.segments[0].start, result.segments[0].end) == (0.5, 1.4)
    assert result.segments[2].start == 6.0 and result.segments[2].seek == 600
    assert all(s.avg_logprob < 0 and s.compression_ratio > 0 for s in result.segments)
    assert [w.word for w in result.words][:2] == ["Hello", "world."]
    assert (result.words[0].start, result.words[0].end) == (0.5, 0.9)


def test_verbose_without_word_granularity_has_no_words():
    body = verbose_body(parse_form(form(response_format="verbose_json")), turns(), 7.5)
    assert "words" not in body and len(body["segments"]) == 3


def test_translation_verbose_reports_the_source_language():
    german = [TurnUpdate(0, 0, (Word("Hello.", 0, 500, 0.9, True),), True, True, language="de")]
    req = parse_form(form(response_format="verbose_json"), translation=True)
    body = verbose_body(req, german, 1.0)
    result = TranslationVerbose.model_validate(body)
    assert (body["task"], result.language, result.text) == ("translate", "german", "Hello.")
    assert "usage" not in json_body(req, german, 1.0)


def test_segments_cut_at_long_pauses_and_30_seconds():
    spoken = tuple(Word(f"w{i}", i * 1000, i * 1000 + 500, 0.9, True) for i in range(40))
    paused = spoken[:3] + (Word("later", 9000, 9400, 0.9, True),)
    assert len(segments([TurnUpdate(0, 0, paused, True, True)])) == 2
    cut = segments([TurnUpdate(0, 0, spoken, True, True)])
    assert len(cut) == 2 and all(s["end"] - s["start"] <= 30 for s in cut)


def test_text_body_is_the_transcript_and_a_newline():
    assert text_body(turns()) == "Hello world. How are you? Fine, thanks.\n"
    assert text_body([]) == "\n"


def events(chunks: list[bytes]) -> list[dict]:
    out = []
    for chunk in chunks:
        assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n")
        out.append(json.loads(chunk[6:]))
    return out


def test_stream_deltas_only_add_text_and_join_to_done():
    stream = TranscriptStream(parse_form(form(stream="true", include__="logprobs")))
    chunks = [stream.delta(t.words) for t in turns()]
    assert stream.delta([Word(" ", 0, 0, 0.5, True)]) is None  # no text, no event
    chunks.append(stream.done())
    sent = events(chunks)
    deltas = [TranscriptionTextDeltaEvent.model_validate(e) for e in sent[:-1]]
    done = TranscriptionTextDoneEvent.model_validate(sent[-1])
    assert [d.delta for d in deltas] == ["Hello world. How are you?", " Fine, thanks."]
    assert "".join(d.delta for d in deltas) == done.text
    assert deltas[1].logprobs[0].token == " Fine,"
    assert len(done.logprobs) == 7


def test_stream_errors_use_the_envelope_the_sdk_raises_on():
    (event,) = events([TranscriptStream.error(OpenAIError("boom", code="x", status=500))])
    assert event["error"] == {"message": "boom", "type": "server_error", "param": None, "code": "x"}


def test_a_sampling_temperature_is_accepted_and_decoding_stays_deterministic():
    """The OpenAI SDKs pass temperature through; refusing it would fail the request for a knob
    that only changes how varied the text may be (/v1/info lists it as approximated)."""
    assert parse_form(form(temperature="0.4")) == parse_form(form())
    assert "temperature" in APPROXIMATED

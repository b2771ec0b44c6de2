"""Deepgram pre-recorded transcription (`POST /v1/listen`): options in, the response body out.

Why this exists: the HTTP API takes the live API's query string plus a few batch-only features
(`utterances`, `utt_split`, `paragraphs`) and answers with one JSON document — `metadata`, then
`results.channels[]` (one entry per channel with `multichannel=true`, else one for the mix) and,
when asked, `results.utterances[]`. The route decodes the body and transcribes it through the
shared scheduler; this module only reads options and renders final turns, so it is pure and
unit-tested without a server. Times are float seconds, as everywhere in Deepgram's API.

Batch-only cloud features this server does not build (summaries, topics, intents, sentiment,
language detection as a separate feature) are refused naming the parameter, like the live ones.

Reference: shared/protocols/deepgram-listen.md §5.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from streamscribe.events import TurnUpdate, Word
from streamscribe.protocols.deepgram_options import (
    NOT_BUILT,
    DeepgramOptions,
    Params,
    alternative,
    created_stamp,
    model_info,
    parse_options,
    seconds,
    warnings,
)

SENTENCE_END = (".", "?", "!")

PRERECORDED_NOT_BUILT = {
    **NOT_BUILT,
    "summarize": "summaries",
    "topics": "topic detection",
    "custom_topic": "topic detection",
    "intents": "intent recognition",
    "custom_intent": "intent recognition",
    "sentiment": "sentiment analysis",
    "detect_language": "language detection as a feature (name the language with language=, "
    "or language=multi to transcribe whichever is spoken)",
    "measurements": "measurement formatting",
    "detect_topics": "topic detection",
}


def parse_prerecorded(params: Params) -> DeepgramOptions:
    """Validate a `POST /v1/listen` query (raises ProtocolError naming the parameter)."""
    return parse_options(params, live=False, not_built=PRERECORDED_NOT_BUILT)


def _language(turns: Sequence[TurnUpdate]) -> str | None:
    """The language most of a channel's words were in (detected per region)."""
    counts: dict[str, int] = {}
    for t in turns:
        if t.language:
            counts[t.language] = counts.get(t.language, 0) + len(t.words)
    return max(counts, key=lambda k: counts[k]) if counts else None


def _utterances(
    channel: int, turns: Sequence[TurnUpdate], options: DeepgramOptions
) -> list[dict[str, Any]]:
    """A channel's words cut at every turn and at every gap of at least `utt_split`."""
    split_ms = options.utt_split_s * 1000
    groups: list[list[Word]] = []
    for turn in turns:
        current: list[Word] = []
        for word in turn.words:
            if current and (
                word.start_ms - current[-1].end_ms >= split_ms
                or word.speaker != current[-1].speaker
            ):
                groups.append(current)
                current = []
            current.append(word)
        if current:
            groups.append(current)
    out = []
    for words in groups:
        alt = alternative(words, options.formatted)
        if not alt["words"]:
            continue
        out.append(
            {
                "start": alt["words"][0]["start"],
                "end": alt["words"][-1]["end"],
                "confidence": alt["confidence"],
                "channel": channel,
                "transcript": alt["transcript"],
                "words": alt["words"],
                **({"speaker": alt["words"][0]["speaker"]} if "speaker" in alt["words"][0] else {}),
                "id": str(uuid.uuid4()),
            }
        )
    return out


def _paragraphs(turns: Sequence[TurnUpdate], formatted: bool) -> dict[str, Any]:
    """Deepgram's `paragraphs`: one paragraph per turn, sentences cut at . ? !"""
    paragraphs = []
    texts = []
    for turn in turns:
        alt = alternative(turn.words, formatted)
        words = alt["words"]
        if not words:
            continue
        key = "punctuated_word" if formatted else "word"
        sentences: list[dict[str, Any]] = []
        current: list[dict[str, Any]] = []
        for w in words:
            current.append(w)
            if w[key].endswith(SENTENCE_END):
                sentences.append(_sentence(current, key))
                current = []
        if current:
            sentences.append(_sentence(current, key))
        paragraphs.append(
            {
                "sentences": sentences,
                "num_words": len(words),
                "start": words[0]["start"],
                "end": words[-1]["end"],
            }
        )
        texts.append(" ".join(s["text"] for s in sentences))
    transcript = "".join(f"\n{t}\n" for t in texts)
    return {"transcript": transcript, "paragraphs": paragraphs}


def _sentence(words: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return {
        "text": " ".join(w[key] for w in words),
        "start": words[0]["start"],
        "end": words[-1]["end"],
    }


def response(
    channels: Sequence[Sequence[TurnUpdate]],
    options: DeepgramOptions,
    *,
    request_id: str,
    sha256: str,
    created: datetime,
    duration_ms: int,
) -> dict[str, Any]:
    """The whole `POST /v1/listen` answer for the final turns of each channel."""
    model_uuid, info = model_info(options.model)
    metadata: dict[str, Any] = {
        "transaction_key": "deprecated",
        "request_id": request_id,
        "sha256": sha256,
        "created": created_stamp(created),
        "duration": seconds(duration_ms),
        "channels": len(channels),
        "models": [model_uuid],
        "model_info": {model_uuid: info},
    }
    if options.tags:
        metadata["tags"] = list(options.tags)
    if options.extra:
        metadata["extra"] = dict(options.extra)
    if notes := warnings(options):
        metadata["warnings"] = notes
    results_channels = []
    utterances: list[dict[str, Any]] = []
    for index, turns in enumerate(channels):
        language = _language(turns) if options.detect_language else None
        words = tuple(w for t in turns for w in t.words)
        alt = alternative(words, options.formatted, language)
        if options.paragraphs or options.smart_format:
            alt["paragraphs"] = _paragraphs(turns, options.formatted)
        entry: dict[str, Any] = {"alternatives": [alt]}
        if language is not None:
            entry["detected_language"] = language
        results_channels.append(entry)
        if options.utterances:
            utterances.extend(_utterances(index, turns, options))
    results: dict[str, Any] = {"channels": results_channels}
    if options.utterances:
        results["utterances"] = sorted(utterances, key=lambda u: (u["start"], u["channel"]))
    return {"metadata": metadata, "results": results}

"""The JSON bodies of the USP messages we send: hypotheses, phrases, translations, in ticks.

What the Azure Speech SDKs read from each (learned from the open-source JavaScript SDK's
`ServiceMessages/` and checked against the Python SDK): `speech.hypothesis` carries `Text`,
`Offset`, `Duration` (100-ns ticks from the start of the request's audio) and, for
conversations, `SpeakerId`; `speech.phrase` carries `RecognitionStatus` (`Success`, `NoMatch`,
`EndOfDictation`), `DisplayText` and the same times, plus `NBest` (`Lexical`, `ITN`,
`MaskedITN`, `Display`, `Confidence`, `Words`) for the detailed output format;
`PrimaryLanguage {Language, Confidence}` when the language was detected. Translation sends
`translation.hypothesis` / `translation.phrase` with a `Translation` object listing one text per
target language.

Pure functions of one engine `TurnUpdate` and the request's time base; the state machine that
decides which message to send when is `azure_usp.py`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from streamscribe.events import TurnUpdate, Word, speaker_runs

TICKS_PER_MS = 10_000
UNKNOWN_SPEAKER = "Unknown"
_PUNCTUATION = re.compile(r"[^\w'\- ]+", re.UNICODE)


def ticks(ms: int) -> int:
    return max(0, int(ms)) * TICKS_PER_MS


def lexical(text: str) -> str:
    """Spoken form: lower case, no punctuation (the service's `Lexical`)."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


class GuestNames:
    """Our speaker labels (A, B, …) as the service names them: Guest-1, Guest-2, … in order
    of first appearance in this connection."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def __call__(self, label: str | None) -> str:
        if not label:
            return UNKNOWN_SPEAKER
        if label not in self._names:
            self._names[label] = f"Guest-{len(self._names) + 1}"
        return self._names[label]


def locale(language: str | None, candidates: Sequence[str], fallback: str) -> str:
    """A detected language code as the locale the client asked about (de -> de-DE)."""
    if not language:
        return fallback
    for candidate in candidates:
        if candidate.split("-")[0].lower() == language.lower():
            return candidate
    return language


def _confidence_word(value: float | None) -> str:
    if value is None or value >= 0.8:
        return "High"
    return "Medium" if value >= 0.5 else "Low"


def primary_language(update: TurnUpdate, candidates: Sequence[str], fallback: str) -> dict:
    return {
        "Language": locale(update.language, candidates, fallback),
        "Confidence": _confidence_word(update.language_confidence),
    }


def span(words: Sequence[Word], base_ms: int) -> tuple[int, int]:
    """(Offset, Duration) in ticks of words, relative to the request's first audio."""
    if not words:
        return 0, 0
    start = words[0].start_ms - base_ms
    return ticks(start), ticks(words[-1].end_ms - words[0].start_ms)


def hypothesis(update: TurnUpdate, base_ms: int, **extra: Any) -> dict[str, Any]:
    offset, duration = span(update.words, base_ms)
    return {"Text": update.text, "Offset": offset, "Duration": duration, **extra}


def speaker_phrases(update: TurnUpdate) -> list[TurnUpdate]:
    """A final turn as ConversationTranscriber phrases: split where its speaker changes."""
    runs = speaker_runs(update.words, times=lambda w: (w.start_ms, w.end_ms))
    if len(runs) <= 1:
        return [update]
    return [
        replace(update, words=tuple(run), speaker=owner or update.speaker) for owner, run in runs
    ]


def phrase(
    update: TurnUpdate,
    base_ms: int,
    *,
    detailed: bool = False,
    word_timings: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A recognized phrase (`RecognitionStatus: Success`) from a final, formatted turn."""
    offset, duration = span(update.words, base_ms)
    body: dict[str, Any] = {
        "RecognitionStatus": "Success",
        "Offset": offset,
        "Duration": duration,
        "DisplayText": update.text,
        **extra,
    }
    if detailed:
        body["NBest"] = [nbest(update, base_ms, word_timings)]
    return body


def nbest(update: TurnUpdate, base_ms: int, word_timings: bool) -> dict[str, Any]:
    """The single best alternative of the detailed output format."""
    spoken = lexical(update.text)
    words = update.words
    confidence = sum(w.confidence for w in words) / len(words) if words else 0.0
    best: dict[str, Any] = {
        "Confidence": round(float(confidence), 4),
        "Lexical": spoken,
        "ITN": spoken,
        "MaskedITN": spoken,
        "Display": update.text,
    }
    if word_timings:
        best["Words"] = [
            {
                "Word": lexical(w.text),
                "Offset": ticks(w.start_ms - base_ms),
                "Duration": ticks(w.end_ms - w.start_ms),
                "Confidence": round(float(w.confidence), 4),
            }
            for w in words
            if lexical(w.text)
        ]
    return best


def no_match(offset_ms: int, duration_ms: int, **extra: Any) -> dict[str, Any]:
    """A phrase with nothing recognized in it (an empty turn, or silence until the end)."""
    return {
        "RecognitionStatus": "NoMatch",
        "Offset": ticks(offset_ms),
        "Duration": ticks(duration_ms),
        **extra,
    }


def end_of_dictation(audio_ms: int) -> dict[str, Any]:
    """The request's last phrase: it acknowledges every byte of audio the request sent, so the
    SDK has nothing left to replay in a next request."""
    return {"RecognitionStatus": "EndOfDictation", "Offset": ticks(audio_ms), "Duration": 0}


def translations(text: str | None, targets: Sequence[str]) -> dict[str, Any]:
    """The `Translation` object: one text per target (we translate into English only)."""
    if text is None:
        return {
            "TranslationStatus": "Error",
            "FailureReason": "the translation of this phrase failed",
            "Translations": [],
        }
    return {
        "TranslationStatus": "Success",
        "Translations": [{"Language": t, "Text": text} for t in targets],
    }

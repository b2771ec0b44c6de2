"""Hallucination guards: pure checks that decide whether a hypothesis may be shown.

Whisper invents text on silence ("Thank you.") and can loop on a phrase forever. The session
only decodes audio that VAD calls speech; these checks catch what still slips through, so that
rejected text is never shown and never fed back as a prompt.
"""

from __future__ import annotations

import zlib

NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    if not data:
        return 1.0
    return len(data) / len(zlib.compress(data))


def loop_start(words: list[str], max_repeats: int = 3, max_ngram: int = 8) -> int | None:
    """Index where a run of the same n-gram repeated more than `max_repeats` times begins.

    Checks n-grams of 1..max_ngram words. A word repeated 4 times ("no no no no") or a phrase
    repeated 4 times counts as a loop; the first occurrence is kept, so the caller truncates
    to `loop_start(...) + n`.
    """
    norm = [w.lower().strip(".,!?;:\"'") for w in words]
    best: int | None = None
    for n in range(1, max_ngram + 1):
        for i in range(0, len(norm) - n * (max_repeats + 1) + 1):
            gram = norm[i : i + n]
            if not any(gram):
                continue
            reps = 1
            j = i + n
            while norm[j : j + n] == gram:
                reps += 1
                j += n
            if reps > max_repeats:
                cut = i + n  # keep one occurrence
                if best is None or cut < best:
                    best = cut
                break
    return best


def rejection_reason(
    text: str, avg_logprob: float, no_speech_prob: float, ratio: float | None = None
) -> str | None:
    """Why a whole hypothesis must be dropped, or None when it may be used."""
    if not text.strip():
        return None
    if no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOGPROB_THRESHOLD:
        return "no_speech"
    ratio = compression_ratio(text) if ratio is None else ratio
    if ratio > COMPRESSION_RATIO_THRESHOLD:
        return "repetitive"
    return None

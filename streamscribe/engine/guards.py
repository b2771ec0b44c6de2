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
TRUNCATED_COPY_WORDS = 5  # a loop's last copy cut short by the window: at least this many words


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    if not data:
        return 1.0
    return len(data) / len(zlib.compress(data))


def loop_start(words: list[str]) -> int | None:
    """Index to cut a hypothesis at, where it starts looping; None when it does not loop.

    A loop is an n-gram repeated back to back: one word more than 3 times ("no no no no"),
    two words more than twice, or three or more words twice ("ask what you can do ask what you
    can do"), which real speech almost never does but a model running past its audio does. The
    n-gram may be as long as half the words: a model can read a whole window back a second time.
    A hypothesis that *ends* in a second copy cut short by the end of its window counts too, when
    the copy is at least `TRUNCATED_COPY_WORDS` words and half the phrase ("maybe this is the
    consequence of that night's fun maybe this is the consequence of that"): the next, longer
    window would show the whole loop, but by then the copy's words may have been made final.
    The first occurrence is kept.
    """
    norm = [w.lower().strip(".,!?;:\"'") for w in words]
    best: int | None = None
    for n in range(1, len(norm) // 2 + 1):
        allowed = 3 if n == 1 else 2 if n == 2 else 1
        for i in range(0, len(norm) - n * (allowed + 1) + 1):
            if best is not None and i + n >= best:
                break
            if norm[i] != norm[i + n]:  # cheap test first: hypotheses are long, loops rare
                continue
            gram = norm[i : i + n]
            if not all(gram):
                continue
            reps = 1
            j = i + n
            while norm[j : j + n] == gram:
                reps += 1
                j += n
            if reps > allowed:
                best = i + n
                break
    return _truncated_copy_start(norm, best)


def _truncated_copy_start(norm: list[str], best: int | None) -> int | None:
    """`best`, or an earlier cut where the words end in a truncated copy of the phrase before
    them (see `loop_start`)."""
    total = len(norm)
    for n in range(TRUNCATED_COPY_WORDS + 1, total - TRUNCATED_COPY_WORDS + 1):
        for t in range(max(TRUNCATED_COPY_WORDS, (n + 1) // 2), min(n, total - n + 1)):
            i = total - n - t
            if best is not None and i + n >= best:
                continue
            if norm[i] != norm[i + n]:  # cheap test first, as above
                continue
            if all(norm[i : i + t]) and norm[i : i + t] == norm[i + n :]:
                best = i + n
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

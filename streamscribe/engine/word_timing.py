"""Word start times after silence, from the voice activity detector instead of Whisper.

Whisper's word alignment (cross-attention DTW) gives the first word after silence the silence
too: a window that opens with the pre-roll (400 ms before the speech onset) has its first word
"start" at the window's very start, and a word after a pause starts inside the pause. Measured on
the dev set, the first word's start fell 300-400 ms before the onset the VAD and the waveform
agree on. Those starts reach users as word timings (captions, the dashboard, `start` in every
dialect), so a word that starts in a silence the VAD heard, and ends in the speech after it, is
moved to start at that speech's onset (less a frame or two: silero marks an onset at the first
frame above its threshold, a soft consonant may begin a little earlier).

Pure: words and speech runs in, words out. The streaming session (`session.py`) keeps the runs
its VAD found, the offline path (`offline.py`) the regions silero found in the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol, TypeVar

# how far before the VAD's onset a moved word starts
ONSET_MARGIN_MS = 64


class _Timed(Protocol):
    start_ms: int
    end_ms: int


W = TypeVar("W", bound=_Timed)


def snap_starts_to_speech(
    words: Sequence[W],
    runs: Sequence[tuple[int, int | None]],
    margin_ms: int = ONSET_MARGIN_MS,
) -> list[W]:
    """`words` (frozen dataclasses with `start_ms`/`end_ms`, in order) with each start that lies
    in silence before a speech run, for a word that ends inside or after that run's onset, moved
    to the onset less `margin_ms`.

    `runs` are (start_ms, end_ms) of speech in time order; `None` as the end is speech still
    going on. A word inside a run, or wholly in silence (the VAD heard nothing there: it keeps
    what the model said), is left as it is."""
    if not runs:
        return list(words)
    out: list[W] = []
    for w in words:
        start = w.start_ms
        for run_start, run_end in runs:
            if run_end is not None and run_end <= start:
                continue  # this run ended before the word: look at the next
            if start < run_start - margin_ms and w.end_ms > run_start:
                start = min(w.end_ms, run_start - margin_ms)
            break
        out.append(w if start == w.start_ms else dataclasses.replace(w, start_ms=start))
    return out

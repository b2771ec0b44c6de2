"""From a turn's audio and word times to window embeddings on a silence-free "speech clock".

Why: the words already say where the speech is, so the pauses are cut before embedding (silence
only blurs a speaker embedding) and every later step works in speech time, where a pause between
two speakers takes no room. `speech_time` maps any time of the turn onto that clock, so words and
windows are compared there. No torch here: `embed_turn` takes any `WindowEmbedder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

RATE = 16000
WORD_PAD_MS = 100  # kept each side of a word: word times from ASR are approximate
MERGE_GAP_MS = 300  # pauses shorter than this stay in (resemblyzer keeps short pauses too)

WordSpan = tuple[int, int]  # (start_ms, end_ms) relative to the turn's audio


class WindowEmbeddingsLike(Protocol):
    spans: np.ndarray  # (n, 2) sample offsets into the audio given
    vectors: np.ndarray  # (n, d) unit rows


class WindowEmbedder(Protocol):
    def embed_windows(
        self, audio: np.ndarray, window_s: float = ..., hop_s: float = ...
    ) -> WindowEmbeddingsLike: ...


@dataclass(frozen=True)
class TurnEmbeddings:
    """Window embeddings of one turn, placed on its speech clock.

    `vectors` (n, d) are unit rows; `window_ms` (n, 2) their spans in speech-time ms; `speech_ms`
    (m, 2) the kept stretches of the turn in turn-time ms, sorted and disjoint, which define the
    clock. A turn with no speech has n = m = 0.
    """

    vectors: np.ndarray
    window_ms: np.ndarray
    speech_ms: np.ndarray

    @property
    def total_speech_ms(self) -> float:
        return float((self.speech_ms[:, 1] - self.speech_ms[:, 0]).sum()) if len(self) else 0.0

    def __len__(self) -> int:
        return len(self.vectors)

    def speech_time(self, t_ms: np.ndarray | Sequence[float] | float) -> np.ndarray:
        """Turn time -> speech time: the ms of kept speech before `t_ms`."""
        if len(self.speech_ms) == 0:
            return np.zeros_like(np.asarray(t_ms, dtype=np.float64))
        xs = self.speech_ms.reshape(-1).astype(np.float64)
        lengths = self.speech_ms[:, 1] - self.speech_ms[:, 0]
        ends = np.cumsum(lengths)
        ys = np.stack([ends - lengths, ends], axis=1).reshape(-1).astype(np.float64)
        return np.interp(np.asarray(t_ms, dtype=np.float64), xs, ys)


def speech_spans(
    words: Sequence[WordSpan],
    duration_ms: float,
    pad_ms: int = WORD_PAD_MS,
    merge_gap_ms: int = MERGE_GAP_MS,
) -> np.ndarray:
    """(m, 2) ms spans covering the words (padded, clamped to the audio), short gaps merged."""
    spans: list[list[float]] = []
    for start, end in sorted(words):
        a = max(0.0, float(start) - pad_ms)
        b = min(float(duration_ms), float(max(end, start)) + pad_ms)
        if b <= a:
            continue
        if spans and a - spans[-1][1] < merge_gap_ms:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    return np.array(spans, dtype=np.float64).reshape(-1, 2)


def embed_turn(
    embedder: WindowEmbedder,
    audio: np.ndarray,
    words: Sequence[WordSpan],
    pad_ms: int = WORD_PAD_MS,
    merge_gap_ms: int = MERGE_GAP_MS,
    window_s: float = 1.6,
    hop_s: float = 0.5,
) -> TurnEmbeddings:
    """Cut the turn down to its words' speech and embed it window by window."""
    duration_ms = 1000.0 * len(audio) / RATE
    spans = speech_spans(words, duration_ms, pad_ms, merge_gap_ms)
    cuts = [(a, audio[int(a * RATE / 1000) : int(b * RATE / 1000)]) for a, b in spans]
    cuts = [(a, p) for a, p in cuts if len(p)]
    if not cuts:
        empty = np.zeros((0, 2))
        return TurnEmbeddings(np.zeros((0, 0), dtype=np.float32), empty, empty)
    speech = np.concatenate([p for _, p in cuts]).astype(np.float32, copy=False)
    windows = embedder.embed_windows(speech, window_s, hop_s)
    window_ms = np.asarray(windows.spans, dtype=np.float64) * 1000.0 / RATE
    # the clock is the cut audio's own sample count, so rounding of spans cannot drift from it
    starts = np.array([a for a, _ in cuts])
    speech_ms = np.stack([starts, starts + np.array([1000.0 * len(p) / RATE for _, p in cuts])], 1)
    return TurnEmbeddings(np.asarray(windows.vectors, dtype=np.float32), window_ms, speech_ms)

"""Online speaker clustering for one session, one final turn at a time (NumPy only).

Why online: labels go out with each final turn and must never change afterwards, so there is no
global re-clustering. Each turn is first cut where the voice changes inside it (the two sides'
mean window embeddings differ; cuts only between words), then each piece is given the nearest
known speaker, or a new one when no speaker is similar enough and the piece is long enough to
trust. Centroids keep adapting to confident matches; labels already handed out stay as they are.
Labels are "A", "B", ... as AssemblyAI's.

Similarities are cosines of unit vectors from `encoder.py`. The default thresholds sit between
the same-speaker and different-speaker statistics of the dev set's single-speaker utterances
(`bench/speaker_bench.py --calibrate`); the bench's conversations then measure the result.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streamscribe.speakers.turns import TurnEmbeddings, WordSpan

MAX_SPEAKERS_LIMIT = 26 * 27  # "A".."Z", then "AA".."ZZ"


def speaker_label(index: int) -> str:
    """0 -> "A", 25 -> "Z", 26 -> "AA", ..."""
    letters = string.ascii_uppercase
    if index < 26:
        return letters[index]
    return letters[index // 26 - 1] + letters[index % 26]


@dataclass(frozen=True)
class SpeakerSettings:
    """Speaker labelling settings (similarities are cosines, durations ms of speech).

    The similarity thresholds come from `bench/speaker_bench.py --calibrate` on the dev set's
    single-speaker utterances: each is midway between the lowest same-speaker similarity and the
    99th percentile of different-speaker ones (utterance vs utterance for new_speaker; cut
    scores for the change thresholds); provisional_similarity is that 99th percentile for
    0.5 s pieces.
    """

    max_speakers: int = 10
    # embedding windows: 1.6 s is the length the encoder was trained on; the hop sets the cost
    window_s: float = 1.6
    hop_s: float = 0.5
    # speech kept around each word (ASR word times are approximate), pauses shorter than
    # merge_gap_ms kept in; longer pauses are cut out before embedding
    word_pad_ms: int = 100
    merge_gap_ms: int = 300
    # a piece whose best similarity to every known speaker is below this is a new voice
    new_speaker_similarity: float = 0.73
    # a turn is cut where its two sides' mean window embeddings are less similar than this;
    # a side with less than short_side_ms of speech is noisier and needs the lower threshold
    change_similarity: float = 0.74
    change_similarity_short_side: float = 0.66
    short_side_ms: float = 2000.0
    # each side of a cut holds at least this much speech (a 1.6 s window must fit, nearly)
    min_segment_ms: float = 1300.0
    # how far a window may reach across a candidate cut and still count for one side
    boundary_tolerance_ms: float = 300.0
    # turns (and pieces) with less speech have an unreliable embedding: they move no centroid
    # and keep the previous speaker unless a known one matches (the session's very first turn
    # founds a provisional speaker)
    short_turn_ms: float = 1000.0
    # the least speech that may found a new speaker
    min_new_speaker_ms: float = 2000.0
    # a speaker founded on less (a short first turn) is provisional: the first long piece
    # matching no founded speaker but this similar to it takes the label over (short pieces'
    # embeddings are poor: at 0.5-1 s, different speakers reach about 0.6)
    provisional_similarity: float = 0.62
    max_segments: int = 4
    # one turn moves a centroid at most as much as this much speech
    centroid_weight_cap_ms: float = 10000.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_speakers <= MAX_SPEAKERS_LIMIT:
            raise ValueError(
                f"max_speakers must be between 1 and {MAX_SPEAKERS_LIMIT}, got {self.max_speakers}"
            )
        for name in (
            "new_speaker_similarity",
            "change_similarity",
            "change_similarity_short_side",
            "provisional_similarity",
        ):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a cosine similarity in [-1, 1]")
        if self.max_segments < 1 or self.min_segment_ms <= 0:
            raise ValueError("max_segments must be >= 1 and min_segment_ms > 0")
        if not 0 < self.hop_s <= self.window_s:
            raise ValueError("hop_s must be > 0 and at most window_s")


@dataclass
class Speaker:
    label: str
    total: np.ndarray  # speech-weighted sum of the unit embeddings it was given
    speech_ms: float = 0.0
    # founded by a piece too short to trust (only the session's first voice can be): the first
    # long piece that is near enough takes the label over with its own embedding
    provisional: bool = False

    @property
    def centroid(self) -> np.ndarray:
        return _unit(self.total)


@dataclass(frozen=True)
class Segment:
    """Words [first, last) of a turn that one voice spoke, with their embedding."""

    first: int
    last: int
    vector: np.ndarray
    speech_ms: float


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)


@dataclass
class SpeakerTracker:
    """The speakers of one session. Feed final turns in order; not for concurrent use."""

    settings: SpeakerSettings = field(default_factory=SpeakerSettings)
    speakers: list[Speaker] = field(default_factory=list)
    last_label: str | None = None

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.speakers]

    def label_turn(self, turn: TurnEmbeddings, words: Sequence[WordSpan]) -> list[str]:
        """One label per word (in the order given) for a final turn; the labels are final."""
        if not words:
            return []
        if len(turn) == 0:  # no audio under the words: nothing to go on but who spoke last
            return [self.last_label or speaker_label(0)] * len(words)
        order = sorted(range(len(words)), key=lambda i: (words[i][0], words[i][1]))
        spans = [words[i] for i in order]
        labels_sorted: list[str] = []
        for seg in self.segments(turn, spans):
            labels_sorted += [self._assign(seg.vector, seg.speech_ms)] * (seg.last - seg.first)
        out = [""] * len(words)
        for pos, i in enumerate(order):
            out[i] = labels_sorted[pos]
        return out

    # ------------------------------------------------------------ change points inside a turn

    def segments(self, turn: TurnEmbeddings, words: Sequence[WordSpan]) -> list[Segment]:
        """The turn's words (sorted by time) cut where the voice changes, each with its vector."""
        bounds = _Bounds(turn, words)
        cuts = self._cuts(turn, bounds, 0, len(words), self.settings.max_segments)
        if not cuts:  # the whole turn, on its whole clock
            return [Segment(0, len(words), _unit(turn.vectors.mean(0)), turn.total_speech_ms)]
        edges = [0, *cuts, len(words)]
        out = []
        for lo, hi in zip(edges, edges[1:], strict=False):
            a, b = bounds.at(lo), bounds.at(hi)
            out.append(Segment(lo, hi, self._mean(turn, a, b), b - a))
        return out

    def _windows_in(self, turn: TurnEmbeddings, a: float, b: float) -> np.ndarray:
        tol = self.settings.boundary_tolerance_ms
        w = turn.window_ms
        return (w[:, 0] >= a - tol) & (w[:, 1] <= b + tol)

    def _mean(self, turn: TurnEmbeddings, a: float, b: float) -> np.ndarray:
        inside = self._windows_in(turn, a, b)
        if not inside.any():  # a piece shorter than a window: the windows most over it
            w = turn.window_ms
            overlap = np.minimum(w[:, 1], b) - np.maximum(w[:, 0], a)
            inside = overlap >= overlap.max() - 1e-6
        return _unit(turn.vectors[inside].mean(0))

    def _cuts(
        self, turn: TurnEmbeddings, bounds: _Bounds, lo: int, hi: int, room: int
    ) -> list[int]:
        """Word indices in (lo, hi) where a new voice starts, found by recursive bisection."""
        s = self.settings
        if room < 2:
            return []
        a, b = bounds.at(lo), bounds.at(hi)
        best_k, best_margin = -1, 0.0
        for k in range(lo + 1, hi):
            t = bounds.at(k)
            if t - a < s.min_segment_ms or b - t < s.min_segment_ms:
                continue
            left, right = self._windows_in(turn, a, t), self._windows_in(turn, t, b)
            if not left.any() or not right.any():
                continue
            sim = float(_unit(turn.vectors[left].mean(0)) @ _unit(turn.vectors[right].mean(0)))
            short = min(t - a, b - t) < s.short_side_ms
            margin = sim - (s.change_similarity_short_side if short else s.change_similarity)
            if margin < best_margin:
                best_k, best_margin = k, margin
        if best_k < 0:
            return []
        best_k = self._refine(turn, bounds, lo, hi, best_k)
        left_room = max(1, room // 2)
        return [
            *self._cuts(turn, bounds, lo, best_k, left_room),
            best_k,
            *self._cuts(turn, bounds, best_k, hi, room - left_room),
        ]

    def _refine(self, turn: TurnEmbeddings, bounds: _Bounds, lo: int, hi: int, k: int) -> int:
        """Move the cut to where the voice really changes (the coarse search ties within a hop).

        Each window leans towards the left or the right voice (`d` = similarity to the left
        side's mean minus to the right's); a window straddling the change leans by the share of
        each voice it holds, so `d` crosses zero where the window's middle is at the change.
        The crossing nearest the coarse cut, interpolated between window middles, is snapped to
        the nearest word gap that leaves both sides their minimum speech.
        """
        s = self.settings
        a, b, t = bounds.at(lo), bounds.at(hi), bounds.at(k)
        left, right = self._windows_in(turn, a, t), self._windows_in(turn, t, b)
        lean = turn.vectors @ (
            _unit(turn.vectors[left].mean(0)) - _unit(turn.vectors[right].mean(0))
        )
        w = turn.window_ms
        middles = (w[:, 0] + w[:, 1]) / 2
        inside = np.flatnonzero((middles >= a) & (middles <= b))
        crossings = []
        for i, j in itertools.pairwise(inside):
            if lean[i] >= 0 > lean[j]:
                share = lean[i] / (lean[i] - lean[j])
                crossings.append(middles[i] + share * (middles[j] - middles[i]))
        if not crossings:
            return k
        change = min(crossings, key=lambda c: abs(c - t))
        allowed = [
            m
            for m in range(lo + 1, hi)
            if bounds.at(m) - a >= s.min_segment_ms and b - bounds.at(m) >= s.min_segment_ms
        ]
        return min(allowed, key=lambda m: abs(bounds.at(m) - change)) if allowed else k

    # ------------------------------------------------------------ assignment to speakers

    def _assign(self, vector: np.ndarray, speech_ms: float) -> str:
        s = self.settings
        if not self.speakers:
            return self._new_speaker(vector, speech_ms)
        sims = np.array([float(sp.centroid @ vector) for sp in self.speakers])
        if speech_ms < s.short_turn_ms:  # unreliable: a clear match, else whoever spoke last
            best = int(np.argmax(sims))
            sure = sims[best] >= s.new_speaker_similarity or self.last_label is None
            label = self.speakers[best].label if sure else str(self.last_label)
        else:
            label = self._assign_reliable(vector, speech_ms, sims)
        self.last_label = label
        return label

    def _assign_reliable(self, vector: np.ndarray, speech_ms: float, sims: np.ndarray) -> str:
        s = self.settings
        founded = [i for i, sp in enumerate(self.speakers) if not sp.provisional]
        best = max(founded, key=lambda i: sims[i], default=None)
        if best is not None and sims[best] >= s.new_speaker_similarity:
            self._update(self.speakers[best], vector, speech_ms)
            return self.speakers[best].label
        enough = speech_ms >= s.min_new_speaker_ms
        provisional = [i for i, sp in enumerate(self.speakers) if sp.provisional]
        guess = max(provisional, key=lambda i: sims[i], default=None)
        if guess is not None and sims[guess] >= s.provisional_similarity:
            speaker = self.speakers[guess]
            if enough:  # the voice behind a short first turn: this embedding replaces its guess
                speaker.total = vector * self._weight(speech_ms)
                speaker.speech_ms, speaker.provisional = speech_ms, False
            return speaker.label
        if enough and len(self.speakers) < s.max_speakers:
            return self._new_speaker(vector, speech_ms)
        return self.speakers[int(np.argmax(sims))].label

    def _weight(self, speech_ms: float) -> float:
        return max(min(speech_ms, self.settings.centroid_weight_cap_ms), 1.0) / 1000.0

    def _update(self, speaker: Speaker, vector: np.ndarray, speech_ms: float) -> None:
        speaker.total = speaker.total + self._weight(speech_ms) * vector
        speaker.speech_ms += speech_ms

    def _new_speaker(self, vector: np.ndarray, speech_ms: float) -> str:
        label = speaker_label(len(self.speakers))
        provisional = speech_ms < self.settings.min_new_speaker_ms
        total = vector.astype(np.float32) * self._weight(speech_ms)
        self.speakers.append(Speaker(label, total, speech_ms, provisional))
        self.last_label = label
        return label


class _Bounds:
    """Speech-time positions of the possible cuts of a turn: before word k, for k = 0..n."""

    def __init__(self, turn: TurnEmbeddings, words: Sequence[WordSpan]) -> None:
        starts = turn.speech_time([w[0] for w in words])
        ends = np.maximum(turn.speech_time([w[1] for w in words]), starts)
        inner = (ends[:-1] + starts[1:]) / 2  # midway between word k-1's end and word k's start
        self._at = np.concatenate([[0.0], inner, [turn.total_speech_ms]])

    def at(self, k: int) -> float:
        return float(self._at[k])


def dominant_label(labels: Sequence[str], words: Sequence[WordSpan]) -> str | None:
    """The label that holds most of the turn's word time (the turn-level `speaker`)."""
    time: dict[str, float] = {}
    for label, (start, end) in zip(labels, words, strict=True):
        time[label] = time.get(label, 0.0) + max(1.0, float(end - start))
    return max(time, key=lambda k: time[k]) if time else None

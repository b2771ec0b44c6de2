"""SpeakerTracker on synthetic embeddings: growth, stable labels, the cap, cuts, short turns.

Each synthetic voice is a random unit vector; a window's embedding is the mix of the voices it
hears (by time) plus noise, placed as the encoder places its windows (1.6 s every 0.5 s), so the
tracker sees what it would see from real audio, without torch.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamscribe.speakers.clustering import (
    SpeakerSettings,
    SpeakerTracker,
    dominant_label,
    speaker_label,
)
from streamscribe.speakers.turns import TurnEmbeddings, speech_spans

DIM = 64
WINDOW_MS = 1600
HOP_MS = 500


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def voices(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [unit(rng.standard_normal(DIM)) for _ in range(n)]


def make_turn(
    parts: list[tuple[np.ndarray, int]],
    word_ms: int = 400,
    gap_ms: int = 100,
    noise: float = 0.05,
    seed: int = 1,
) -> tuple[TurnEmbeddings, list[tuple[int, int]]]:
    """A turn of `parts` (voice, number of words) spoken back to back, and its word times."""
    rng = np.random.default_rng(seed)
    words, owners = [], []
    t = 0
    for i, (_, n) in enumerate(parts):
        for _ in range(n):
            words.append((t, t + word_ms))
            owners.append(i)
            t += word_ms + gap_ms
    total = t - gap_ms
    # who is speaking at each ms: a word's voice until the next word starts
    starts = [w[0] for w in words] + [total]
    timeline = np.empty(total, dtype=int)
    for k in range(len(words)):
        timeline[starts[k] : starts[k + 1]] = owners[k]
    win_starts = list(range(0, max(1, total - WINDOW_MS + 1), HOP_MS))
    if win_starts[-1] + WINDOW_MS < total:
        win_starts.append(total - WINDOW_MS)
    spans, vectors = [], []
    for s in win_starts:
        e = min(total, s + WINDOW_MS)
        shares = np.bincount(timeline[s:e], minlength=len(parts)) / (e - s)
        mix = sum(share * parts[i][0] for i, share in enumerate(shares))
        vectors.append(unit(mix + noise * rng.standard_normal(DIM) / np.sqrt(DIM) * 4))
        spans.append((s, e))
    turn = TurnEmbeddings(
        np.array(vectors, dtype=np.float32),
        np.array(spans, dtype=np.float64),
        np.array([[0.0, float(total)]]),
    )
    return turn, words


def label_all(tracker: SpeakerTracker, turns: list[list[tuple[np.ndarray, int]]]) -> list[str]:
    """The single label of each single-voice turn (asserting the turn got one label)."""
    out = []
    for i, parts in enumerate(turns):
        turn, words = make_turn(parts, seed=i)
        labels = tracker.label_turn(turn, words)
        assert len(set(labels)) == 1, labels
        out.append(labels[0])
    return out


def test_new_voices_get_new_labels_and_known_voices_keep_theirs():
    a, b, c = voices(3)
    tracker = SpeakerTracker()
    got = label_all(tracker, [[(a, 8)], [(b, 8)], [(a, 8)], [(c, 8)], [(b, 8)], [(a, 6)]])
    assert got == ["A", "B", "A", "C", "B", "A"]
    assert tracker.labels == ["A", "B", "C"]


def test_a_slowly_changing_voice_keeps_its_label_because_the_centroid_follows():
    a0, other, b = voices(3, seed=5)
    other = unit(other - (other @ a0) * a0)  # orthogonal to a0
    tracker = SpeakerTracker()
    labels = []
    for step in range(21):  # the voice turns 2.5 degrees per turn: 50 degrees in all
        angle = np.radians(2.5 * step)
        voice = unit(np.cos(angle) * a0 + np.sin(angle) * other)
        labels += label_all(tracker, [[(voice, 8)], [(b, 8)]])
    assert labels == ["A", "B"] * 21
    # the last voice is far from the first turn's: without adaptation it would be a new speaker
    assert float(voice @ a0) < tracker.settings.new_speaker_similarity


def test_max_speakers_caps_the_set_and_then_the_nearest_speaker_is_used():
    a, b, w = voices(3, seed=2)
    c = unit(0.55 * b + 0.83 * unit(w - (w @ b) * b))  # nearer to b than to a, yet a new voice
    assert float(c @ b) < SpeakerSettings().new_speaker_similarity
    tracker = SpeakerTracker(SpeakerSettings(max_speakers=2))
    assert label_all(tracker, [[(a, 8)], [(b, 8)], [(c, 8)], [(a, 8)]]) == ["A", "B", "B", "A"]
    assert tracker.labels == ["A", "B"]
    assert label_all(SpeakerTracker(), [[(a, 8)], [(b, 8)], [(c, 8)]]) == ["A", "B", "C"]


@pytest.mark.parametrize(("word_ms", "gap_ms"), [(400, 100), (330, 40), (520, 260)])
def test_a_voice_change_inside_a_turn_is_cut_at_the_word_where_it_happens(word_ms, gap_ms):
    a, b = voices(2, seed=3)
    tracker = SpeakerTracker()
    turn, words = make_turn([(a, 7), (b, 6)], word_ms, gap_ms)
    assert tracker.label_turn(turn, words) == ["A"] * 7 + ["B"] * 6
    turn, words = make_turn([(b, 5), (a, 9)], word_ms, gap_ms, seed=2)
    assert tracker.label_turn(turn, words) == ["B"] * 5 + ["A"] * 9
    assert tracker.labels == ["A", "B"]


def test_three_voices_in_one_turn_give_three_pieces():
    a, b, c = voices(3, seed=4)
    turn, words = make_turn([(a, 6), (b, 6), (c, 6)])
    assert SpeakerTracker().label_turn(turn, words) == ["A"] * 6 + ["B"] * 6 + ["C"] * 6


def test_one_noisy_voice_is_never_cut():
    (a,) = voices(1, seed=6)
    tracker = SpeakerTracker()
    for seed in range(10):
        turn, words = make_turn([(a, 30)], noise=0.12, seed=seed)
        assert set(tracker.label_turn(turn, words)) == {"A"}
    assert tracker.labels == ["A"]


def test_words_in_any_order_get_their_own_labels():
    a, b = voices(2, seed=3)
    turn, words = make_turn([(a, 7), (b, 6)])
    order = list(reversed(range(len(words))))
    labels = SpeakerTracker().label_turn(turn, [words[i] for i in order])
    assert labels == [("A" if i < 7 else "B") for i in order]


def test_a_short_turn_gets_one_label_even_when_two_voices_are_in_it():
    a, b = voices(2, seed=7)
    tracker = SpeakerTracker()
    label_all(tracker, [[(a, 8)], [(b, 8)]])
    turn, words = make_turn([(a, 1), (b, 1)])  # 0.9 s: too short to cut
    assert len(set(tracker.label_turn(turn, words))) == 1


def test_a_very_short_unclear_turn_keeps_the_previous_speaker_and_founds_no_new_one():
    a, b, stranger = voices(3, seed=8)
    tracker = SpeakerTracker()
    assert label_all(tracker, [[(a, 8)], [(b, 8)]]) == ["A", "B"]
    turn, words = make_turn([(stranger, 1)], word_ms=600)  # 0.6 s of an unknown voice
    assert tracker.label_turn(turn, words) == ["B"]
    turn, words = make_turn([(a, 1)], word_ms=600)  # 0.6 s that clearly is A
    assert tracker.label_turn(turn, words) == ["A"]
    assert tracker.labels == ["A", "B"]


def test_a_short_first_turn_founds_a_provisional_speaker_its_voice_takes_over():
    a, b, noise = voices(3, seed=11)
    noise = unit(noise - (noise @ a) * a)
    blurred = unit(0.7 * a + 0.71 * noise)  # what 0.6 s of a's speech may embed to
    tracker = SpeakerTracker()
    first = TurnEmbeddings(
        blurred[None, :].astype(np.float32), np.array([[0.0, 600.0]]), np.array([[0.0, 600.0]])
    )
    assert tracker.label_turn(first, [(0, 600)]) == ["A"]
    assert float(blurred @ a) < tracker.settings.new_speaker_similarity
    assert label_all(tracker, [[(b, 8)], [(a, 8)], [(a, 8)], [(b, 6)]]) == ["B", "A", "A", "B"]
    assert tracker.labels == ["A", "B"]
    assert not any(s.provisional for s in tracker.speakers)


def test_a_new_speaker_needs_enough_speech():
    a, b, c = voices(3, seed=9)
    tracker = SpeakerTracker()
    label_all(tracker, [[(a, 8)], [(b, 8)]])
    turn, words = make_turn([(c, 3)])  # 1.4 s: below min_new_speaker_ms
    assert tracker.label_turn(turn, words)[0] in ("A", "B")
    assert tracker.labels == ["A", "B"]
    turn, words = make_turn([(c, 6)])  # 2.9 s
    assert set(tracker.label_turn(turn, words)) == {"C"}


def test_labels_handed_out_are_not_changed_by_later_turns():
    a, b = voices(2, seed=10)
    tracker = SpeakerTracker()
    turn, words = make_turn([(a, 8)])
    first = tracker.label_turn(turn, words)
    kept = list(first)
    for i in range(5):
        turn, words = make_turn([(b, 4), (a, 4)], seed=20 + i)
        tracker.label_turn(turn, words)
    assert first == kept == ["A"] * 8


def test_no_words_and_no_speech():
    tracker = SpeakerTracker()
    empty = TurnEmbeddings(np.zeros((0, 0), np.float32), np.zeros((0, 2)), np.zeros((0, 2)))
    assert tracker.label_turn(empty, []) == []
    assert tracker.label_turn(empty, [(0, 100)]) == ["A"]
    assert tracker.labels == []


def test_speech_clock_drops_long_pauses_and_keeps_short_ones():
    words = [(0, 400), (500, 900), (3000, 3400)]  # a 2.1 s pause before the last word
    spans = speech_spans(words, duration_ms=5000, pad_ms=100, merge_gap_ms=300)
    assert spans.tolist() == [[0, 1000], [2900, 3500]]
    turn = TurnEmbeddings(np.zeros((1, DIM), np.float32), np.array([[0.0, 1600.0]]), spans)
    assert turn.total_speech_ms == 1600
    assert turn.speech_time([0, 500, 1000, 2000, 2900, 3200, 4000]).tolist() == [
        0,
        500,
        1000,
        1000,
        1000,
        1300,
        1600,
    ]


def test_labels_and_settings():
    assert [speaker_label(i) for i in (0, 1, 25, 26, 27, 52)] == ["A", "B", "Z", "AA", "AB", "BA"]
    for bad in ({"max_speakers": 0}, {"hop_s": 2.0}, {"change_similarity": 1.5}):
        with pytest.raises(ValueError):
            SpeakerSettings(**bad)
    assert dominant_label(["A", "B", "B"], [(0, 3000), (3000, 3500), (3500, 4000)]) == "A"
    assert dominant_label([], []) is None

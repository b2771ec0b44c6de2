"""Word starts after silence come from the VAD's onset, not from Whisper's alignment."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from streamscribe.engine.word_timing import ONSET_MARGIN_MS, snap_starts_to_speech


@dataclass(frozen=True)
class W:
    text: str
    start_ms: int
    end_ms: int


def test_a_word_given_the_silence_before_it_starts_at_the_onset():
    # the window opened 400 ms before the onset at 1000; Whisper starts the word at 600
    out = snap_starts_to_speech([W("hello", 600, 1300), W("there", 1350, 1700)], [(1000, None)])
    assert out == [W("hello", 1000 - ONSET_MARGIN_MS, 1300), W("there", 1350, 1700)]


def test_a_word_after_a_pause_starts_where_the_speech_after_the_pause_does():
    runs = [(1000, 2000), (2600, 3500)]
    words = [W("one", 1000, 1900), W("two", 2050, 2900), W("three", 2950, 3400)]
    out = snap_starts_to_speech(words, runs)
    assert [w.start_ms for w in out] == [1000, 2600 - ONSET_MARGIN_MS, 2950]


@pytest.mark.parametrize(
    "word",
    [
        W("inside", 1200, 1500),  # inside the run
        W("close", 1000 - ONSET_MARGIN_MS + 10, 1400),  # within the margin already
        W("noise", 200, 600),  # wholly in silence: the VAD heard nothing, the model did
        W("later", 2100, 2400),  # after every run
    ],
)
def test_words_the_vad_does_not_contradict_keep_their_start(word):
    assert snap_starts_to_speech([word], [(1000, 2000)]) == [word]


def test_without_runs_nothing_moves():
    words = [W("a", 0, 300), W("b", 300, 600)]
    assert snap_starts_to_speech(words, []) == words


def test_a_moved_start_never_passes_the_words_end():
    out = snap_starts_to_speech([W("a", 0, 1010)], [(1000, None)], margin_ms=0)
    assert out == [W("a", 1000, 1010)]


@pytest.mark.parametrize("seed", range(20))
def test_starts_only_move_later_and_stay_within_each_word(seed):
    rng = random.Random(seed)
    runs, t = [], 0
    for _ in range(rng.randint(1, 4)):
        t += rng.randint(100, 900)
        end = t + rng.randint(200, 2000)
        runs.append((t, end))
        t = end
    words, t = [], 0
    for i in range(rng.randint(1, 12)):
        t += rng.randint(0, 400)
        end = t + rng.randint(1, 800)
        words.append(W(f"w{i}", t, end))
        t = end
    out = snap_starts_to_speech(words, runs)
    for before, after in zip(words, out, strict=True):
        assert before.text == after.text and before.end_ms == after.end_ms
        assert before.start_ms <= after.start_ms <= after.end_ms
    assert [w.start_ms for w in out] == sorted(w.start_ms for w in out)

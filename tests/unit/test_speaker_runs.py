"""A turn cut into one phrase per speaker (Azure's transcriber phrases), server and client side."""

from __future__ import annotations

import random

import pytest

from streamscribe.client.azure import _phrases
from streamscribe.client.messages import Turn, TurnWord
from streamscribe.events import Word, speaker_runs


def words(labels: str) -> list[Word]:
    """One word per character of `labels` ("." = unlabelled), 300 ms apart."""
    return [
        Word(f"w{i}", i * 300, i * 300 + 250, 0.9, True, None if c == "." else c)
        for i, c in enumerate(labels)
    ]


def shape(runs: list[tuple[str | None, list[Word]]]) -> list[str]:
    return ["".join(w.speaker or "." for w in run) for _, run in runs]


@pytest.mark.parametrize(
    ("labels", "runs"),
    [
        ("", []),
        ("AAAA", ["AAAA"]),
        ("AAABBB", ["AAA", "BBB"]),
        ("AABAA", ["AABAA"]),  # a one-word flicker is no change
        ("BAAAA", ["BAAAA"]),  # nor at the start
        ("AAAAB", ["AAAAB"]),  # nor at the end
        ("AA..BB", ["AA..", "BB"]),  # unlabelled words stay with the run before them
        ("AABBAACC", ["AA", "BB", "AA", "CC"]),
        ("AABABB", ["AABA", "BB"]),
    ],
)
def test_runs(labels, runs):
    assert shape(speaker_runs(words(labels))) == runs


@pytest.mark.parametrize("seed", range(30))
def test_runs_keep_every_word_in_order_and_change_speaker_between_them(seed):
    rng = random.Random(seed)
    ws = words("".join(rng.choice("AAB.") for _ in range(rng.randint(0, 20))))
    runs = speaker_runs(ws)
    assert [w for _, run in runs for w in run] == ws
    assert all(run for _, run in runs)
    owners = [owner for owner, _ in runs]
    assert all(a != b for a, b in zip(owners, owners[1:], strict=False))
    for owner, run in runs:  # a run's speaker is one of its words' speakers
        assert owner in {w.speaker for w in run}


def test_the_sdk_facade_fires_one_phrase_per_speaker():
    ws = tuple(
        TurnWord(t, i * 300, i * 300 + 250, 0.9, True, s)
        for i, (t, s) in enumerate(
            [("Are", "A"), ("you", "A"), ("there?", "A"), ("Yes,", "B"), ("I", "B"), ("am.", "B")]
        )
    )
    turn = Turn(3, "Are you there? Yes, I am.", True, True, 0.9, ws, speaker_label="A")
    first, second = _phrases(turn)
    assert (first.transcript, first.speaker_label) == ("Are you there?", "A")
    assert (second.transcript, second.speaker_label) == ("Yes, I am.", "B")
    assert second.words[0].start == 900
    alone = Turn(4, "Fine.", True, True, 0.9, ws[:1], speaker_label="A")
    assert _phrases(alone) == [alone]


def test_a_cut_a_word_off_moves_to_the_pause_between_the_voices():
    """Labels near a change of voice are often a word off; the pause between voices is not."""
    ws = words("AAAABBB")
    # "circumstances | When" is the pause; the label of "When" (word 3) says A
    ws = [
        Word(
            w.text,
            w.start_ms + (400 if i >= 3 else 0),
            w.end_ms + (400 if i >= 3 else 0),
            w.confidence,
            True,
            w.speaker,
        )
        for i, w in enumerate(ws)
    ]
    assert shape(speaker_runs(ws)) == ["AAAA", "BBB"]
    timed = speaker_runs(ws, times=lambda w: (w.start_ms, w.end_ms))
    assert [(owner, len(run)) for owner, run in timed] == [("A", 3), ("B", 4)]


@pytest.mark.parametrize("seed", range(30))
def test_cuts_at_pauses_keep_every_word_and_no_run_empty(seed):
    rng = random.Random(seed)
    ws, t = [], 0
    for i in range(rng.randint(2, 20)):
        t += rng.choice([50, 50, 50, 600])
        ws.append(Word(f"w{i}", t, t + 250, 0.9, True, rng.choice("AAB.")))
        t += 250
    runs = speaker_runs(ws, times=lambda w: (w.start_ms, w.end_ms))
    assert [w for _, run in runs for w in run] == ws
    assert all(run for _, run in runs)
    assert len(runs) == len(speaker_runs(ws))

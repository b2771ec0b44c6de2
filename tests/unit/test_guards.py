"""Hallucination guards: where a looping hypothesis is cut, and which hypotheses are dropped."""

from __future__ import annotations

import pytest

from streamscribe.engine.guards import (
    COMPRESSION_RATIO_THRESHOLD,
    compression_ratio,
    loop_start,
    rejection_reason,
)


def cut(text: str) -> str | None:
    """The hypothesis as kept after the loop guard; None when it does not loop."""
    words = text.split()
    at = loop_start(words)
    return None if at is None else " ".join(words[:at])


# ------------------------------------------------------------------ loops that are cut


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        # one word more than three times
        ("no no no no", "no"),
        ("so I said no no no no", "so I said no"),
        ("bye bye bye bye bye bye", "bye"),
        ("ok ok, ok. OK!", "ok"),  # case and punctuation do not hide a loop
        # two words more than twice
        ("I mean I mean I mean", "I mean"),
        ("thank you thank you thank you", "thank you"),
        ("a b a b a b a b", "a b"),
        ("The end. The end. The end.", "The end."),
        # three or more words twice
        ("ask what you ask what you", "ask what you"),
        ("and then he said and then he said", "and then he said"),
        ("this is a test this is a test this is a test", "this is a test"),
        (
            "hello there. Thank you for watching. Thank you for watching.",
            "hello there. Thank you for watching.",
        ),
    ],
)
def test_loops_are_cut_after_the_first_occurrence(text, kept):
    assert cut(text) == kept


def test_everything_after_the_loop_is_cut_too():
    assert cut("we are going we are going to the store now") == "we are going"


def test_the_earliest_loop_wins():
    assert cut("x y z x y z go go go go") == "x y z"
    assert cut("go go go go x y z x y z") == "go"


def test_twelve_word_loops_are_found():
    phrase = "one two three four five six seven eight nine ten eleven twelve"
    assert cut(f"{phrase} {phrase}") == phrase


def test_a_whole_window_read_back_twice_is_cut():
    # tiny.en on a 6.5 s window of LibriSpeech 3331-159605-0000 wrote the sentence twice
    sentence = (
        "All of which arrangements, signified that something very important, had got to be "
        "thought over and settled."
    )
    assert cut(f"{sentence} {sentence}") == sentence


def test_a_last_copy_cut_short_by_the_window_is_cut():
    # tiny.en on a 3.4 s partial window of 3331-159605-0002 (the compat matrix's Deepgram run):
    # the model read its text back and the window ended inside the copy; with word probability
    # 0.6 enough to make a word final, the copy's words became final before a longer window
    # showed the whole loop
    phrase = "and maybe this is the consequence of that night's fun"
    assert cut(f"{phrase} and maybe this is the consequence of that night's") == phrase
    assert cut(f"so {phrase} and maybe this is the") == f"so {phrase}"


@pytest.mark.parametrize(
    "text",
    [
        # a copy of fewer than five words, or of less than half the phrase, may be speech
        "I don't know what to do, I don't know",
        "and maybe this is the consequence of that night's fun and maybe",
        "one two three four five six seven eight nine ten eleven one two three four five",
        # a copy that does not reach the end is not a truncated copy
        "a b c d e f a b c d e x",
    ],
)
def test_a_short_or_partial_copy_at_the_end_is_kept(text):
    assert loop_start(text.split()) is None


def test_a_long_loop_is_found_in_a_long_turn():
    phrase = " ".join(f"w{i}" for i in range(30))
    lead = " ".join(f"x{i}" for i in range(20))
    assert cut(f"{lead} {phrase} {phrase}") == f"{lead} {phrase}"


# ------------------------------------------------------------------ real speech that is kept


@pytest.mark.parametrize(
    "text",
    [
        "ask not what your country can do for you ask what you can do for your country",
        "that that",
        "I said that that is fine",
        "no no no",
        "very very very",
        "I mean I mean",
        "bye bye",
        "New York New York",
        "we will we will rock you",
        "Thank you. Thank you.",
        "it is what it is",
        "one by one by one",
        "",
        "hello",
        "... ... ... ...",  # nothing but punctuation is not a word
    ],
)
def test_real_speech_is_not_cut(text):
    assert loop_start(text.split()) is None


def test_a_repeated_three_word_phrase_is_cut_even_in_real_speech():
    # documented rule ("three or more words twice"); real speakers do this now and then
    assert cut("I think so, I think so.") == "I think so,"
    assert cut("let me see let me see") == "let me see"


# ------------------------------------------------------------------ rejection_reason


def test_compression_ratio():
    assert compression_ratio("") == 1.0
    assert compression_ratio("the quick brown fox jumps over the lazy dog") < 1.5
    assert compression_ratio("hello " * 40) > COMPRESSION_RATIO_THRESHOLD


def test_normal_text_is_kept():
    assert rejection_reason("the quick brown fox", avg_logprob=-0.3, no_speech_prob=0.1) is None


def test_empty_text_is_never_rejected():
    assert rejection_reason("", avg_logprob=-5.0, no_speech_prob=0.99) is None
    assert rejection_reason("   ", avg_logprob=-5.0, no_speech_prob=0.99) is None


def test_silence_with_a_doubtful_decode_is_no_speech():
    assert rejection_reason("Thank you.", avg_logprob=-1.2, no_speech_prob=0.8) == "no_speech"


@pytest.mark.parametrize(
    ("avg_logprob", "no_speech_prob"),
    [
        (-0.5, 0.9),  # likely silence but a confident decode: kept
        (-2.0, 0.3),  # doubtful decode but speech: kept
        (-1.0, 0.9),  # logprob exactly at the threshold: kept
        (-2.0, 0.6),  # no_speech exactly at the threshold: kept
    ],
)
def test_no_speech_needs_both_signals(avg_logprob, no_speech_prob):
    assert rejection_reason("Thank you.", avg_logprob, no_speech_prob) is None


def test_repetitive_text_is_rejected():
    assert rejection_reason("hello " * 40, avg_logprob=-0.1, no_speech_prob=0.0) == "repetitive"


def test_a_given_compression_ratio_is_trusted():
    assert rejection_reason("short", -0.1, 0.0, ratio=3.0) == "repetitive"
    assert rejection_reason("hello " * 40, -0.1, 0.0, ratio=1.2) is None
    assert rejection_reason("short", -0.1, 0.0, ratio=COMPRESSION_RATIO_THRESHOLD) is None


def test_no_speech_is_reported_before_repetitive():
    assert rejection_reason("hello " * 40, avg_logprob=-3.0, no_speech_prob=0.9) == "no_speech"

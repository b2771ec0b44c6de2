"""LocalAgreement-2 on recorded word lists: what becomes final, and that it never changes."""

from __future__ import annotations

import random

import pytest

from streamscribe.engine.agreement import HypWord, LocalAgreement, normalize_word

# ------------------------------------------------------------------ helpers


def hyp(text: str, t0: int = 0, step: int = 300) -> list[HypWord]:
    """A hypothesis as the model would time it: one word every `step` ms from `t0`."""
    return [HypWord(w, t0 + i * step, t0 + i * step + 250, 0.9) for i, w in enumerate(text.split())]


def raw(words: list[HypWord]) -> str:
    return " ".join(w.raw for w in words)


def run(*hypotheses: str) -> tuple[LocalAgreement, list[str]]:
    """Feed hypotheses in order; return the agreement and what became final at each step."""
    la = LocalAgreement()
    steps = [raw(la.insert(hyp(h))) for h in hypotheses]
    return la, steps


# ------------------------------------------------------------------ normalisation


@pytest.mark.parametrize(
    ("text", "norm"),
    [
        ("Hello,", "hello"),
        ("hello", "hello"),
        ("WORLD!", "world"),
        ("don't", "don't"),
        ("'quoted'", "quoted"),
        ("U.S.", "us"),
        ("well...", "well"),
        ("—", ""),
        ("¿Qué?", "qué"),
        ("42%", "42"),
    ],
)
def test_normalize_word(text, norm):
    assert normalize_word(text) == norm


def test_hypword_norm():
    assert HypWord("Hello,", 0, 1, 1.0).norm == "hello"


# ------------------------------------------------------------------ the agreement itself


def test_one_hypothesis_is_all_tentative():
    la, steps = run("hello world")
    assert steps == [""]
    assert la.final == []
    assert raw(la.tentative) == "hello world"


def test_the_common_prefix_of_two_hypotheses_becomes_final():
    la, steps = run("hello", "hello world", "hello world how", "hello world how are you")
    assert steps == ["", "hello", "world", "how"]
    assert raw(la.final) == "hello world how"
    assert raw(la.tentative) == "are you"


def test_prefix_stabilises_only_where_hypotheses_agree():
    la, steps = run("the cat", "the hat sat", "the hat sat on", "the hat sat on the mat")
    assert steps == ["", "the", "hat sat", "on"]
    assert raw(la.tentative) == "the mat"


def test_case_and_punctuation_do_not_count_as_disagreement():
    la, steps = run("Hello, world", "hello world. How", "Hello world how are")
    assert steps == ["", "hello world.", "how"]
    # a word takes the spelling of the hypothesis that made it final
    assert [w.raw for w in la.final] == ["hello", "world.", "how"]


def test_empty_words_are_dropped_before_comparing():
    la, steps = run("— hello", "hello — world", "hello world")
    assert steps == ["", "hello", "world"]


def test_final_words_are_never_retracted_when_a_later_hypothesis_disagrees():
    la, _ = run("I like the", "I like the cat", "I like the cat sat")
    assert raw(la.final) == "I like the cat"
    # nothing in common with the final words: only what follows them in time is new,
    # and "sat" agrees with the tentative "sat" of the hypothesis before
    newly = la.insert(hyp("you like a bat sat on"))
    assert raw(newly) == "sat"
    assert raw(la.final) == "I like the cat sat"
    la.insert(hyp("you like a bat sat on the mat"))
    assert raw(la.final) == "I like the cat sat on"


def test_a_hypothesis_that_repeats_the_final_words_continues_after_them():
    la, _ = run("one two three", "one two three four")
    assert raw(la.final) == "one two three"
    assert raw(la.insert(hyp("one two three four five"))) == "four"
    assert raw(la.final) == "one two three four"
    assert raw(la.tentative) == "five"


def test_a_middle_word_revised_by_the_model_does_not_reappear():
    la, _ = run("a b c d", "a b c d e")
    assert raw(la.final) == "a b c d"
    la.insert(hyp("a x c d e f"))  # the model changed its mind about "b"
    la.insert(hyp("a x c d e f g"))
    assert raw(la.final) == "a b c d e f"


def test_a_hypothesis_that_lost_final_words_adds_nothing_twice():
    la, _ = run("a b c d", "a b c d e")
    la.insert(hyp("a b"))
    la.insert(hyp("a b"))
    assert raw(la.final) == "a b c d"
    la.insert(hyp("a c d e f"))
    la.insert(hyp("a c d e f g"))
    assert raw(la.final) == "a b c d e f"


def test_an_unrelated_hypothesis_falls_back_to_time():
    la = LocalAgreement()
    la.insert(hyp("alpha beta gamma"))
    la.insert(hyp("alpha beta gamma"))
    assert raw(la.final) == "alpha beta gamma"  # ends at 850 ms
    # nothing in common: only words that start after the last final word are new
    rest = la.after_final(hyp("one two three four five"))
    assert raw(rest) == "four five"  # starts 900, 1200 >= 850 - 80


def test_a_revised_last_final_word_is_not_appended_again():
    la, _ = run("I like the", "I like the cat", "I like the cat sat")
    assert raw(la.final) == "I like the cat"
    la.insert(hyp("I like the hat sat on"))
    la.insert(hyp("I like the hat sat on the"))
    assert raw(la.final) == "I like the cat sat on"


# ------------------------------------------------------------------ finish


def test_finish_with_a_final_hypothesis_makes_the_rest_final():
    la, _ = run("good morning", "good morning every")
    rest = la.finish(hyp("Good morning everyone."))
    assert raw(rest) == "everyone."
    assert raw(la.final) == "good morning everyone."
    assert la.tentative == []


def test_finish_without_a_hypothesis_takes_the_tentative_words():
    la, _ = run("good morning", "good morning every one")
    rest = la.finish(None)
    assert raw(rest) == "every one"
    assert raw(la.final) == "good morning every one"


def test_finish_forgets_the_previous_hypothesis():
    la, _ = run("a b", "a b c")
    la.finish(None)
    # a new window after finish: nothing to agree with yet
    assert la.insert(hyp("a b c d", t0=0)) == []


def test_finish_on_an_empty_agreement():
    la = LocalAgreement()
    assert la.finish(None) == []
    assert la.finish([]) == []


def test_reset_clears_everything():
    la, _ = run("a b", "a b c")
    la.reset()
    assert la.final == [] and la.tentative == [] and la._previous == []


# ------------------------------------------------------------------ commit_before


def test_commit_before_drops_words_whose_audio_left_the_window():
    la, _ = run("a b c d e", "a b c d e")  # ends 250, 550, 850, 1150, 1450
    gone = la.commit_before(900)
    assert raw(gone) == "a b c"
    assert raw(la.final) == "d e"


def test_commit_before_keeps_exactly_the_words_ending_after_it():
    la, _ = run("a b", "a b")  # ends 250, 550
    assert raw(la.commit_before(249)) == ""  # a word ending after ms is kept
    assert raw(la.commit_before(250)) == "a"  # one ending at ms is gone
    assert raw(la.commit_before(10_000)) == "b"
    assert la.final == []


def test_after_commit_new_hypotheses_of_the_shorter_window_continue():
    la, _ = run("a b c", "a b c d")
    la.commit_before(600)  # a, b leave the window
    assert raw(la.final) == "c"
    la._previous = []
    assert la.insert(hyp("c d e", t0=600)) == []
    assert raw(la.insert(hyp("c d e f", t0=600))) == "d e"
    assert raw(la.final) == "c d e"


def test_commit_before_with_overlapping_word_times():
    la = LocalAgreement()
    a, b, c = HypWord("a", 0, 100, 1.0), HypWord("b", 100, 500, 1.0), HypWord("c", 120, 300, 1.0)
    la.final = [a, b, c]
    gone = la.commit_before(400)
    assert len(gone) + len(la.final) == 3
    assert not set(map(id, gone)) & set(map(id, la.final))


# ------------------------------------------------------------------ property: final is append-only


@pytest.mark.parametrize("seed", range(20))
def test_final_words_only_ever_grow_over_random_hypotheses(seed):
    rng = random.Random(seed)
    truth = [rng.choice(["red", "green", "blue", "fish", "one", "two", "the"]) for _ in range(40)]
    vocab = ["uh", "red", "bread", "glue", "wish", "to", "a"]
    la = LocalAgreement()
    history: list[list[HypWord]] = []
    heard = 0
    for _ in range(60):
        heard = min(len(truth), heard + rng.randint(0, 3))
        words = list(truth[:heard])
        for i in range(len(words)):  # the model mishears now and then
            if rng.random() < 0.15:
                words[i] = rng.choice(vocab)
        if words and rng.random() < 0.3:
            words = words[: rng.randint(0, len(words))]
        la.insert(hyp(" ".join(words)))
        history.append(list(la.final))
        for before, after in zip(history, history[1:], strict=False):
            assert after[: len(before)] == before
    la.finish(hyp(" ".join(truth)))
    assert la.final[: len(history[-1])] == history[-1]


def test_settled_words_become_final_on_one_hypothesis():
    la = LocalAgreement()
    words = hyp("one two three four")  # ends 250, 550, 850, 1150
    newly = la.insert(words, settled_before_ms=900, min_confidence=0.9)
    assert raw(newly) == "one two three" and raw(la.tentative) == "four"


def test_settling_stops_at_the_first_unsure_word():
    la = LocalAgreement()
    words = hyp("one two three four")
    words[1] = HypWord("two", words[1].start_ms, words[1].end_ms, 0.5)
    newly = la.insert(words, settled_before_ms=2000, min_confidence=0.9)
    assert raw(newly) == "one" and raw(la.tentative) == "two three four"


def test_settling_continues_after_the_agreed_prefix():
    la = LocalAgreement()
    la.insert(hyp("one two"), settled_before_ms=0, min_confidence=0.9)
    newly = la.insert(hyp("one two three four"), settled_before_ms=900, min_confidence=0.9)
    assert raw(newly) == "one two three" and raw(la.final) == "one two three"


def test_an_untrusted_hypothesis_settles_nothing():
    la = LocalAgreement()
    assert la.insert(hyp("one two"), may_finalize=False, settled_before_ms=10**6) == []
    assert la.final == []

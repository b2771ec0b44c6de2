"""LocalAgreement-2: which words of a growing hypothesis are stable enough to show as final.

Consecutive hypotheses of the same audio window are compared word by word; the longest common
prefix is stable and never taken back (Macháček et al., 2023). This object is pure: hypotheses
in, final and tentative words out; the session decides when to decode and what the window is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

_NON_WORD = re.compile(r"[^\w']+")
# prompt words compared with a hypothesis that may say them again: a prompt is ~200 characters,
# so this reaches past all of it
CONTEXT_WORDS = 40
# when the model revised a final word, words starting this much before its end still count as
# after it: alignments of two hypotheses of the same audio differ by a few 20 ms frames
REVISED_WORD_SLACK_MS = 80
# after_known: at most this many known words may go unmatched at the end (a revised last word),
# and at least this many must match, for a hypothesis to count as repeating the known words
MAX_UNMATCHED_TAIL = 2
MIN_MATCHED = 2


def normalize_word(text: str) -> str:
    """Lower-case, no punctuation: how words are compared and shown unformatted."""
    return _NON_WORD.sub("", text.lower()).strip("'")


@dataclass(frozen=True, slots=True)
class HypWord:
    """A word of a hypothesis, in stream time (ms)."""

    raw: str  # as the model wrote it: cased, punctuated
    start_ms: int
    end_ms: int
    confidence: float

    @property
    def norm(self) -> str:
        return normalize_word(self.raw)


def after_known(known: list[HypWord], hyp: list[HypWord]) -> list[HypWord] | None:
    """The words of `hyp` after the part that repeats `known` (None: it does not repeat it).

    Matched as a sequence, not by time: a model given `known` as its prompt over a short window
    may say it again with squeezed timestamps, and a revised hypothesis may change a word or two.
    """
    matcher = SequenceMatcher(None, [w.norm for w in known], [w.norm for w in hyp], autojunk=False)
    blocks = [b for b in matcher.get_matching_blocks() if b.size]
    if not blocks:
        return None
    last = blocks[-1]
    end = last.b + last.size
    matched = sum(b.size for b in blocks)
    unmatched_tail = len(known) - (last.a + last.size)
    if (
        unmatched_tail <= MAX_UNMATCHED_TAIL
        and matched >= MIN_MATCHED
        and matched * 2 >= min(len(known), end)  # at least half of what could match did
    ):
        # a revised word at the end of the known words is skipped, not appended again
        return hyp[end + unmatched_tail :]
    return None


class LocalAgreement:
    """Tracks the final prefix of the current decode window."""

    def __init__(self) -> None:
        self.final: list[HypWord] = []
        self._previous: list[HypWord] = []
        self.tentative: list[HypWord] = []
        # final words whose audio already left the window (the prompt); a model given them as
        # a prompt over a short window sometimes says them again, which must not be appended
        self.context: list[HypWord] = []

    def reset(self) -> None:
        self.final.clear()
        self.context = []
        self._previous = []
        self.tentative = []

    def after_final(self, hyp: list[HypWord]) -> list[HypWord]:
        """The part of `hyp` after the words already final.

        Normally the hypothesis repeats the final words first; if the model changed its mind
        about one of them, fall back to time: keep what starts after the last final word.
        """
        n = len(self.final)
        if n and [w.norm for w in hyp[:n]] == [w.norm for w in self.final]:
            return hyp[n:]
        known = self.context[-CONTEXT_WORDS:] + self.final
        if not known:
            return hyp
        rest = after_known(known, hyp)
        if rest is not None:
            return rest
        if not self.final:
            return hyp
        boundary = self.final[-1].end_ms - REVISED_WORD_SLACK_MS
        return [w for w in hyp if w.start_ms >= boundary]

    def insert(
        self,
        hyp: list[HypWord],
        may_finalize: bool = True,
        settled_before_ms: int | None = None,
        min_confidence: float = 0.0,
    ) -> list[HypWord]:
        """Add a new hypothesis of the window; return the words that just became final.

        With `may_finalize` False (a hypothesis from too little audio to be trusted) the words
        are shown as tentative and the hypothesis does not count towards agreement. With
        `settled_before_ms`, the words after the agreed prefix that end by then, each with at
        least `min_confidence`, become final too: audio well inside the window has all the
        context the model will get.
        """
        hyp = [w for w in hyp if w.norm]
        rest = self.after_final(hyp)
        if not may_finalize:
            self._previous = []
            self.tentative = rest
            return []
        prev = self._previous
        k = 0
        while k < len(rest) and k < len(prev) and rest[k].norm == prev[k].norm:
            k += 1
        if settled_before_ms is not None:
            while (
                k < len(rest)
                and rest[k].end_ms <= settled_before_ms
                and rest[k].confidence >= min_confidence
            ):
                k += 1
        newly = rest[:k]
        self.final.extend(newly)
        self._previous = rest[k:]
        self.tentative = rest[k:]
        return newly

    def accept(self, words: list[HypWord], until_ms: int) -> None:
        """Make `words` (the start of a hypothesis after the final words) final without a
        second, agreeing hypothesis (a session catching up under load); what was tentative or
        waiting for agreement before `until_ms` is dropped with them."""
        self.final.extend(w for w in words if w.norm)
        self._previous = [w for w in self._previous if w.start_ms >= until_ms]
        self.tentative = [w for w in self.tentative if w.start_ms >= until_ms]

    def finish(self, hyp: list[HypWord] | None) -> list[HypWord]:
        """End of turn: everything in the last hypothesis becomes final."""
        rest = self.tentative if hyp is None else self.after_final([w for w in hyp if w.norm])
        self.final.extend(rest)
        self._previous = []
        self.tentative = []
        return rest

    def commit_before(self, ms: int) -> list[HypWord]:
        """Drop final words that end by `ms` (their audio left the window); return them.

        The last hypothesis keeps only words that start inside the new window.
        """
        i = 0
        while i < len(self.final) and self.final[i].end_ms <= ms:
            i += 1
        gone, self.final = self.final[:i], self.final[i:]
        self._previous = [w for w in self._previous if w.start_ms >= ms]
        return gone

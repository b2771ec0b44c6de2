"""The compatibility matrix: every wire dialect, one parametrized suite.

Each row (tests/compat_cases/<dialect>.py) streams the same real speech with the vendor's own
client and sends one malformed request; the assertions here are the promises every dialect
makes: the words match the reference, the session opens and ends with the dialect's own
messages, a clean end closes cleanly, and bad input gets the dialect's own error and code.
"""

from __future__ import annotations

import pytest
from compat_cases import all_cases
from speech import joined, speech_or_skip, wer

CASES = all_cases()


@pytest.fixture(scope="module")
def speech():
    return joined(speech_or_skip(2), gap_s=1.6)


@pytest.fixture(scope="module")
def outcomes(server, speech):
    return {}


def outcome(case, server, speech, cache):
    if case.name not in cache:
        cache[case.name] = case.stream(server, speech)
    return cache[case.name]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_transcript_matches_the_reference(case, server, speech, outcomes):
    got = outcome(case, server, speech, outcomes)
    assert wer(speech.text, got.transcript) <= 0.35, (speech.text, got.transcript)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_session_opens_and_ends_with_the_dialects_messages(case, server, speech, outcomes):
    got = outcome(case, server, speech, outcomes)
    assert got.messages, "no messages"
    if case.first is not None:
        assert got.messages[0] == case.first, got.messages
    if case.last is not None:
        assert got.messages[-1] == case.last, got.messages
        assert got.messages.count(case.last) == 1, got.messages


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_clean_end_closes_cleanly(case, server, speech, outcomes):
    got = outcome(case, server, speech, outcomes)
    assert got.close_code == case.clean_close


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_gets_the_dialects_error(case, server):
    bad = case.bad_input(server)
    assert bad.code == case.bad_code, bad
    assert bad.error.strip(), bad

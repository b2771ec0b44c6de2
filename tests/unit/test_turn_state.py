"""The session's turn state machine: the steps it takes, the verbs the runner calls, and the
error an impossible step raises. Driven with a scripted VAD; no model."""

from __future__ import annotations

import numpy as np
import pytest

from streamscribe.engine.session import StreamingSession, TurnState, TurnStateError

FRAME = 512  # samples per 32 ms VAD frame


def session(speech: bool) -> StreamingSession:
    """A session whose VAD hears speech (0.9) or silence (0.0) in every frame."""
    prob = 0.9 if speech else 0.0
    return StreamingSession(vad_probs=lambda s: [prob] * (len(s) // FRAME))


def frames(n: int) -> np.ndarray:
    return np.zeros(n * FRAME, dtype=np.float32)


def test_onset_opens_a_turn_and_a_force_starts_ending_it():
    s = session(speech=True)
    assert s.state is TurnState.IDLE
    s.feed(frames(10))
    assert s.state is TurnState.SPEAKING and not s.ending
    s.force_endpoint()
    assert s.state is TurnState.ENDING and s.ending and not s.idle


def test_a_failed_final_decode_leaves_the_turn_open_and_nothing_in_flight():
    s = session(speech=True)
    s.feed(frames(10))
    s.force_endpoint()
    ticket = s.next_request()
    assert ticket is not None and ticket.kind == "final" and s.in_flight is ticket
    s.fail()
    assert s.state is TurnState.SPEAKING and s.in_flight is None and s.idle


def test_a_superseded_decode_is_released():
    s = session(speech=True)
    s.feed(frames(10))
    ticket = s.next_request()
    assert ticket is not None and s.in_flight is ticket
    s.release(ticket)
    assert s.in_flight is None and s.state is TurnState.SPEAKING


def test_an_impossible_step_names_the_state():
    s = session(speech=False)
    with pytest.raises(TurnStateError, match="IDLE: cannot end"):
        s._move("end")
    assert s.state is TurnState.IDLE

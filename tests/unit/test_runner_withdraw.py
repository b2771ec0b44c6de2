"""A partial still queued when the speaker pauses gives way to the end-of-speech decode.

The runner keeps one decode per session in flight; without this, a session whose partial waits
in a long queue (a loaded server) would ask for its end-of-speech decode only after that stale
partial came back, paying the queue twice. A real `DecodeScheduler` over a fake model the test
holds busy shows the partial taken back unseen by the model and the eager decode sent instead.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from test_runner_markers import FRAME, RATE, WORDS, feed_until, vad

from streamscribe.engine.decoding import DecodeRequest, DecodeResult, RawWord
from streamscribe.engine.runner import SessionRunner
from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.engine.session import StreamingSession, TurnSettings
from streamscribe.events import TurnUpdate

SPEECH_END_MS = 2496


class HeldOracle:
    """The words inside each request's window; blocks while held; logs each window."""

    sample_rate = RATE
    multilingual = False

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.windows: list[tuple[int, int]] = []  # (start_ms, end_ms) of each request decoded

    def transcribe_batch(self, requests: list[DecodeRequest]) -> list[DecodeResult]:
        self.entered.set()
        self.gate.wait(5)
        out = []
        for r in requests:
            if r.prompt == "busy":
                out.append(DecodeResult((), ""))
                continue
            start = int(r.audio[0]) * 1000 // RATE
            end = start + len(r.audio) * 1000 // RATE
            self.windows.append((start, end))
            heard = [
                RawWord(w, (t - start) / 1000, (t + 250 - start) / 1000, 0.9)
                for w, t in WORDS
                if t >= start - 50 and t + 250 <= end
            ]
            out.append(DecodeResult(tuple(heard), " ".join(w.text for w in heard)))
        return out


async def test_the_queued_partial_is_withdrawn_when_the_speaker_pauses():
    model = HeldOracle()
    scheduler = DecodeScheduler(model)  # type: ignore[arg-type]
    await scheduler.start()
    try:
        # another session's decode holds the model
        busy = asyncio.create_task(
            scheduler.submit(DecodeRequest(np.zeros(FRAME, np.float32), prompt="busy"), "x")
        )
        while not model.entered.is_set():
            await asyncio.sleep(0.001)
        r = SessionRunner(scheduler, TurnSettings(min_final_window_ms=0))
        r.sessions = [StreamingSession(0, r.sessions[0].settings, vad_probs=vad([0, 0]))]
        fed = [0]
        await feed_until(r, 2000, fed)  # speaking: a partial is queued behind "busy"
        assert scheduler.queued == 1 and scheduler.stats.superseded == 0
        await feed_until(r, SPEECH_END_MS + 300, fed)  # the speaker paused
        assert scheduler.stats.superseded == 1  # the partial was taken back ...
        assert scheduler.queued == 1  # ... and the end-of-speech decode queued instead
        model.gate.set()
        await busy
        await feed_until(r, SPEECH_END_MS + 2000, fed)
        await asyncio.wait_for(r.finish(), 5)
        # the model never decoded the stale partial: its first window reaches the speech end
        assert model.windows and model.windows[0][1] >= SPEECH_END_MS
        ends = []
        while not r.events.empty():
            e = r.events.get_nowait()
            if isinstance(e, TurnUpdate) and e.end_of_turn:
                ends.append(" ".join(w.text for w in e.words))
        assert ends == ["one two three four five"]
    finally:
        await scheduler.stop()


async def test_the_most_behind_session_names_the_decode_it_waits_on_and_its_lag():
    """What `/v1/metrics` shows at a lag peak, and what the queue orders by: the runner hands
    the scheduler the session's lag with each request, and reports the decode still out."""
    model = HeldOracle()
    scheduler = DecodeScheduler(model)  # type: ignore[arg-type]
    await scheduler.start()
    try:
        busy = asyncio.create_task(
            scheduler.submit(DecodeRequest(np.zeros(FRAME, np.float32), prompt="busy"), "x")
        )
        while not model.entered.is_set():
            await asyncio.sleep(0.001)
        r = SessionRunner(scheduler, TurnSettings(min_final_window_ms=0))
        r.sessions = [StreamingSession(0, r.sessions[0].settings, vad_probs=vad([0, 0]))]
        assert r.most_behind() is None  # nothing heard: nobody behind
        fed = [0]
        await feed_until(r, 2000, fed)  # a partial waits behind "busy"
        detail = r.most_behind()
        assert detail is not None and detail["state"] == "speaking"
        assert detail["in_flight"] == "partial" and detail["in_flight_for_ms"] >= 0
        assert detail["lag_ms"] == r.lag_ms > 0
        (item,) = scheduler._queue
        assert item.behind_since is not None
        sent_with_ms = (item.queued_at - item.behind_since) * 1000
        assert 0 < sent_with_ms <= r.lag_ms  # the lag when it was sent; it only grew since
        model.gate.set()
        await busy
        await feed_until(r, SPEECH_END_MS + 2000, fed)
        await asyncio.wait_for(r.finish(), 5)
        assert r.most_behind() is None  # the turn is over: nothing uncovered
    finally:
        await scheduler.stop()

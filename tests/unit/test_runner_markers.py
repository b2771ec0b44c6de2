"""The runner's flush acknowledgement: `ForceEndpoint(marker=...)` is answered by `Flushed`
only after every turn it ended has been emitted as final, in the order markers came.

A scripted VAD and a perfect "model" (the words whose audio lies in the request's window) stand
in for silero and Whisper, as in test_session_policy; the scheduler is a small fake whose
decodes complete when the test releases them, so the order of events is observable.
"""

from __future__ import annotations

import asyncio

import numpy as np

from streamscribe.engine.decoding import DecodeRequest, DecodeResult, RawWord
from streamscribe.engine.runner import SessionRunner
from streamscribe.engine.session import StreamingSession
from streamscribe.events import Audio, Flushed, ForceEndpoint, TurnUpdate

RATE = 16000
FRAME = 512
WORDS = [("one", 1024), ("two", 1324), ("three", 1624), ("four", 1924), ("five", 2224)]


def vad(samples_seen: list[int]):
    def probs(samples: np.ndarray) -> list[float]:
        out = []
        samples_seen[0] += len(samples)
        while samples_seen[1] + FRAME <= samples_seen[0]:
            t = samples_seen[1] * 1000 // RATE
            out.append(0.9 if 1024 <= t < 2500 else 0.0)
            samples_seen[1] += FRAME
        return out

    return probs


class OracleScheduler:
    """Answers each request with the words inside its window (sample values are indices)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()

    def withdraw(self, key: str) -> bool:
        return False  # nothing waits in a queue here

    async def submit(
        self,
        request: DecodeRequest,
        key: str,
        tenant: str | None = None,
        kind: str = "",
        behind_ms: int = 0,
        refresh=None,
    ) -> DecodeResult | None:
        await self.gate.wait()
        await asyncio.sleep(0)
        if refresh is not None:  # as the real scheduler does when the request starts decoding
            request = refresh()
        start_ms = int(request.audio[0]) * 1000 // RATE
        end_ms = start_ms + len(request.audio) * 1000 // RATE
        heard = [
            RawWord(w, (t - start_ms) / 1000, (t + 250 - start_ms) / 1000, 0.9)
            for w, t in WORDS
            if t >= start_ms - 50 and t + 250 <= end_ms
        ]
        return DecodeResult(tuple(heard), " ".join(w.text for w in heard))


def runner(scheduler: OracleScheduler) -> SessionRunner:
    r = SessionRunner(scheduler)  # type: ignore[arg-type]
    r.sessions = [StreamingSession(0, r.sessions[0].settings, vad_probs=vad([0, 0]))]
    return r


async def feed_until(r: SessionRunner, ms: int, fed: list[int]) -> None:
    while fed[0] * 1000 // RATE < ms:
        samples = np.arange(fed[0], fed[0] + FRAME, dtype=np.float32)
        fed[0] += FRAME
        await r.handle(Audio(samples))
        await asyncio.sleep(0)


def drain(r: SessionRunner) -> list:
    out = []
    while not r.events.empty():
        out.append(r.events.get_nowait())
    return out


async def test_flushed_follows_the_final_turn_the_marker_forced():
    sched = OracleScheduler()
    r = runner(sched)
    fed = [0]
    await feed_until(r, 2000, fed)
    sched.gate.clear()  # the final decode is held: the marker must wait for it
    await r.handle(ForceEndpoint(marker="m1"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not any(isinstance(e, Flushed) for e in drain(r))
    sched.gate.set()
    await asyncio.wait_for(r.finish(), 5)
    events = drain(r)
    kinds = [type(e).__name__ for e in events]
    final = next(e for e in events if isinstance(e, TurnUpdate) and e.end_of_turn)
    assert final.forced and "one" in final.text
    flushed = [e for e in events if isinstance(e, Flushed)]
    assert flushed == [Flushed("m1")]
    assert events.index(flushed[0]) > events.index(final), kinds


async def test_a_marker_with_no_turn_in_progress_is_acknowledged_at_once():
    r = runner(OracleScheduler())
    await feed_until(r, 500, [0])  # silence only
    await r.handle(ForceEndpoint(marker="empty"))
    assert drain(r) == [Flushed("empty")]


async def test_markers_are_acknowledged_in_order():
    sched = OracleScheduler()
    r = runner(sched)
    fed = [0]
    await feed_until(r, 1800, fed)
    sched.gate.clear()
    await r.handle(ForceEndpoint(marker="a"))
    await r.handle(ForceEndpoint(marker="b"))  # nothing new to end, but "a" is still pending
    assert not any(isinstance(e, Flushed) for e in drain(r))
    sched.gate.set()
    await asyncio.wait_for(r.finish(), 5)
    assert [e.marker for e in drain(r) if isinstance(e, Flushed)] == ["a", "b"]

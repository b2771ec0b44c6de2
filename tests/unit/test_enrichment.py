"""Final-turn enrichment without a model: the audio a turn is enriched from, the order of
events while an enrichment runs, and a failure that costs only the label."""

from __future__ import annotations

import asyncio

import numpy as np

from streamscribe.engine.decoding import DecodeResult
from streamscribe.engine.enrichment import AudioHistory, TurnEnricher
from streamscribe.engine.runner import SessionRunner
from streamscribe.events import SpeechStarted, TurnUpdate, Word


def turn(order: int, text: str = "hallo welt", start: int = 1000, language: str = "de"):
    words = tuple(
        Word(w, start + i * 300, start + i * 300 + 250, 0.9, True)
        for i, w in enumerate(text.split())
    )
    return TurnUpdate(0, order, words, end_of_turn=True, language=language)


def test_audio_history_slices_by_stream_time_and_forgets_the_oldest():
    h = AudioHistory(seconds=1.0)
    h.append(np.arange(16000 * 2, dtype=np.float32))  # 2 s: only the last second is kept
    part = h.slice(1500, 1600)
    assert part[0] == 1500 * 16 and len(part) == 1600
    assert len(h.slice(0, 500)) == 0  # forgotten
    assert len(h.slice(1900, 5000)) == 100 * 16  # cut at what exists


class SlowScheduler:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.requests = []

    def withdraw(self, key: str) -> bool:
        return False  # nothing waits in a queue here

    async def submit(self, request, key, tenant=None, kind="", behind_ms=0, refresh=None):
        self.requests.append(request)
        await self.gate.wait()
        return DecodeResult((), " Hello world.")


class Labels:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def label_turn(self, audio, words):
        if self.fail:
            raise RuntimeError("encoder broke")
        return ["A" if i % 2 == 0 else "B" for i in range(len(words))]


async def test_a_final_turn_waits_for_its_translation_and_holds_the_events_behind_it():
    sched = SlowScheduler()
    enricher = TurnEnricher(sched, "s", 1, translate=True)  # type: ignore[arg-type]
    enricher.feed(0, np.ones(16000 * 3, dtype=np.float32))
    runner = SessionRunner(sched, enricher=enricher)  # type: ignore[arg-type]
    runner._emit([turn(0), SpeechStarted(0, 2500)])
    await asyncio.sleep(0.01)
    assert runner.events.empty()  # the turn is being translated: nothing overtakes it
    assert sched.requests[0].task == "translate" and sched.requests[0].language == "de"
    assert len(sched.requests[0].audio) == (1550 + 200 - 800) * 16  # the turn, padded
    sched.gate.set()
    await asyncio.wait_for(runner._outbox_empty.wait(), 2)
    first, second = runner.events.get_nowait(), runner.events.get_nowait()
    assert first.translation == "Hello world." and first.text == "hallo welt"
    assert second == SpeechStarted(0, 2500)


async def test_the_formatted_resend_shares_the_enrichment_of_its_turn():
    sched = SlowScheduler()
    sched.gate.set()
    enricher = TurnEnricher(sched, "s", 1, translate=True)  # type: ignore[arg-type]
    enricher.feed(0, np.ones(16000 * 3, dtype=np.float32))
    plain = turn(0)
    formatted = TurnUpdate(0, 0, plain.words, end_of_turn=True, formatted=True, language="de")
    a, b = await asyncio.gather(enricher.enrich(plain), enricher.enrich(formatted))
    assert a.translation == b.translation == "Hello world."
    assert len(sched.requests) == 1


async def test_an_english_turn_is_its_own_translation():
    sched = SlowScheduler()
    enricher = TurnEnricher(sched, "s", 1, translate=True)  # type: ignore[arg-type]
    out = await enricher.enrich(turn(0, "good morning", language="en"))
    assert out.translation == "good morning" and not sched.requests


async def test_speaker_labels_go_on_words_and_the_turn_takes_the_majority():
    enricher = TurnEnricher(None, "s", 1, speakers=[Labels()])  # type: ignore[arg-type]
    enricher.feed(0, np.ones(16000 * 3, dtype=np.float32))
    out = await enricher.enrich(turn(0, "one two three"))
    assert [w.speaker for w in out.words] == ["A", "B", "A"]
    assert out.speaker == "A"


async def test_a_failed_enrichment_still_delivers_the_turn():
    enricher = TurnEnricher(None, "s", 1, speakers=[Labels(fail=True)])  # type: ignore[arg-type]
    enricher.feed(0, np.ones(16000 * 3, dtype=np.float32))
    original = turn(0)
    out = await enricher.enrich(original)
    assert out == original


class Halves:
    """The first half of a turn's words is A, the second B."""

    def label_turn(self, audio, words):
        return ["A" if i < len(words) // 2 else "B" for i in range(len(words))]


async def test_the_formatted_resend_takes_its_labels_from_the_words_it_overlaps():
    """The formatted re-send is the final decode's own words (here one fewer: "to day" ->
    "today"); each takes the speaker of the labelled word its time overlaps most."""
    enricher = TurnEnricher(None, "s", 1, speakers=[Halves()])  # type: ignore[arg-type]
    enricher.feed(0, np.ones(16000 * 4, dtype=np.float32))
    plain = turn(0, "yes to day no thanks really")  # A A A | B B B
    w = plain.words
    merged = Word("today", w[1].start_ms, w[2].end_ms, 0.9, True)
    formatted = TurnUpdate(0, 0, (w[0], merged, *w[3:]), end_of_turn=True, formatted=True)
    a = await enricher.enrich(plain)
    b = await enricher.enrich(formatted)
    assert [x.speaker for x in a.words] == ["A", "A", "A", "B", "B", "B"]
    assert [x.speaker for x in b.words] == ["A", "A", "B", "B", "B"]
    # the turn's speaker holds most word time: "today" is 550 ms, so A has 800 ms to B's 750
    assert a.speaker == b.speaker == "A"

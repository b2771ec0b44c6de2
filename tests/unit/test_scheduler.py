"""The decode scheduler with a fake model: priorities, coalescing, batching, failures.

The fake transcriber records every batch it is given. A gate lets a test hold the "model" busy
on a first request while it queues others, so the order in which they are taken is observable.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from streamscribe.engine.decoding import DecodeRequest, DecodeResult
from streamscribe.engine.scheduler import PROMOTE_BEHIND_S, DecodeScheduler

# ------------------------------------------------------------------ helpers


class FakeTranscriber:
    sample_rate = 16000
    multilingual = False

    def __init__(self, delay: float = 0.005, fail_on: str | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.short_by = 0  # return this many results too few (a broken backend)

    def hold(self) -> None:
        """The next batch blocks inside the model until `release()`."""
        self.gate.clear()
        self.entered.clear()

    def release(self) -> None:
        self.gate.set()

    def transcribe_batch(self, requests: list[DecodeRequest]) -> list[DecodeResult]:
        self.batches.append([r.prompt for r in requests])
        self.entered.set()
        self.gate.wait(5)
        time.sleep(self.delay)
        if self.fail_on is not None and any(r.prompt == self.fail_on for r in requests):
            raise RuntimeError("model exploded")
        results = [DecodeResult(words=(), text=f"decoded {r.prompt}") for r in requests]
        return results[: len(results) - self.short_by]


def req(name: str, final: bool = False) -> DecodeRequest:
    """A request whose prompt names it, so batches read as lists of names."""
    return DecodeRequest(audio=np.zeros(160, dtype=np.float32), prompt=name, final=final)


@pytest.fixture
async def model():
    return FakeTranscriber()


async def make(model: FakeTranscriber, max_batch_size: int = 8) -> DecodeScheduler:
    scheduler = DecodeScheduler(model, max_batch_size=max_batch_size)
    await scheduler.start()
    return scheduler


async def busy(scheduler: DecodeScheduler, model: FakeTranscriber) -> asyncio.Task:
    """Occupy the model with a first request ('busy'); return its task."""
    model.hold()
    task = asyncio.create_task(scheduler.submit(req("busy", final=True), "busy"))
    while not model.entered.is_set():
        await asyncio.sleep(0.001)
    return task


async def queue(scheduler: DecodeScheduler, *items: tuple[str, str, bool]) -> list[asyncio.Task]:
    """Submit (name, key, final) requests in order while the model is busy."""
    tasks = []
    for name, key, final in items:
        tasks.append(asyncio.create_task(scheduler.submit(req(name, final), key)))
        await asyncio.sleep(0)  # let submit() run up to its await
    return tasks


def text(result: DecodeResult | None) -> str | None:
    return None if result is None else result.text


# ------------------------------------------------------------------ basics


async def test_a_request_is_decoded(model):
    scheduler = await make(model)
    try:
        result = await scheduler.submit(req("hello"), "s1")
        assert text(result) == "decoded hello"
        assert model.batches == [["hello"]]
        assert scheduler.stats.requests == 1 and scheduler.stats.batches == 1
        assert scheduler.queued == 0 and scheduler.busy == 0
    finally:
        await scheduler.stop()


async def test_submit_starts_the_workers_on_first_use(model):
    scheduler = DecodeScheduler(model)
    try:
        assert text(await scheduler.submit(req("lazy"), "s1")) == "decoded lazy"
    finally:
        await scheduler.stop()


# ------------------------------------------------------------------ priorities


async def test_finals_go_before_partials(model):
    scheduler = await make(model, max_batch_size=1)
    try:
        first = await busy(scheduler, model)
        tasks = await queue(
            scheduler,
            ("p-a", "a", False),
            ("p-b", "b", False),
            ("f-c", "c", True),
            ("f-d", "d", True),
        )
        assert scheduler.queued == 4
        model.release()
        await first
        results = await asyncio.gather(*tasks)
        assert model.batches == [["busy"], ["f-c"], ["f-d"], ["p-a"], ["p-b"]]
        assert [text(r) for r in results] == [
            "decoded p-a",
            "decoded p-b",
            "decoded f-c",
            "decoded f-d",
        ]
    finally:
        await scheduler.stop()


async def test_a_batch_holds_finals_first_then_partials_in_arrival_order(model):
    scheduler = await make(model, max_batch_size=8)
    try:
        first = await busy(scheduler, model)
        tasks = await queue(
            scheduler, ("p1", "a", False), ("f1", "b", True), ("p2", "c", False), ("f2", "d", True)
        )
        model.release()
        await asyncio.gather(first, *tasks)
        assert model.batches == [["busy"], ["f1", "f2", "p1", "p2"]]
    finally:
        await scheduler.stop()


async def test_urgent_partials_go_after_finals_and_before_routine_partials(model):
    """A turn's first partial and its end-of-speech decode are what first-partial and
    end-of-turn latency wait on: under load they overtake routine partials, never finals."""
    scheduler = await make(model, max_batch_size=1)
    try:
        first = await busy(scheduler, model)
        items = [("routine", "a", 2, False), ("urgent", "b", 1, False), ("final", "c", 2, True)]
        tasks = []
        for name, key, urgency, final in items:
            request = DecodeRequest(
                audio=np.zeros(160, dtype=np.float32), prompt=name, final=final, urgency=urgency
            )
            tasks.append(asyncio.create_task(scheduler.submit(request, key)))
            await asyncio.sleep(0)
        model.release()
        await asyncio.gather(first, *tasks)
        assert model.batches == [["busy"], ["final"], ["urgent"], ["routine"]]
    finally:
        await scheduler.stop()


async def test_requests_of_sessions_far_behind_go_after_finals_most_behind_first(model):
    """A session whose oldest uncovered speech is PROMOTE_BEHIND_S old must not keep waiting
    while other sessions' urgent decodes pass it: its request, routine or urgent, goes right
    after the finals, the most-behind session first; the others keep their class order."""
    scheduler = await make(model, max_batch_size=1)
    behind = int(PROMOTE_BEHIND_S * 1000)
    try:
        first = await busy(scheduler, model)
        items = [
            ("urgent-early", "a", 1, False, 0),
            ("routine-fresh", "b", 2, False, behind - 500),
            ("routine-behind", "c", 2, False, behind),
            ("eager-further-behind", "d", 1, False, behind + 500),
            ("urgent-late", "e", 1, False, 0),
            ("final", "f", 2, True, behind + 900),
        ]
        tasks = []
        for name, key, urgency, final, behind_ms in items:
            request = DecodeRequest(
                audio=np.zeros(160, dtype=np.float32), prompt=name, final=final, urgency=urgency
            )
            tasks.append(asyncio.create_task(scheduler.submit(request, key, behind_ms=behind_ms)))
            await asyncio.sleep(0)
        model.release()
        await asyncio.gather(first, *tasks)
        assert model.batches == [
            ["busy"],
            ["final"],
            ["eager-further-behind"],
            ["routine-behind"],
            ["urgent-early"],
            ["urgent-late"],
            ["routine-fresh"],
        ]
        assert scheduler.stats.promoted == 2
    finally:
        await scheduler.stop()


async def test_a_routine_partial_is_promoted_while_it_waits():
    """The promotion is judged when the model is free, not at submission: a partial submitted
    0.3 s short of the bound goes before an urgent request once it has waited those 0.3 s."""
    model = FakeTranscriber()
    scheduler = await make(model, max_batch_size=1)
    behind = int(PROMOTE_BEHIND_S * 1000) - 300
    try:
        first = await busy(scheduler, model)
        routine = DecodeRequest(audio=np.zeros(160, dtype=np.float32), prompt="routine", urgency=2)
        tasks = [asyncio.create_task(scheduler.submit(routine, "a", behind_ms=behind))]
        await asyncio.sleep(0.35)
        urgent = DecodeRequest(audio=np.zeros(160, dtype=np.float32), prompt="urgent", urgency=1)
        tasks.append(asyncio.create_task(scheduler.submit(urgent, "b")))
        await asyncio.sleep(0)
        model.release()
        await asyncio.gather(first, *tasks)
        assert model.batches == [["busy"], ["routine"], ["urgent"]]
    finally:
        await scheduler.stop()


# ------------------------------------------------------------------ coalescing stale partials


async def test_a_newer_partial_replaces_the_queued_older_one(model):
    scheduler = await make(model)
    try:
        first = await busy(scheduler, model)
        older, newer = await queue(scheduler, ("old", "a", False), ("new", "a", False))
        assert await asyncio.wait_for(older, 0.5) is None  # answered before the model is free
        assert scheduler.queued == 1
        model.release()
        await first
        assert text(await newer) == "decoded new"
        assert model.batches == [["busy"], ["new"]]
        assert scheduler.stats.superseded == 1
    finally:
        await scheduler.stop()


async def test_partials_of_other_keys_are_not_replaced(model):
    scheduler = await make(model)
    try:
        first = await busy(scheduler, model)
        a, b = await queue(scheduler, ("a1", "a", False), ("b1", "b", False))
        model.release()
        await first
        assert [text(r) for r in await asyncio.gather(a, b)] == ["decoded a1", "decoded b1"]
        assert scheduler.stats.superseded == 0
    finally:
        await scheduler.stop()


async def test_finals_are_never_replaced_and_never_replace(model):
    scheduler = await make(model)
    try:
        first = await busy(scheduler, model)
        tasks = await queue(
            scheduler, ("f1", "a", True), ("p1", "a", False), ("f2", "a", True), ("p2", "a", False)
        )
        model.release()
        await first
        results = [text(r) for r in await asyncio.gather(*tasks)]
        assert results == ["decoded f1", None, "decoded f2", "decoded p2"]
        assert model.batches == [["busy"], ["f1", "f2", "p2"]]
    finally:
        await scheduler.stop()


async def test_a_partial_already_decoding_is_not_replaced(model):
    scheduler = await make(model)
    try:
        model.hold()
        running = asyncio.create_task(scheduler.submit(req("running"), "a"))
        while not model.entered.is_set():
            await asyncio.sleep(0.001)
        (newer,) = await queue(scheduler, ("newer", "a", False))
        model.release()
        assert text(await running) == "decoded running"
        assert text(await newer) == "decoded newer"
    finally:
        await scheduler.stop()


async def test_withdraw_takes_back_a_queued_partial_of_that_key_only(model):
    scheduler = await make(model)
    try:
        first = await busy(scheduler, model)
        mine, other, final = await queue(
            scheduler, ("mine", "a", False), ("other", "b", False), ("final", "a", True)
        )
        assert scheduler.withdraw("a") is True
        assert await asyncio.wait_for(mine, 0.5) is None  # answered at once, as superseded
        assert scheduler.withdraw("a") is False  # a final is never withdrawn
        model.release()
        await first
        assert [text(r) for r in await asyncio.gather(other, final)] == [
            "decoded other",
            "decoded final",
        ]
        assert "mine" not in [name for batch in model.batches for name in batch]
    finally:
        await scheduler.stop()


async def test_withdraw_leaves_a_partial_already_decoding(model):
    scheduler = await make(model)
    try:
        model.hold()
        running = asyncio.create_task(scheduler.submit(req("running"), "a"))
        while not model.entered.is_set():
            await asyncio.sleep(0.001)
        assert scheduler.withdraw("a") is False
        model.release()
        assert text(await running) == "decoded running"
    finally:
        await scheduler.stop()


async def test_a_request_bound_late_is_refreshed_when_it_starts_decoding(model):
    scheduler = await make(model)
    try:
        first = await busy(scheduler, model)
        calls: list[str] = []

        def refresh() -> DecodeRequest:
            calls.append("refresh")
            return req("fresh")

        waiting = asyncio.create_task(scheduler.submit(req("stale"), "a", refresh=refresh))
        await asyncio.sleep(0.01)
        assert calls == []  # not while it waits in the queue
        model.release()
        await first
        assert text(await waiting) == "decoded fresh"
        assert calls == ["refresh"]
        assert ["fresh"] in model.batches and ["stale"] not in model.batches
    finally:
        await scheduler.stop()


async def test_a_refresh_that_fails_decodes_the_request_as_queued(model):
    scheduler = await make(model)
    try:

        def broken() -> DecodeRequest:
            raise ValueError("session gone")

        assert text(await scheduler.submit(req("as-queued"), "a", refresh=broken)) == (
            "decoded as-queued"
        )
    finally:
        await scheduler.stop()


# ------------------------------------------------------------------ batching


async def test_requests_of_different_sessions_share_a_batch_up_to_the_limit(model):
    scheduler = await make(model, max_batch_size=3)
    try:
        first = await busy(scheduler, model)
        tasks = await queue(scheduler, *[(f"k{i}", f"k{i}", False) for i in range(7)])
        model.release()
        await first
        results = await asyncio.gather(*tasks)
        assert [text(r) for r in results] == [f"decoded k{i}" for i in range(7)]
        assert model.batches == [["busy"], ["k0", "k1", "k2"], ["k3", "k4", "k5"], ["k6"]]
        assert list(scheduler.stats.batch_sizes) == [1, 3, 3, 1]
        assert scheduler.stats.requests == 8
    finally:
        await scheduler.stop()


async def test_a_batch_size_below_one_means_one():
    scheduler = DecodeScheduler(FakeTranscriber(), max_batch_size=0)
    assert scheduler.max_batch_size == 1
    await scheduler.stop()


async def test_concurrent_sessions_are_all_served(model):
    scheduler = await make(model, max_batch_size=4)
    try:
        results = await asyncio.gather(
            *[scheduler.submit(req(f"s{i}", final=i % 3 == 0), f"s{i}") for i in range(12)]
        )
        assert [text(r) for r in results] == [f"decoded s{i}" for i in range(12)]
        assert all(len(b) <= 4 for b in model.batches)
        assert sorted(p for b in model.batches for p in b) == sorted(f"s{i}" for i in range(12))
    finally:
        await scheduler.stop()


# ------------------------------------------------------------------ failures


async def test_a_model_exception_fails_only_that_batch(model):
    model.fail_on = "boom"
    scheduler = await make(model, max_batch_size=2)
    try:
        first = await busy(scheduler, model)
        tasks = await queue(
            scheduler, ("boom", "a", True), ("mate", "b", True), ("fine", "c", False)
        )
        model.release()
        await first
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], RuntimeError) and isinstance(results[1], RuntimeError)
        assert text(results[2]) == "decoded fine"
        assert model.batches == [["busy"], ["boom", "mate"], ["fine"]]
        assert scheduler.stats.failed == 2
        assert scheduler.busy == 0
        # and it keeps serving
        assert text(await scheduler.submit(req("later"), "d")) == "decoded later"
    finally:
        await scheduler.stop()


async def test_a_caller_that_gives_up_does_not_block_the_others(model):
    scheduler = await make(model)
    try:
        first = await busy(scheduler, model)
        gone, stays = await queue(scheduler, ("gone", "a", False), ("stays", "b", False))
        gone.cancel()
        await asyncio.sleep(0)
        model.release()
        await first
        assert text(await stays) == "decoded stays"
        assert ["gone"] not in model.batches
        assert all("gone" not in b for b in model.batches)
    finally:
        await scheduler.stop()


async def test_a_backend_returning_too_few_results_fails_only_that_batch(model):
    scheduler = await make(model)
    try:
        model.short_by = 1
        (outcome,) = await asyncio.wait_for(
            asyncio.gather(scheduler.submit(req("short"), "a"), return_exceptions=True), 0.3
        )
        assert isinstance(outcome, Exception)  # an error for that batch, not a hang
        model.short_by = 0
        result = await asyncio.wait_for(scheduler.submit(req("later"), "b"), 0.3)
        assert text(result) == "decoded later"
    finally:
        model.release()
        await scheduler.stop()


async def test_stop_cancels_what_is_still_queued(model):
    scheduler = await make(model)
    first = await busy(scheduler, model)
    (queued,) = await queue(scheduler, ("queued", "a", False))
    await scheduler.stop()
    model.release()
    (outcome,) = await asyncio.wait_for(asyncio.gather(queued, return_exceptions=True), 0.5)
    assert isinstance(outcome, asyncio.CancelledError)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert scheduler.queued == 0


async def test_stop_does_not_leave_the_batch_in_flight_waiting_forever(model):
    scheduler = await make(model)
    first = await busy(scheduler, model)
    await scheduler.stop()
    try:
        await asyncio.wait_for(asyncio.gather(first, return_exceptions=True), 0.3)
    finally:
        model.release()
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)


# ------------------------------------------------------------------ stats


async def test_queue_delay_is_measured(model):
    scheduler = await make(model)
    try:
        first = await busy(scheduler, model)
        (waiting,) = await queue(scheduler, ("waiting", "a", False))
        await asyncio.sleep(0.05)
        model.release()
        await asyncio.gather(first, waiting)
        assert scheduler.stats.recent_queue_delay_ms() > 0
        assert max(ms for _, ms in scheduler.stats.queue_delays_ms) >= 40
        assert scheduler.stats.recent_queue_delay_ms(window_s=-1) == 0.0
    finally:
        await scheduler.stop()


async def test_decodes_are_counted_by_the_kind_their_caller_named(model):
    scheduler = await make(model, max_batch_size=1)
    try:
        first = asyncio.create_task(scheduler.submit(req("p1"), "a", kind="partial"))
        await asyncio.sleep(0)
        await asyncio.gather(
            first,
            scheduler.submit(req("e1"), "b", kind="eager"),
            scheduler.submit(req("p2"), "c", kind="partial"),
        )
        await scheduler.submit(req("untagged"), "d")
        kinds = scheduler.stats.kinds_summary()
        assert set(kinds) == {"partial", "eager", "other"}
        assert kinds["partial"]["decodes"] == 2 and kinds["eager"]["decodes"] == 1
        assert kinds["partial"]["mean_model_ms"] >= 5  # the fake model sleeps 5 ms a batch
        assert kinds["eager"]["mean_queue_ms"] > 0  # it waited behind p1
    finally:
        await scheduler.stop()

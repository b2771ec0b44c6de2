"""Fairness of the decode scheduler between tenants (API keys), with a fake model.

One key with many streams must not starve another key's one stream: the next batch goes to the
tenant with the least decode time so far (each tenant's most urgent request first: finals before
partials within a tenant), a tenant that comes back banks no credit, and while several tenants
are active a batch holds one tenant's share (`tenant_batch_share`) or an even share of each.
"""

from __future__ import annotations

import asyncio
import time

from test_scheduler import FakeTranscriber, busy, make, req, text

from streamscribe.engine.decoding import DecodeRequest, DecodeResult
from streamscribe.engine.scheduler import DecodeScheduler


async def queue_for(
    scheduler: DecodeScheduler, *items: tuple[str, str, str, bool]
) -> list[asyncio.Task]:
    """Submit (name, session key, tenant, final) requests in order while the model is busy."""
    tasks = []
    for name, key, tenant, final in items:
        tasks.append(asyncio.create_task(scheduler.submit(req(name, final), key, tenant=tenant)))
        await asyncio.sleep(0)
    return tasks


async def test_one_stream_of_a_quiet_key_is_not_queued_behind_a_floods_31():
    model = FakeTranscriber()
    scheduler = await make(model, max_batch_size=1)
    try:
        first = await busy(scheduler, model)
        flood = [(f"f{i}", f"flood-{i}", "flooder", False) for i in range(31)]
        tasks = await queue_for(scheduler, *flood, ("victim", "v", "victim", False))
        model.release()
        await asyncio.gather(first, *tasks)
        order = [b[0] for b in model.batches[1:]]
        # before: FIFO, the victim's request was the 32nd; now it is taken second at the latest
        assert order.index("victim") <= 1, order
    finally:
        await scheduler.stop()


class CostlyTranscriber(FakeTranscriber):
    """Requests named 'slow...' take 60 ms of model time, the others 5 ms."""

    def transcribe_batch(self, requests: list[DecodeRequest]) -> list[DecodeResult]:
        if any(r.prompt.startswith("slow") for r in requests):
            time.sleep(0.055)
        return super().transcribe_batch(requests)


async def test_the_tenant_with_the_least_decode_time_goes_next():
    model = CostlyTranscriber()
    scheduler = await make(model, max_batch_size=1)
    try:
        first = await busy(scheduler, model)
        tasks = await queue_for(
            scheduler,
            ("slow1", "a1", "A", True),
            ("slow2", "a2", "A", True),
            ("slow3", "a3", "A", True),
            ("q1", "b1", "B", True),
            ("q2", "b2", "B", True),
            ("q3", "b3", "B", True),
        )
        model.release()
        await asyncio.gather(first, *tasks)
        order = [b[0] for b in model.batches[1:]]
        # A's first costly request spent more than B's three cheap ones: B goes on first
        assert order == ["slow1", "q1", "q2", "q3", "slow2", "slow3"], order
    finally:
        await scheduler.stop()


async def test_a_tenant_that_comes_back_banks_no_credit():
    model = FakeTranscriber()
    scheduler = await make(model, max_batch_size=1)
    try:
        for i in range(6):  # A alone for a while: its decode time grows to ~30 ms
            await scheduler.submit(req(f"a{i}"), "a", tenant="A")
        first = await busy(scheduler, model)
        bs = [(f"b{i}", f"b{i}", "B", True) for i in range(6)]
        tasks = await queue_for(scheduler, *bs, ("a-again", "a", "A", True))
        model.release()
        await asyncio.gather(first, *tasks)
        order = [b[0] for b in model.batches[7:]]
        # B joined at the time of the tenant served last, not at zero: it does not get A's
        # 30 ms of earlier (uncontested) decoding back before A's next turn
        assert order.index("a-again") <= 3, order
    finally:
        await scheduler.stop()


async def test_with_a_batch_share_of_one_batches_hold_one_tenant_while_several_are_active():
    model = FakeTranscriber()
    scheduler = await make(model, max_batch_size=8)
    scheduler.tenant_batch_share = 1
    try:
        first = await busy(scheduler, model)
        flood = [(f"f{i}", f"flood-{i}", "flooder", True) for i in range(6)]
        tasks = await queue_for(scheduler, *flood, ("victim", "v", "victim", False))
        model.release()
        await asyncio.gather(first, *tasks)
        batches = model.batches[1:]
        assert all(len(b) == 1 for b in batches), batches
        assert [b[0] for b in batches].index("victim") <= 1, batches
    finally:
        await scheduler.stop()


async def test_finals_go_before_partials_within_a_tenant_not_across_tenants():
    model = FakeTranscriber()
    scheduler = await make(model, max_batch_size=1)
    try:
        first = await busy(scheduler, model)
        tasks = await queue_for(
            scheduler,
            ("f-flood-1", "f1", "flooder", True),
            ("p-flood", "f0", "flooder", False),
            ("f-flood-2", "f2", "flooder", True),
            ("p-victim", "v", "victim", False),
        )
        model.release()
        await asyncio.gather(first, *tasks)
        order = [b[0] for b in model.batches[1:]]
        # the flood's finals go before its own partial; the victim's partial is not behind them
        assert order == ["f-flood-1", "p-victim", "f-flood-2", "p-flood"], order
    finally:
        await scheduler.stop()


async def test_a_tenant_fills_at_most_its_share_of_a_batch_while_others_are_active():
    model = FakeTranscriber()
    scheduler = await make(model, max_batch_size=8)
    try:
        first = await busy(scheduler, model)
        flood = [(f"f{i}", f"flood-{i}", "flooder", True) for i in range(12)]
        tasks = await queue_for(scheduler, ("victim", "v", "victim", True), *flood)
        model.release()
        results = await asyncio.gather(first, *tasks)
        batches = model.batches[1:]
        assert "victim" in batches[0]
        # two active tenants (plus the anonymous 'busy' one): no batch is the flood's eight
        assert all(sum(n.startswith("f") for n in b) <= 3 for b in batches), batches
        assert all(text(r) for r in results)  # every request is served in the end
    finally:
        await scheduler.stop()


async def test_one_tenant_alone_keeps_whole_batches():
    model = FakeTranscriber()
    scheduler = await make(model, max_batch_size=8)
    try:
        model.hold()
        first = asyncio.create_task(scheduler.submit(req("busy", True), "s", tenant="only"))
        while not model.entered.is_set():
            await asyncio.sleep(0.001)
        tasks = await queue_for(scheduler, *[(f"f{i}", f"s{i}", "only", True) for i in range(8)])
        model.release()
        await asyncio.gather(first, *tasks)
        assert [len(b) for b in model.batches] == [1, 8]
    finally:
        await scheduler.stop()


async def test_a_tenant_waiting_on_its_request_stays_active_past_the_window(monkeypatch):
    import streamscribe.engine.scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "FAIR_WINDOW_S", 0.01)
    model = FakeTranscriber()
    scheduler = await make(model, max_batch_size=8)
    scheduler.tenant_batch_share = 1
    try:
        first = await busy(scheduler, model)
        flood = [(f"f{i}", f"flood-{i}", "flooder", True) for i in range(4)]
        tasks = await queue_for(scheduler, *flood, ("victim", "v", "victim", True))
        await asyncio.sleep(0.05)  # every submit is now older than the window
        model.release()
        await asyncio.gather(first, *tasks)
        assert all(len(b) == 1 for b in model.batches[1:3]), model.batches
        assert [b[0] for b in model.batches[1:]].index("victim") <= 1, model.batches
    finally:
        await scheduler.stop()

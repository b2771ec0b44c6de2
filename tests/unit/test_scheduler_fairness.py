"""Fairness of the decode scheduler between tenants (API keys), with a fake model.

One key with many streams must not starve another key's one stream: the scheduler goes
round-robin over tenants (each turn the tenant's most urgent request: finals before partials
within a tenant), and while several tenants are active none fills more than its share of a
batch.
"""

from __future__ import annotations

import asyncio

from test_scheduler import FakeTranscriber, busy, make, req, text

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


async def test_round_robin_over_tenants_within_a_class():
    model = FakeTranscriber()
    scheduler = await make(model, max_batch_size=1)
    try:
        first = await busy(scheduler, model)
        tasks = await queue_for(
            scheduler,
            ("a1", "a1", "A", True),
            ("a2", "a2", "A", True),
            ("a3", "a3", "A", True),
            ("b1", "b1", "B", True),
            ("b2", "b2", "B", True),
            ("c1", "c1", "C", True),
        )
        model.release()
        await asyncio.gather(first, *tasks)
        order = [b[0] for b in model.batches[1:]]
        assert order == ["a1", "b1", "c1", "a2", "b2", "a3"], order
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

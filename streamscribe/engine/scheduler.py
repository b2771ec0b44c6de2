"""The one owner of the model: a shared decode queue with priorities and micro-batching.

Every session submits `DecodeRequest`s here; nothing else calls the model. Finals go first, then
the decodes latency waits on (a turn's first partial, the decode at the end of speech), then
routine partials; a newer partial of a session replaces its older one still queued (the older
caller gets `None`); requests of different sessions are decoded together in one batch. Model
calls run in a worker thread so the event loop keeps serving sockets. `workers` > 1 runs several
batches at once (a GPU with spare memory, or several CPU model replicas).

Held in real time: a request of a session whose oldest uncovered speech is `PROMOTE_BEHIND_S`
old goes right after the finals, before the urgent class, the most-behind session first.
Without it, at 12 streams on 2 cores, a session's routine partial was passed for 2.5 s by other
sessions' end-of-speech decodes and first partials that kept arriving, and the session fell
3.8 s behind. The promotion is by how far behind the session is, not by time in the queue (an
aging rule by queue wait, tried in session 11, made most partials urgent under load and tripled
first-partial latency), so it only moves the few requests about to miss the bound.

Fair between tenants (the server passes the API key): the next batch goes to the tenant that
has had the least decode time so far (fair queuing by time: a tenant that starts, or comes back
with nothing queued, joins at the time of the tenant served last, so being idle banks nothing),
and within a tenant by priority
as above. So a key with 31 streams, or with costly long-window finals, gets the same share of
the model's time as a key with one stream, and one key's finals cannot hold back another key's
partials. While several tenants are active (submitted within the last `FAIR_WINDOW_S`):
with `tenant_batch_share` N > 0 (the server's default, 1, for a CPU, where a batch costs about
the sum of its requests) a batch holds N requests of one tenant only, so another tenant waits
for at most one such batch and never pays for a greedy tenant's requests inside its own; with 0
(a GPU, where batching is nearly free) batches mix tenants, each at most an even share. With
one tenant it is the old order: by priority, FIFO within a class, whole batches.

Bound late: a request may come with a `refresh` callback that the scheduler calls as the request
starts decoding. A session's routine partial uses it to take the audio that arrived while it
waited, so the queue's wait (0.4 s on average at 12 streams on 2 cores, 1.4 s at the peak) no
longer ages what the partial hears: the lag is the time between a session's decodes, not that
plus the wait.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from streamscribe.engine.decoding import DecodeRequest, DecodeResult, Transcriber

log = logging.getLogger(__name__)

FAIR_WINDOW_S = 30.0  # a tenant that submitted within this long is active (shares batches)
# a request of a session this far behind (its oldest uncovered speech this old) goes before
# every non-final one of a session less behind
PROMOTE_BEHIND_S = 2.0


@dataclass
class _Item:
    """A queued request; the queue sorts by `order(now)` (equal only to itself: `seq`)."""

    priority: int
    seq: int
    key: str = field(compare=False)
    request: DecodeRequest = field(compare=False, repr=False)
    future: asyncio.Future = field(compare=False, repr=False)
    queued_at: float = field(compare=False, default=0.0)
    tenant: str = field(compare=False, default="")
    kind: str = field(compare=False, default="")
    # when the submitting session's oldest speech no hypothesis covers was heard (perf_counter)
    behind_since: float | None = field(compare=False, default=None)
    # called as the request starts decoding: the request as it should be decoded now (a
    # partial takes the audio that arrived while it waited in the queue)
    refresh: Callable[[], DecodeRequest] | None = field(compare=False, default=None, repr=False)

    def order(self, now: float) -> tuple[int, float, int]:
        """Queue order at `now`: finals; then the requests of sessions `PROMOTE_BEHIND_S` behind,
        most behind first; then urgent, then routine requests, each in arrival order."""
        if self.priority > 0 and self.behind(now):
            assert self.behind_since is not None
            return 1, self.behind_since, self.seq
        return (0 if self.priority == 0 else self.priority + 1), 0.0, self.seq

    def behind(self, now: float) -> bool:
        return self.behind_since is not None and now - self.behind_since >= PROMOTE_BEHIND_S


@dataclass
class SchedulerStats:
    batches: int = 0
    requests: int = 0
    superseded: int = 0
    failed: int = 0
    promoted: int = 0  # non-final requests served before their class: their session fell behind
    queue_delays_ms: deque = field(default_factory=lambda: deque(maxlen=200))
    decode_ms: deque = field(default_factory=lambda: deque(maxlen=200))
    batch_sizes: deque = field(default_factory=lambda: deque(maxlen=200))
    # per kind of decode the caller named (a session's "partial", "eager", "final", ...):
    # [decodes, model seconds, queue seconds], so an operator sees what the model's time went to
    kinds: dict[str, list[float]] = field(default_factory=dict)

    def count_kind(self, kind: str, model_s: float, queued_s: float) -> None:
        entry = self.kinds.setdefault(kind or "other", [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += model_s
        entry[2] += queued_s

    def kinds_summary(self) -> dict[str, dict[str, float]]:
        """{kind: {"decodes", "model_s", "mean_model_ms", "mean_queue_ms"}} since start."""
        return {
            kind: {
                "decodes": int(n),
                "model_s": round(model_s, 1),
                "mean_model_ms": round(1000 * model_s / n, 1),
                "mean_queue_ms": round(1000 * queued_s / n, 1),
            }
            for kind, (n, model_s, queued_s) in sorted(self.kinds.items())
            if n
        }

    def recent_queue_delay_ms(self, window_s: float = 10.0) -> float:
        """Mean queue delay of the decodes started in the last `window_s` seconds."""
        since = time.perf_counter() - window_s
        d = [ms for at, ms in self.queue_delays_ms if at >= since]
        return sum(d) / len(d) if d else 0.0


class DecodeScheduler:
    def __init__(self, transcriber: Transcriber, max_batch_size: int = 8, workers: int = 1):
        self.transcriber = transcriber
        self.max_batch_size = max(1, max_batch_size)
        self.workers = max(1, workers)
        self._queue: list[_Item] = []
        self._in_flight: list[_Item] = []
        self._wakeup: asyncio.Event | None = None
        self._seq = itertools.count()
        self._tasks: list[asyncio.Task] = []
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="decode")
        self.stats = SchedulerStats()
        self.on_batch: Callable[[int, float], None] | None = None  # (size, seconds) observer
        self.busy = 0
        self._served = itertools.count()
        self._last_served: dict[str, int] = {}  # tenant -> when it was last given a slot
        self._last_seen: dict[str, float] = {}  # tenant -> when it last submitted
        self._spent: dict[str, float] = {}  # tenant -> decode seconds charged to it
        self._vtime = 0.0  # the decode time of the tenant served last: where a returner joins
        # while several tenants are active, the most requests of one tenant in a batch
        # (0: an even share of max_batch_size); the server sets it from its settings
        self.tenant_batch_share = 0

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self) -> None:
        """Stop the workers; every caller still waiting gets CancelledError, none waits forever."""
        waiting = [*self._queue, *self._in_flight]
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for item in waiting:
            if not item.future.done():
                item.future.cancel()
        self._queue.clear()
        self._in_flight.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(
        self,
        request: DecodeRequest,
        key: str,
        tenant: str | None = None,
        kind: str = "",
        behind_ms: int = 0,
        refresh: Callable[[], DecodeRequest] | None = None,
    ) -> DecodeResult | None:
        """Decode `request`; None if a newer partial of the same `key` replaced it.

        `tenant` (the API key behind the session) is what fairness is between; requests without
        one share the anonymous tenant. `kind` only labels the decode in `stats.kinds`.
        `behind_ms`: how long ago the session heard the oldest speech no hypothesis covers yet
        (its lag); a non-final request goes before the urgent class once that reaches
        `PROMOTE_BEHIND_S`. `refresh`, if given, is called (on the event loop) when the request
        is taken for decoding, and what it returns is decoded instead: a request bound late, so
        its time in the queue does not age the audio it hears."""
        if not self._tasks:
            await self.start()
        loop = asyncio.get_running_loop()
        if not request.final:
            for item in self._queue:
                if item.key == key and not item.request.final and not item.future.done():
                    item.future.set_result(None)
                    self.stats.superseded += 1
            self._queue = [i for i in self._queue if not i.future.done()]
        item = _Item(
            priority=0 if request.final else max(1, request.urgency),
            seq=next(self._seq),
            key=key,
            tenant=tenant or "",
            request=request,
            future=loop.create_future(),
            queued_at=time.perf_counter(),
            kind=kind,
            refresh=refresh,
        )
        if behind_ms > 0:
            item.behind_since = item.queued_at - behind_ms / 1000
        if not self._backlogged(item.tenant):  # (re)joins at the current time: banks no credit
            self._spent[item.tenant] = max(self._spent.get(item.tenant, 0.0), self._vtime)
        self._queue.append(item)
        self._last_seen[item.tenant] = item.queued_at
        assert self._wakeup is not None
        self._wakeup.set()
        return await item.future

    def withdraw(self, key: str) -> bool:
        """Take back `key`'s partial that is still queued (not yet decoding): its caller gets
        None, as when a newer partial supersedes it. True if there was one. A session whose
        speaker just paused uses it so its end-of-speech decode does not wait behind its own
        partial that is about to be stale."""
        for item in self._queue:
            if item.key == key and not item.request.final and not item.future.done():
                item.future.set_result(None)
                self.stats.superseded += 1
                self._queue = [i for i in self._queue if i is not item]
                return True
        return False

    def _backlogged(self, tenant: str) -> bool:
        """Whether the tenant has a request queued or being decoded."""
        return any(
            i.tenant == tenant and not i.future.done() for i in (*self._queue, *self._in_flight)
        )

    def active_tenants(self, now: float | None = None) -> int:
        """Tenants with a request queued or being decoded, or that submitted within the last
        `FAIR_WINDOW_S` (at least 1): a tenant waiting long on its request stays active."""
        since = (time.perf_counter() if now is None else now) - FAIR_WINDOW_S
        waiting = {i.tenant for i in (*self._queue, *self._in_flight) if not i.future.done()}
        stale = [t for t, at in self._last_seen.items() if at < since and t not in waiting]
        for t in stale:  # forget tenants gone quiet (bounded memory)
            del self._last_seen[t]
            self._last_served.pop(t, None)
            self._spent.pop(t, None)
        return max(1, len(set(self._last_seen) | waiting))

    def _take_batch(self) -> list[_Item]:
        """The tenants by decode time had (least first); each tenant's requests most urgent
        first. Several tenants active: one tenant's `tenant_batch_share` requests, or (share 0)
        round-robin over tenants, each at most an even share; one tenant: a whole batch."""
        self._queue = [i for i in self._queue if not i.future.done()]
        now = time.perf_counter()
        self._queue.sort(key=lambda i: i.order(now))
        lanes: dict[str, deque[_Item]] = {}
        for item in self._queue:  # sorted: each lane is its tenant's requests, most urgent first
            lanes.setdefault(item.tenant, deque()).append(item)
        order = sorted(
            lanes,
            key=lambda t: (self._spent.get(t, 0.0), self._last_served.get(t, -1), lanes[t][0].seq),
        )
        if order:
            self._vtime = max(self._vtime, self._spent.get(order[0], 0.0))
        active = self.active_tenants()
        if active > 1 and self.tenant_batch_share > 0:
            order, share = order[:1], min(self.tenant_batch_share, self.max_batch_size)
        else:
            share = math.ceil(self.max_batch_size / active)
        taken: dict[str, int] = defaultdict(int)
        batch: list[_Item] = []
        progressed = True
        while progressed and len(batch) < self.max_batch_size:
            progressed = False
            for tenant in order:
                lane = lanes[tenant]
                if not lane or taken[tenant] >= share or len(batch) >= self.max_batch_size:
                    continue
                batch.append(lane.popleft())
                taken[tenant] += 1
                self._last_served[tenant] = next(self._served)
                progressed = True
        chosen = set(map(id, batch))
        self._queue = [i for i in self._queue if id(i) not in chosen]
        batch.sort(key=lambda i: i.order(now))  # finals first within the batch, as before
        self.stats.promoted += sum(i.order(now)[0] == 1 for i in batch)
        return batch

    def _charge(self, batch: list[_Item], seconds: float) -> None:
        """Charge a batch's model time to its tenants, by their share of its requests."""
        for item in batch:
            if item.tenant in self._spent:
                self._spent[item.tenant] += seconds / len(batch)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = self._take_batch()
            if not batch:
                continue
            now = time.perf_counter()
            for item in batch:
                self.stats.queue_delays_ms.append((now, (now - item.queued_at) * 1000))
                if item.refresh is not None:
                    try:
                        item.request = item.refresh()
                    except Exception:  # the request as it was queued is still a good one
                        log.exception("refreshing a queued %s request failed", item.kind)
            self.busy += 1
            self._in_flight.extend(batch)
            try:
                results = await loop.run_in_executor(
                    self._executor, self.transcriber.transcribe_batch, [i.request for i in batch]
                )
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"backend returned {len(results)} results for {len(batch)} requests"
                    )
            except Exception as exc:  # a model failure fails its requests, not the server
                log.exception("decode batch of %d failed", len(batch))
                self.stats.failed += len(batch)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            finally:
                self.busy -= 1
                self._in_flight = [i for i in self._in_flight if i not in batch]
                self._charge(batch, time.perf_counter() - now)
            took = time.perf_counter() - now
            self.stats.batches += 1
            self.stats.requests += len(batch)
            self.stats.batch_sizes.append(len(batch))
            self.stats.decode_ms.append(took * 1000)
            for item in batch:
                self.stats.count_kind(item.kind, took / len(batch), now - item.queued_at)
            if self.on_batch is not None:
                self.on_batch(len(batch), took)
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

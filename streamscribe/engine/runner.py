"""Drives the streaming sessions of one client connection against the shared scheduler.

The runner is the only async part of the engine: it feeds commands to the per-channel
`StreamingSession`s, keeps at most one decode per channel in flight through the scheduler, and
delivers every event, in order, to the caller's outbox (its own `events` queue if it has none).
`finish()` flushes every turn in flight, so Terminate never loses the last words.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable

from streamscribe.engine.enrichment import TurnEnricher
from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.engine.session import DecodeTicket, StreamingSession, TurnSettings
from streamscribe.events import (
    Audio,
    Command,
    Error,
    ErrorKind,
    Event,
    Flushed,
    ForceEndpoint,
    KeepAlive,
    Terminate,
    UpdateConfig,
)

log = logging.getLogger(__name__)


class SessionRunner:
    def __init__(
        self,
        scheduler: DecodeScheduler,
        settings: TurnSettings | None = None,
        channels: int = 1,
        key: str | None = None,
        enricher: TurnEnricher | None = None,
        deliver: Callable[[Event], None] | None = None,
        tenant: str | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.key = key or uuid.uuid4().hex
        self.tenant = tenant  # whose share of the model this stream's decodes use (an API key)
        self.sessions = [StreamingSession(c, settings) for c in range(channels)]
        # where events go, in order: the caller's own outbox, or this runner's queue
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._deliver = deliver or self.events.put_nowait
        # final turns being enriched (speakers, translation) hold the events behind them here
        self.enricher = enricher
        self._outbox: deque[Event | asyncio.Future] = deque()
        self._outbox_empty = asyncio.Event()
        self._outbox_empty.set()
        self._tasks: dict[int, asyncio.Task] = {}
        self._submitted: dict[int, float] = {}  # channel -> when its decode in flight was sent
        self._idle = asyncio.Event()
        self._idle.set()
        self.failed: BaseException | None = None
        # ForceEndpoint markers not yet acknowledged: (marker, channel, channels it waits on)
        self._markers: list[tuple[str, int | None, list[StreamingSession]]] = []
        # observer of each decode's round trip: (kind, seconds); the server feeds its metrics
        self.on_decode: Callable[[str, float], None] | None = None

    # ------------------------------------------------------------------ commands
    async def handle(self, command: Command) -> None:
        if isinstance(command, Audio):
            session = self.sessions[command.channel]
            if self.enricher is not None:
                self.enricher.feed(command.channel, command.samples)
            self._emit(session.feed(command.samples))
            self._pump(session)
        elif isinstance(command, ForceEndpoint):
            targets = self._targets(command.channel)
            for s in targets:
                self._emit(s.force_endpoint(by_client=True))
                self._pump(s)
            if command.marker is not None:
                self._markers.append((command.marker, command.channel, targets))
                self._acknowledge_markers()
        elif isinstance(command, UpdateConfig):
            for s in self.sessions:
                s.update_settings(command.changes)
        elif isinstance(command, Terminate):
            await self.finish()
        elif isinstance(command, KeepAlive):
            pass

    def _targets(self, channel: int | None) -> list[StreamingSession]:
        return self.sessions if channel is None else [self.sessions[channel]]

    def emit(self, item: object) -> None:
        """Deliver an item from outside the engine in order, behind every event emitted before
        it (a final turn still being enriched holds it back): a dialect's own reply to the
        message just received, the audio heard so far. The runner never looks inside it."""
        self._emit([item])  # type: ignore[list-item]

    def _emit(self, events: list[Event]) -> None:
        for e in events:
            if self.enricher is not None and self.enricher.wants(e):
                future = asyncio.ensure_future(self.enricher.enrich(e))  # type: ignore[arg-type]
                future.add_done_callback(lambda _f: self._release())
                self._outbox.append(future)
            else:
                self._outbox.append(e)
        self._release()

    def _release(self) -> None:
        """Move events to the queue in order; an enrichment not yet done holds those behind it."""
        while self._outbox:
            head = self._outbox[0]
            if isinstance(head, asyncio.Future):
                if not head.done():
                    self._outbox_empty.clear()
                    return
                self._outbox.popleft()
                if head.cancelled() or head.exception() is not None:
                    log.error("a final turn's enrichment was lost: %r", head)
                    continue
                self._deliver(head.result())
            else:
                self._deliver(self._outbox.popleft())
        self._outbox_empty.set()

    # ------------------------------------------------------------------ decoding
    def _pump(self, session: StreamingSession) -> None:
        if self.failed is not None:
            return
        if session.channel in self._tasks:
            if session.wants_sooner():  # the queued partial gives way to the end-of-speech decode
                self.scheduler.withdraw(self._decode_key(session))
            return
        ticket = session.next_request()
        if ticket is None:
            self._update_idle()
            return
        self._idle.clear()
        self._tasks[session.channel] = asyncio.create_task(self._decode(session, ticket))

    async def _decode(self, session: StreamingSession, ticket: DecodeTicket) -> None:
        t0 = self._submitted[session.channel] = time.perf_counter()
        try:
            result = await self.scheduler.submit(
                ticket.request,
                self._decode_key(session),
                tenant=self.tenant,
                kind=ticket.kind,
                behind_ms=session.lag_ms,
                refresh=lambda: session.refresh(ticket),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed = exc
            self._tasks.pop(session.channel, None)
            session.fail()
            self._emit([Error(ErrorKind.INTERNAL, "the speech model failed; session ended")])
            self._idle.set()
            return
        self._tasks.pop(session.channel, None)
        elapsed = time.perf_counter() - t0
        session.note_round_trip(elapsed * 1000, result.decode_ms if result is not None else 0.0)
        if self.on_decode is not None:
            self.on_decode(ticket.kind, elapsed)
        if result is None:  # superseded by a newer request
            session.release(ticket)
        else:
            self._emit(session.apply(ticket, result))
            self._acknowledge_markers()
        self._pump(session)

    def _decode_key(self, session: StreamingSession) -> str:
        return f"{self.key}:{session.channel}"

    def _acknowledge_markers(self) -> None:
        """Emit `Flushed` for each marker whose forced turns have all been emitted as final.

        Markers are acknowledged in the order they came; a session is done with a force once it
        is no longer `ending` (its final turn was emitted, or there was no turn to end)."""
        while self._markers:
            marker, channel, targets = self._markers[0]
            if any(s.ending for s in targets):
                return
            self._markers.pop(0)
            self._emit([Flushed(marker, channel)])

    def _update_idle(self) -> None:
        if not self._tasks and all(s.idle for s in self.sessions):
            self._idle.set()

    async def finish(self) -> None:
        """End every turn in flight and wait until its final result has been emitted."""
        for s in self.sessions:
            self._emit(s.force_endpoint())
            self._pump(s)
        while self.failed is None:
            if not self._tasks and all(s.idle for s in self.sessions):
                break
            self._idle.clear()
            await self._idle.wait()
        await self._outbox_empty.wait()

    async def cancel(self) -> None:
        for t in list(self._tasks.values()):
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    @property
    def lag_ms(self) -> int:
        return max((s.lag_ms for s in self.sessions), default=0)

    def most_behind(self) -> dict | None:
        """`lag_detail` of this stream's most-behind channel, with how long the decode it waits
        on has been out (None with no channel behind)."""
        session = max(self.sessions, key=lambda s: s.lag_ms, default=None)
        if session is None or session.lag_ms == 0:
            return None
        detail = session.lag_detail()
        if session.channel in self._tasks and session.channel in self._submitted:
            waited = time.perf_counter() - self._submitted[session.channel]
            detail["in_flight_for_ms"] = round(waited * 1000)
        return detail

    @property
    def backlog_ms(self) -> int:
        return max((s.backlog_ms for s in self.sessions), default=0)

    @property
    def audio_ms(self) -> int:
        return max((s.audio_ms for s in self.sessions), default=0)

"""What one server process holds: the model, the scheduler, the live sessions, the store.

Built once in the app's lifespan and shared by every route; sessions register here so that
health, readiness and metrics can see load and lag without reaching into any route.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from streamscribe.config import Settings
from streamscribe.engine.decoding import Transcriber
from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.engine.schedulers import SchedulerRegistry
from streamscribe.errors import ServerRefusal
from streamscribe.events import ErrorKind
from streamscribe.server.metrics import Metrics
from streamscribe.store import Store

if TYPE_CHECKING:
    from streamscribe.engine.runner import SessionRunner


@dataclass
class LiveSession:
    id: str
    protocol: str
    runner: SessionRunner
    key_id: str | None = None
    started: float = field(default_factory=time.time)
    ending: bool = False  # finished: its Termination is on the way
    # a client socket's session (stream/loop.py), as opposed to a call's participant: only these
    # are metered while they stream and may be ended to make room
    socket: bool = False
    last_message: float = field(default_factory=time.monotonic)
    heard_audio: bool = False
    metered: bool = False  # its audio is in the store's usage (and in `usage_today`)
    evicted: ServerRefusal | None = None  # ended to make room: the loop ends it with this

    @property
    def holds_a_slot(self) -> bool:
        return not self.ending and self.evicted is None


@dataclass
class ServerState:
    settings: Settings
    transcriber: Transcriber
    scheduler: DecodeScheduler
    store: Store
    sessions: dict[str, LiveSession] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    sessions_total: int = 0
    draining: bool = False  # shutting down: no new sessions, open ones finish
    metrics: Metrics = field(default_factory=Metrics)
    max_lag_seen_ms: int = 0
    models: SchedulerRegistry | None = None  # every model in use; `scheduler` is the default's
    # audio seconds metered today per key, as last read from the store plus what ended since
    usage_today: dict[str, tuple[date, float]] = field(default_factory=dict)
    # live calls' audio so far (session id -> key id, seconds on the call clock), metered like
    # a socket session's until the call's books close
    call_audio: dict[str, tuple[str | None, Callable[[], float]]] = field(default_factory=dict)

    async def scheduler_for(self, model: str | None) -> DecodeScheduler:
        if self.models is None:
            return self.scheduler
        return await self.models.scheduler(model)

    @property
    def at_capacity(self) -> bool:
        """No room for another session: the session cap, or decodes already queue too long."""
        return self.full or self.queue_too_long

    @property
    def full(self) -> bool:
        return sum(s.holds_a_slot for s in self.sessions.values()) >= self.settings.max_sessions

    @property
    def queue_too_long(self) -> bool:
        delay = self.scheduler.stats.recent_queue_delay_ms()
        return bool(self.sessions) and delay > self.settings.max_queue_delay_ms

    # ------------------------------------------------------------------ fair shares (issue 18)
    def live_of(self, key_id: str | None) -> int:
        """Sessions of this key (None: the anonymous sessions) that hold a slot."""
        return sum(s.key_id == key_id and s.holds_a_slot for s in self.sessions.values())

    def holds_fair_share(self, key_id: str | None) -> bool:
        """Whether this key already holds its share of the live sessions (the sessions divided
        evenly among the keys that have one, this key counted): a key below it is admitted even
        while decodes queue long, since the scheduler gives it its turn."""
        live = [s.key_id for s in self.sessions.values() if s.holds_a_slot]
        keys = {*live, key_id}
        return live.count(key_id) >= math.ceil(len(live) / len(keys))

    def others_live(self, key_id: str | None) -> bool:
        """Whether a session of another key is live (then streams are paced to share)."""
        return any(s.key_id != key_id and s.holds_a_slot for s in self.sessions.values())

    def evict_idle(self, quiet_s: float, reason: str) -> LiveSession | None:
        """End the socket session quiet the longest that never sent audio, if it has been
        quiet at least `quiet_s`; it closes with the dialect's idle timeout. None if none."""
        if quiet_s <= 0:
            return None
        now = time.monotonic()
        idle = [
            s
            for s in self.sessions.values()
            if s.socket and s.holds_a_slot and not s.heard_audio and now - s.last_message >= quiet_s
        ]
        if not idle:
            return None
        victim = min(idle, key=lambda s: s.last_message)
        victim.evicted = ServerRefusal(ErrorKind.TIMEOUT, reason)
        return victim

    def _today(self) -> date:
        now = getattr(self.store, "now", None)
        return (now() if callable(now) else datetime.now(UTC)).astimezone(UTC).date()

    def metered_today(self, key_id: str) -> float:
        """Audio seconds of this key today: the store's (as last read) and its live sessions'."""
        today = self._today()
        day, stored = self.usage_today.get(key_id, (today, 0.0))
        base = stored if day == today else 0.0
        live_ms = sum(
            s.runner.audio_ms
            for s in self.sessions.values()
            if s.key_id == key_id and s.socket and not s.metered
        )
        calls_s = sum(seconds() for key, seconds in self.call_audio.values() if key == key_id)
        return base + live_ms / 1000 + calls_s

    def note_usage(self, key_id: str, seconds: float, *, stored_total: bool = False) -> None:
        """The store's total for today (`stored_total`), or audio just added to it."""
        today = self._today()
        day, base = self.usage_today.get(key_id, (today, 0.0))
        if stored_total or day != today:
            base = 0.0
        self.usage_today[key_id] = (today, base + seconds)

    async def decoder_problem(self) -> str | None:
        """Why the decoder cannot take new sessions (a remote pool down or starting), or None."""
        check = getattr(self.transcriber, "unhealthy_reason", None)
        return await asyncio.to_thread(check) if check is not None else None

    def summary(self) -> dict:
        stats = self.scheduler.stats
        lags = [s.runner.lag_ms for s in self.sessions.values()]
        behind = max(self.sessions.values(), key=lambda s: s.runner.lag_ms, default=None)
        backlogs = [s.runner.backlog_ms for s in self.sessions.values()]
        decode = sorted(stats.decode_ms)
        return {
            "sessions_active": len(self.sessions),
            "sessions_total": self.sessions_total,
            "session_lag_ms_max": max(lags, default=0),
            "session_lag_ms_max_seen": self.max_lag_seen_ms,
            # the most-behind session: its state, the decode it waits on, its cadence
            "session_most_behind": behind.runner.most_behind() if behind is not None else None,
            # audio not yet covered, pauses included (the lag's definition before session 9)
            "session_backlog_ms_max": max(backlogs, default=0),
            "decode_queue": self.scheduler.queued,
            "decode_queue_delay_ms_recent": round(stats.recent_queue_delay_ms(), 1),
            "decode_batches": stats.batches,
            "decode_requests": stats.requests,
            "decode_superseded": stats.superseded,
            "decode_promoted": stats.promoted,
            "decode_failed": stats.failed,
            "decode_ms_p50": round(decode[len(decode) // 2], 1) if decode else 0.0,
            "decode_kinds": stats.kinds_summary(),
            "batch_size_mean": round(sum(stats.batch_sizes) / len(stats.batch_sizes), 2)
            if stats.batch_sizes
            else 0.0,
            "uptime_s": round(time.time() - self.started, 1),
            "models_loaded": sorted(self.models.loaded) if self.models else [],
        }

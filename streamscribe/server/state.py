"""What one server process holds: the model, the scheduler, the live sessions, the store.

Built once in the app's lifespan and shared by every route; sessions register here so that
health, readiness and metrics can see load and lag without reaching into any route.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streamscribe.config import Settings
from streamscribe.engine.decoding import Transcriber
from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.engine.schedulers import SchedulerRegistry
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

    async def scheduler_for(self, model: str | None) -> DecodeScheduler:
        if self.models is None:
            return self.scheduler
        return await self.models.scheduler(model)

    @property
    def at_capacity(self) -> bool:
        """No room for another session: the session cap, or decodes already queue too long."""
        if len(self.sessions) >= self.settings.max_sessions:
            return True
        delay = self.scheduler.stats.recent_queue_delay_ms()
        return bool(self.sessions) and delay > self.settings.max_queue_delay_ms

    async def decoder_problem(self) -> str | None:
        """Why the decoder cannot take new sessions (a remote pool down or starting), or None."""
        check = getattr(self.transcriber, "unhealthy_reason", None)
        return await asyncio.to_thread(check) if check is not None else None

    def summary(self) -> dict:
        stats = self.scheduler.stats
        lags = [s.runner.lag_ms for s in self.sessions.values()]
        decode = sorted(stats.decode_ms)
        return {
            "sessions_active": len(self.sessions),
            "sessions_total": self.sessions_total,
            "session_lag_ms_max": max(lags, default=0),
            "session_lag_ms_max_seen": self.max_lag_seen_ms,
            "decode_queue": self.scheduler.queued,
            "decode_queue_delay_ms_recent": round(stats.recent_queue_delay_ms(), 1),
            "decode_batches": stats.batches,
            "decode_requests": stats.requests,
            "decode_superseded": stats.superseded,
            "decode_failed": stats.failed,
            "decode_ms_p50": round(decode[len(decode) // 2], 1) if decode else 0.0,
            "batch_size_mean": round(sum(stats.batch_sizes) / len(stats.batch_sizes), 2)
            if stats.batch_sizes
            else 0.0,
            "uptime_s": round(time.time() - self.started, 1),
            "models_loaded": sorted(self.models.loaded) if self.models else [],
        }

"""What every live stream gets from the server, written once for the session loop and for calls.

A live stream is one client socket's session (`stream/loop.py`) or one participant of a call
(`calls/media.py`). Either way it is opened in the books (a stored session, the metrics), may be
recorded, is registered while it runs (so health, draining, metrics and per-key stream limits
see it), decodes through a runner whose round trips feed the latency metrics, stops reading its
input while its decodes lag (back-pressure, instead of buffering without bound), writes each
final turn to the store the moment it is final, and is closed in the books (audio metered, end
reason counted). Whether a stream may start at all, and on which model, is `server/admission.py`.

Sharing with other keys (issue 18): each stream's decodes are its key's share of the scheduler
(the runner's tenant); while another key streams too, a stream sending faster than real time is
paced to `fair_stream_speed` once it is `fair_stream_burst_seconds` ahead (`Pacer`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from streamscribe.engine.enrichment import TurnEnricher
from streamscribe.engine.runner import SessionRunner
from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.engine.session import TurnSettings
from streamscribe.events import Event, SessionConfig, TurnUpdate
from streamscribe.server.auth import Principal
from streamscribe.server.state import LiveSession, ServerState
from streamscribe.store import TurnRecord

log = logging.getLogger(__name__)

BACKPRESSURE_POLL_S = 0.02
REAL_TIME_SLACK_MS = 1000.0  # a stream this far ahead of real time still counts as real time
PACE_SLICE_S = 0.25  # a paced stream re-checks whether it must stop this often


class Pacer:
    """A token bucket of audio: `burst_ms` ahead of real time at most, refilled at `speed`."""

    def __init__(self, speed: float, burst_ms: float) -> None:
        self.speed = speed
        self.burst_ms = burst_ms
        self.tokens = burst_ms
        self.at = time.monotonic()

    def delay_s(self, audio_ms: float, charge: bool = True) -> float:
        """Seconds to wait before `audio_ms` more audio is within the pace (0: none); only
        charged when `charge` (the stream shares the server with another key)."""
        now = time.monotonic()
        self.tokens = min(self.burst_ms, self.tokens + (now - self.at) * 1000 * self.speed)
        self.at = now
        if not charge or self.speed <= 0:
            return 0.0
        self.tokens -= audio_ms
        return max(0.0, -self.tokens) / 1000 / self.speed


class StreamHost:
    """The server's services for live streams (one per app; cheap to make)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    # ------------------------------------------------------------------ the engine side
    def turn_settings(self, config: SessionConfig) -> TurnSettings:
        s = self.state.settings
        base = TurnSettings(
            partial_interval_ms=s.partial_interval_ms,
            final_beam_size=s.final_beam_size,
            vad_threshold=s.vad_threshold,
        )
        return base.updated(dict(config.turn))

    def runner(
        self,
        scheduler: DecodeScheduler,
        config: SessionConfig,
        key: str,
        *,
        channels: int = 1,
        speakers: list | None = None,
        deliver: Callable[[Event], None] | None = None,
        tenant: str | None = None,
    ) -> SessionRunner:
        """A runner for one stream: its turn settings, its enrichment (translation, speakers),
        its decode round trips reported to the latency metrics."""
        settings = self.turn_settings(config)
        enricher = None
        if settings.translate or speakers:
            enricher = TurnEnricher(
                scheduler,
                key,
                channels,
                translate=settings.translate,
                speakers=speakers,
                beam_size=settings.final_beam_size,
            )
        runner = SessionRunner(
            scheduler,
            settings,
            channels=channels,
            key=key,
            enricher=enricher,
            deliver=deliver,
            tenant=tenant,
        )
        latency = self.state.metrics.latency
        runner.on_decode = lambda kind, s: latency.labels(kind).observe(s)
        return runner

    # ------------------------------------------------------------------ registry
    def register(
        self,
        live_id: str,
        protocol: str,
        runner: SessionRunner,
        key_id: str | None,
        *,
        socket: bool = False,
    ) -> LiveSession:
        live = self.state.sessions[live_id] = LiveSession(
            live_id, protocol, runner, key_id, socket=socket
        )
        return live

    def ending(self, live_id: str) -> None:
        """Its Termination is on the way: per-key limits no longer count it."""
        live = self.state.sessions.get(live_id)
        if live is not None:
            live.ending = True

    def unregister(self, live_id: str) -> None:
        self.state.sessions.pop(live_id, None)

    # ------------------------------------------------------------------ recording
    def recording_path(self, principal: Principal, session_id: str, asked: bool = True):
        """Where this session's recording goes, or None when the server, the key or the client
        does not want one."""
        wanted = self.state.settings.record_audio and asked
        if principal.key is not None:
            wanted = wanted and principal.key.record_audio
        if not wanted:
            return None
        folder = (self.state.settings.data_dir / "recordings").resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{session_id}.wav"

    # ------------------------------------------------------------------ back-pressure
    async def hold_back(
        self,
        lag_ms: Callable[[], int],
        failed: Callable[[], bool],
        ahead_ms: Callable[[], float] | None = None,
    ) -> None:
        """Wait while a stream's decodes lag more than `max_lag_ms` (the socket is not read
        meanwhile, so a sender faster than real time is slowed, not buffered).

        With `ahead_ms` (how far the stream's audio is ahead of the wall clock since its first
        sample), a stream no more than `REAL_TIME_SLACK_MS` ahead is never held: holding a
        real-time sender cannot slow it, only leave its socket unread, and a socket unread for
        the keepalive timeout (uvicorn's 20 s ping) is cut with 1011 while others' load made
        its decodes slow (issue 18). Its audio is read and waits in the engine instead."""
        limit = self.state.settings.max_lag_ms
        while (lag := lag_ms()) > limit and not failed():
            if ahead_ms is not None and ahead_ms() <= REAL_TIME_SLACK_MS:
                break
            await asyncio.sleep(BACKPRESSURE_POLL_S)
        self.state.max_lag_seen_ms = max(self.state.max_lag_seen_ms, lag)

    def pacer(self) -> Pacer:
        s = self.state.settings
        return Pacer(s.fair_stream_speed, s.fair_stream_burst_seconds * 1000)

    async def pace(
        self, pacer: Pacer, key_id: str | None, audio_ms: float, stop: Callable[[], bool]
    ) -> None:
        """Hold a stream that runs ahead of its pace while another key streams too (its socket
        is not read meanwhile); `stop` ends the wait early (the session is ending)."""
        wait = pacer.delay_s(audio_ms, charge=self.state.others_live(key_id))
        until = time.monotonic() + wait
        while (left := until - time.monotonic()) > 0 and not stop():
            await asyncio.sleep(min(left, PACE_SLICE_S))

    # ------------------------------------------------------------------ the books
    async def begin(
        self,
        session_id: str,
        principal: Principal,
        protocol: str,
        params: dict[str, Any],
        recording: Path | None,
    ) -> None:
        """A stream starts: its stored session, and the session metrics."""
        self.state.sessions_total += 1
        metrics = self.state.metrics
        metrics.sessions_total.labels(protocol).inc()
        metrics.sessions_active.labels(protocol).inc()
        await _logged(
            self.state.store.start_session(
                session_id,
                principal.key_id,
                protocol,
                params,
                str(recording) if recording else None,
            )
        )

    async def end(self, session_id: str, principal: Principal, reason: str, audio_s: float) -> None:
        """A stream's books close: its stored session ends and its audio is metered."""
        await _logged(self.state.store.end_session(session_id, reason, audio_s))
        await _logged(self.state.store.add_usage(principal.key_id, audio_s))
        # from now on its audio is in the store's figure, not counted live (quota metering)
        if principal.key_id is not None:
            self.state.note_usage(principal.key_id, audio_s)
        live = self.state.sessions.get(session_id)
        if live is not None:
            live.metered = True

    def ended(self, protocol: str, reason: str, audio_s: float) -> None:
        """A stream is gone: the session metrics."""
        metrics = self.state.metrics
        metrics.sessions_active.labels(protocol).dec()
        metrics.session_ends.labels(reason).inc()
        metrics.audio_seconds.labels(protocol).inc(audio_s)

    async def store_turn(self, session_id: str, update: TurnUpdate) -> None:
        """A final turn, written the moment it is final (a formatted re-send replaces it)."""
        await _logged(self.state.store.add_turn(session_id, TurnRecord.from_update(update)))


async def _logged(call: Coroutine) -> None:
    """Storage trouble is logged, never allowed to end a live stream."""
    try:
        await call
    except Exception:
        log.exception("store write failed")

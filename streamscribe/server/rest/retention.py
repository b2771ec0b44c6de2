"""Retention: a periodic sweep deletes sessions, turns and recordings older than the limit."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streamscribe.server.state import ServerState

log = logging.getLogger(__name__)


async def sweep(state: ServerState, now: datetime | None = None) -> int:
    """Delete what is older than `retention_days`; return how many sessions went."""
    days = state.settings.retention_days
    if not days:
        return 0
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    removed = await state.store.purge_older_than(cutoff)
    for info in removed:
        if info.recording_path:
            Path(info.recording_path).unlink(missing_ok=True)
    if removed:
        log.info("retention: removed %d sessions older than %s", len(removed), cutoff.isoformat())
    return len(removed)


async def retention_loop(state: ServerState, interval_s: float = 3600.0) -> None:
    while True:
        try:
            await sweep(state)
        except Exception:
            log.exception("retention sweep failed")
        await asyncio.sleep(interval_s)

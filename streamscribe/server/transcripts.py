"""Batch transcripts kept as stored sessions, written one way for every route that makes them.

An OpenAI upload, a Deepgram pre-recorded request and a dashboard upload all end the same way:
the transcript becomes a session in the store (so History, the exports and the sessions API show
it like a streamed one), its audio is metered against the key, and the metrics count it. Live
streams write their turns as they become final instead (`stream/host.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from streamscribe.events import EndReason, SessionConfig, TurnUpdate
from streamscribe.server.auth import Principal
from streamscribe.server.state import ServerState
from streamscribe.store import TurnRecord

log = logging.getLogger(__name__)


def config_json(config: SessionConfig) -> dict[str, Any]:
    """A session's configuration as stored with it (tuples become lists)."""
    data = asdict(config)
    data["turn"] = turn_json(config.turn)
    return data


def turn_json(turn: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in turn.items()}


class BatchTranscript:
    """One batch transcript's stored session: opened, given its final turns, closed and metered.

    `open()` may come before the work (an upload is visible, and a crash leaves it 'abnormal');
    `close()` writes the turns and meters the audio; `abandon()` marks a failed one."""

    def __init__(
        self,
        state: ServerState,
        principal: Principal,
        session_id: str,
        protocol: str,
        params: dict[str, Any],
        recording: str | None = None,
    ) -> None:
        self.state = state
        self.principal = principal
        self.session_id = session_id
        self.protocol = protocol
        self.params = params
        self.recording = recording
        self.opened = False

    async def open(self) -> None:
        await self.state.store.start_session(
            self.session_id, self.principal.key_id, self.protocol, self.params, self.recording
        )
        self.opened = True

    async def close(self, turns: Iterable[TurnUpdate], audio_s: float) -> list[TurnRecord]:
        if not self.opened:
            await self.open()
        store = self.state.store
        records = [TurnRecord.from_update(t) for t in turns]
        for record in records:
            await store.add_turn(self.session_id, record)
        await store.end_session(self.session_id, str(EndReason.TERMINATED), audio_s)
        await store.add_usage(self.principal.key_id, audio_s)
        self.state.metrics.audio_seconds.labels(self.protocol).inc(audio_s)
        return records

    async def abandon(self, audio_s: float) -> None:
        if self.opened:
            await self.state.store.end_session(self.session_id, str(EndReason.ERROR), audio_s)


async def store_transcript(
    state: ServerState,
    principal: Principal,
    session_id: str,
    protocol: str,
    params: dict[str, Any],
    turns: Iterable[TurnUpdate],
    audio_s: float,
) -> None:
    """Keep a finished batch transcript. Storage trouble is logged: the caller still answers."""
    try:
        await BatchTranscript(state, principal, session_id, protocol, params).close(turns, audio_s)
    except Exception:
        log.exception("storing the %s transcript %s failed", protocol, session_id)

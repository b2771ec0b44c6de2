"""Read back what the store kept: sessions, turns, transcripts, recordings, usage.

A key sees only its own sessions; in open mode (no keys yet, loopback) everything is visible.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request

from streamscribe.server.auth import Principal, require_key
from streamscribe.store import SessionInfo

router = APIRouter(prefix="/v1")


def session_json(info: SessionInfo) -> dict:
    return {
        "id": info.id,
        "key_id": info.key_id,
        "protocol": info.protocol,
        "params": info.params,
        "started": info.started.isoformat(),
        "ended": info.ended.isoformat() if info.ended else None,
        "audio_seconds": round(info.audio_seconds, 3),
        "end_reason": info.end_reason,
        "turn_count": info.turn_count,
        "has_recording": bool(info.recording_path),
    }


@router.get("/sessions")
async def list_sessions(
    request: Request,
    since: datetime | None = Query(None, description="ISO date-time: started at or after"),
    until: datetime | None = Query(None, description="ISO date-time: started before"),
    q: str | None = Query(None, description="text that a turn of the session contains"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    principal: Principal = Depends(require_key),
) -> dict:
    store = request.app.state.streamscribe.store
    page, total = await store.list_sessions(
        key_id=principal.key_id, since=since, until=until, text=q, limit=limit, offset=offset
    )
    return {
        "sessions": [session_json(s) for s in page],
        "total": total,
        "limit": limit,
        "offset": offset,
    }

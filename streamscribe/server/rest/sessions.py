"""Read back what the store kept: sessions, turns, transcripts, recordings, usage.

A key sees only its own sessions; in open mode (no keys yet, loopback) everything is visible.
Another key's session answers 404 exactly like one that never existed, so ids cannot be probed.
Transcripts are rendered on request from the stored final turns by `streamscribe.formats` (the
same code as `streamscribe transcribe`); nothing here knows a file format. Every error is an
HTTPException whose detail says what to change.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse

from streamscribe.events import TurnUpdate, Word
from streamscribe.formats import FORMATS
from streamscribe.server.auth import Principal, require_key
from streamscribe.server.state import ServerState
from streamscribe.store import SessionDetail, SessionInfo, TurnRecord

router = APIRouter(prefix="/v1")

MEDIA_TYPES = {
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "json": "application/json",
}
MAX_OFFSET = 2**31 - 1  # far past any real history; the database's integers end at 2**63 - 1
NO_RECORDING = "no recording: the session was not recorded (opted out)"


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


def turn_json(turn: TurnRecord) -> dict:
    return {
        "channel": turn.channel,
        "turn_order": turn.turn_order,
        "text": turn.text,
        "start_ms": turn.start_ms,
        "end_ms": turn.end_ms,
        "speaker": turn.speaker,
        "language": turn.language,
        "language_confidence": turn.language_confidence,
        "translation": turn.translation,
        "words": turn.words,
    }


def turn_update(turn: TurnRecord) -> TurnUpdate:
    """A stored final turn as the event the formatters take: ended, formatted, all words final."""
    words = tuple(
        Word(
            text=str(w.get("text", "")),
            start_ms=int(w.get("start", 0)),
            end_ms=int(w.get("end", 0)),
            confidence=float(w.get("confidence", 0.0)),
            final=True,
            speaker=w.get("speaker"),
        )
        for w in turn.words
    )
    if not words and turn.text.strip():  # a turn stored without word times: keep its text
        words = (Word(turn.text, turn.start_ms, turn.end_ms, 1.0, True, turn.speaker),)
    return TurnUpdate(
        channel=turn.channel,
        turn_order=turn.turn_order,
        words=words,
        end_of_turn=True,
        formatted=True,
        end_of_turn_confidence=1.0,
        language=turn.language,
        language_confidence=turn.language_confidence,
        speaker=turn.speaker,
        translation=turn.translation,
    )


def _state(request: Request) -> ServerState:
    return request.app.state.streamscribe


def _moment(value: str | None, name: str) -> datetime | None:
    """`YYYY-MM-DD` (midnight UTC) or an ISO date-time (UTC when it names no zone)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(
            400,
            f"{name}={value!r} is not a date: use YYYY-MM-DD or an ISO date-time "
            "such as 2025-01-31T14:00:00Z",
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def _detail(request: Request, session_id: str, principal: Principal) -> SessionDetail:
    detail = await _state(request).store.get_session(session_id, principal.key_id)
    if detail is None:  # also when it is another key's: never say it exists
        raise HTTPException(
            404, f"no session {session_id!r} for this key: list yours with GET /v1/sessions"
        )
    return detail


@router.get("/sessions")
async def list_sessions(
    request: Request,
    since: str | None = Query(
        None, description="YYYY-MM-DD or ISO date-time (UTC unless given): started at or after"
    ),
    until: str | None = Query(
        None, description="YYYY-MM-DD or ISO date-time (UTC unless given): started before"
    ),
    q: str | None = Query(None, description="text that a turn of the session contains"),
    limit: int = Query(50, ge=1, le=500, description="sessions per page (1-500)"),
    offset: int = Query(0, ge=0, le=MAX_OFFSET, description=f"sessions to skip (0-{MAX_OFFSET})"),
    principal: Principal = Depends(require_key),
) -> dict:
    page, total = await _state(request).store.list_sessions(
        key_id=principal.key_id,
        since=_moment(since, "since"),
        until=_moment(until, "until"),
        text=q,
        limit=limit,
        offset=offset,
    )
    return {
        "sessions": [session_json(s) for s in page],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/sessions/{session_id}")
async def get_session(
    session_id: str, request: Request, principal: Principal = Depends(require_key)
) -> dict:
    detail = await _detail(request, session_id, principal)
    return {**session_json(detail.info), "turns": [turn_json(t) for t in detail.turns]}


@router.get("/sessions/{session_id}/transcript.{fmt}")
async def get_transcript(
    session_id: str, fmt: str, request: Request, principal: Principal = Depends(require_key)
) -> Response:
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise HTTPException(
            404,
            f"no transcript format {fmt!r}: ask for transcript.txt, transcript.srt, "
            "transcript.vtt or transcript.json",
        )
    detail = await _detail(request, session_id, principal)
    body = FORMATS[fmt]([turn_update(t) for t in detail.turns])
    return Response(
        content=body.encode("utf-8"),
        media_type=MEDIA_TYPES[fmt],
        headers={
            "Content-Disposition": f'inline; filename="{session_id}.{fmt}"',
        },
    )


@router.get("/sessions/{session_id}/recording.wav")
async def get_recording(
    session_id: str, request: Request, principal: Principal = Depends(require_key)
) -> FileResponse:
    detail = await _detail(request, session_id, principal)
    if not detail.info.recording_path:
        raise HTTPException(404, NO_RECORDING)
    if session_id in _state(request).sessions:  # still growing: its size is not known yet
        raise HTTPException(409, "the session is still live: fetch its recording once it has ended")
    path = Path(detail.info.recording_path)
    if not path.is_file():
        raise HTTPException(
            404,
            "no recording: the file is gone from the server's data directory "
            "(removed by retention or by hand); the transcript is still available",
        )
    return FileResponse(path, media_type="audio/wav", filename=f"{session_id}.wav")


@router.delete("/sessions/{session_id}", status_code=204)
async def delete_session(
    session_id: str, request: Request, principal: Principal = Depends(require_key)
) -> Response:
    state = _state(request)
    if session_id in state.sessions:
        await _detail(request, session_id, principal)  # 404 unless it is the caller's
        raise HTTPException(
            409, "the session is still live: end it (send Terminate) and delete it afterwards"
        )
    # an upload still being transcribed (rest/uploads.py keeps its jobs on the app) stops first,
    # so it neither writes into a deleted session nor fails with a traceback
    job = getattr(request.app.state, "upload_jobs", {}).get(session_id)
    stopped = False
    if job is not None and job.finished is None and job.key_id == principal.key_id:
        await job.stop_deleted()
        stopped = True
    info = await state.store.delete_session(session_id, principal.key_id)
    if info is None and stopped:
        return Response(status_code=204)  # stopped before its session was stored
    if info is None:
        raise HTTPException(
            404, f"no session {session_id!r} for this key: list yours with GET /v1/sessions"
        )
    if info.recording_path:
        Path(info.recording_path).unlink(missing_ok=True)
    return Response(status_code=204)


@router.get("/usage")
async def get_usage(
    request: Request,
    since: str | None = Query(None, description="YYYY-MM-DD (UTC): first day to include"),
    principal: Principal = Depends(require_key),
) -> dict:
    first: date | None = None
    if since:
        try:
            first = date.fromisoformat(since.strip())
        except ValueError:
            raise HTTPException(
                400, f"since={since!r} is not a date: use YYYY-MM-DD, e.g. since=2025-01-31"
            ) from None
    rows = await _state(request).store.usage(principal.key_id, first)
    days = [
        {
            "day": r.day.isoformat(),
            "key_id": r.key_id,
            "audio_seconds": round(r.audio_seconds, 3),
        }
        for r in rows
    ]
    return {
        "key_id": principal.key_id,
        "since": first.isoformat() if first else None,
        "usage": days,
        "total_audio_seconds": round(sum(r.audio_seconds for r in rows), 3),
    }

"""The admin API (`/v1/admin`, protected by STREAMSCRIBE_ADMIN_KEY): API keys."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from streamscribe.server.auth import require_admin
from streamscribe.store import KeyInfo

router = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin)])


class NewKey(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    max_streams: int | None = Field(None, ge=1)
    max_audio_hours_per_day: float | None = Field(None, gt=0)
    max_session_seconds: int | None = Field(None, ge=60)
    record_audio: bool = True


def key_json(key: KeyInfo) -> dict:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created": key.created.isoformat(),
        "revoked": key.revoked,
        "max_streams": key.max_streams,
        "max_audio_hours_per_day": key.max_audio_hours_per_day,
        "max_session_seconds": key.max_session_seconds,
        "record_audio": key.record_audio,
    }


@router.post("/keys", status_code=201)
async def create_key(body: NewKey, request: Request) -> dict:
    store = request.app.state.streamscribe.store
    try:
        key, secret = await store.create_key(
            body.name,
            max_streams=body.max_streams,
            max_audio_hours_per_day=body.max_audio_hours_per_day,
            max_session_seconds=body.max_session_seconds,
            record_audio=body.record_audio,
        )
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return {**key_json(key), "key": secret}

"""The admin API (`/v1/admin`, protected by STREAMSCRIBE_ADMIN_KEY): API keys.

The same three operations as `streamscribe keys create|list|revoke`, for operators who manage
a running server over HTTP. A key's secret is in the answer to its creation and nowhere else.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from streamscribe.server.auth import require_admin
from streamscribe.store import KeyInfo

router = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin)])


class NewKey(BaseModel):
    # printable names only: they are shown in terminals (`streamscribe keys list`) and logs
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")
    max_streams: int | None = Field(None, ge=1, le=100_000)
    max_audio_hours_per_day: float | None = Field(None, gt=0, le=1_000_000)
    max_session_seconds: int | None = Field(None, ge=60, le=10_000_000)
    record_audio: bool = True


def key_json(key: KeyInfo) -> dict:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created": key.created.isoformat(),
        "revoked": key.revoked,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
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
    return {
        **key_json(key),
        "key": secret,
        "warning": "the key is shown once and not stored: keep it now",
    }


@router.get("/keys")
async def list_keys(
    request: Request,
    include_revoked: bool = Query(True, description="also list revoked keys"),
) -> dict:
    store = request.app.state.streamscribe.store
    keys = await store.list_keys(include_revoked=include_revoked)
    return {"keys": [key_json(k) for k in keys]}


@router.delete("/keys/{id_or_name}")
async def revoke_key(id_or_name: str, request: Request) -> dict:
    """Revoke a key in use, by id or by name; answers the key as it now stands."""
    store = request.app.state.streamscribe.store
    live = [k for k in await store.list_keys() if id_or_name in (k.id, k.name)]
    if not live or not await store.revoke_key(id_or_name):
        raise HTTPException(
            404,
            f"no key in use with id or name {id_or_name!r}: see GET /v1/admin/keys "
            "(a revoked key cannot be revoked again)",
        )
    revoked = {k.id: k for k in await store.list_keys(include_revoked=True)}
    return key_json(revoked.get(live[0].id, live[0]))

"""Temporary tokens for browsers: `GET /v3/token` (AssemblyAI v3 rules; see shared/protocols)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from streamscribe.server.auth import Principal, require_key

router = APIRouter()


@router.get("/v3/token")
async def v3_token(
    request: Request,
    expires_in_seconds: int | None = Query(None, description="1-600: seconds to redeem it in"),
    max_session_duration_seconds: int = Query(10800, description="60-10800: session cap"),
    principal: Principal = Depends(require_key),
) -> dict:
    if expires_in_seconds is None or not 1 <= expires_in_seconds <= 600:
        raise HTTPException(400, "expires_in_seconds is required: an integer from 1 to 600")
    if not 60 <= max_session_duration_seconds <= 10800:
        raise HTTPException(400, "max_session_duration_seconds must be an integer from 60 to 10800")
    state = request.app.state.streamscribe
    if principal.key is None:  # open mode: any token opens a session, none is stored
        token = "tk_open_" + secrets.token_urlsafe(24)
    else:
        token = await state.store.create_token(
            principal.key.id, expires_in_seconds, max_session_duration_seconds
        )
    return {"token": token, "expires_in_seconds": expires_in_seconds}

"""Temporary tokens for browsers: `GET /v3/token` (AssemblyAI v3 rules; see shared/protocols).

A server-side caller with an API key mints a single-use token and hands it to a browser, which
opens one session with `?token=` (or, as the AssemblyAI SDK does, in the Authorization header).
The token must be redeemed within `expires_in_seconds` (1-600, required) and caps the session it
opens at `max_session_duration_seconds` (60-10800, default 10800). Redeeming lives in `auth`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from streamscribe.server.auth import TOKEN_MAX_SESSION_S, Principal, mint_token, require_key

router = APIRouter()

EXPIRES = (1, 600)
SESSION = (60, TOKEN_MAX_SESSION_S)


def _bounded(value: str | None, name: str, bounds: tuple[int, int], default: int | None) -> int:
    low, high = bounds
    rule = f"{name} must be an integer from {low} to {high}"
    if value is None or not value.strip():
        if default is None:
            raise HTTPException(400, f"{name} is required: an integer from {low} to {high}")
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise HTTPException(400, f"{rule}, got {value[:40]!r}") from None
    if not low <= number <= high:
        raise HTTPException(400, f"{rule}, got {number}")
    return number


@router.get("/v3/token")
async def v3_token(
    request: Request,
    expires_in_seconds: str | None = Query(
        None, description="1-600 (required): seconds within which the token must be used"
    ),
    max_session_duration_seconds: str | None = Query(
        None, description="60-10800 (default 10800): longest session the token may open"
    ),
    principal: Principal = Depends(require_key),
) -> dict:
    expires = _bounded(expires_in_seconds, "expires_in_seconds", EXPIRES, None)
    session_s = _bounded(
        max_session_duration_seconds, "max_session_duration_seconds", SESSION, SESSION[1]
    )
    token = await mint_token(request.app.state.streamscribe, principal, expires, session_s)
    return {"token": token, "expires_in_seconds": expires}

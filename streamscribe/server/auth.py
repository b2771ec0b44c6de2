"""Who is calling: API keys in the Authorization header, single-use temporary tokens, open mode.

Cloud clients send the raw key (`Authorization: <key>`, AssemblyAI) or a scheme (`Bearer`,
`Token`, Deepgram); browsers cannot set headers and pass a temporary token as `?token=`.
The AssemblyAI SDK sends a temporary token in the Authorization header too, so a header value
that is not a key is tried as a token. With no key at all on a loopback address the server runs
open (and says so); otherwise every request needs a credential.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import HTTPException, Request

from streamscribe.errors import PeerError
from streamscribe.events import ErrorKind
from streamscribe.server.state import ServerState
from streamscribe.store import KeyInfo

SCHEMES = ("bearer ", "token ")
TOKEN_MAX_SESSION_S = 10800  # the longest session a temporary token may open (all dialects)


@dataclass(frozen=True)
class Principal:
    """The caller of one request or session."""

    key: KeyInfo | None  # None: open mode
    max_session_seconds: int | None = None  # a temporary token's cap

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key else None


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def credential(header: str | None) -> str | None:
    if not header:
        return None
    value = header.strip()
    if value.lower().startswith(SCHEMES):
        value = value.split(" ", 1)[1].strip()
    return value or None


async def open_mode(state: ServerState) -> bool:
    """Serving without credentials: asked for, or no key exists yet on a loopback address."""
    if state.settings.insecure_no_auth:
        return True
    return is_loopback(state.settings.host) and await state.store.count_active_keys() == 0


async def mint_token(
    state: ServerState, principal: Principal, expires_s: int, session_s: int = TOKEN_MAX_SESSION_S
) -> str:
    """A single-use temporary token of the calling key, redeemable within `expires_s`, opening
    one session of at most `session_s`. Open mode: any token opens a session, none is stored.
    Raises ValueError when the key was revoked meanwhile."""
    if principal.key is None:
        return "tk_open_" + secrets.token_urlsafe(24)
    return await state.store.create_token(principal.key.id, expires_s, session_s)


async def _key(state: ServerState, key_id: str) -> KeyInfo | None:
    for key in await state.store.list_keys():
        if key.id == key_id:
            return key
    return None


async def authenticate_stream(
    state: ServerState,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    token_endpoint: str = "GET /v3/token",
) -> Principal:
    """Authenticate a WebSocket handshake; raise ProtocolError(AUTH) with a reason.

    `token_endpoint`: where the client's own dialect mints tokens, named in the refusal."""
    token = query.get("token") or None
    secret = credential(headers.get("authorization"))
    from_header = token is None and secret is not None
    if await open_mode(state):
        return Principal(None)
    if secret is not None:
        key = await state.store.authenticate(secret)
        if key is not None:
            return Principal(key)
        token = token or secret  # the AssemblyAI SDK sends temporary tokens in the header
    if token is not None:
        grant = await state.store.redeem_token(token)
        if grant is not None:
            key = await _key(state, grant.key_id)
            if key is not None:
                return Principal(key, grant.max_session_seconds)
        if from_header:
            raise PeerError(
                ErrorKind.AUTH,
                "Unauthorized Connection: invalid or revoked API key "
                "(or a used or expired temporary token)",
            )
        raise PeerError(
            ErrorKind.AUTH,
            "Unauthorized Connection: invalid, used or expired token "
            f"(mint a new one with {token_endpoint})",
        )
    if secret is not None:
        raise PeerError(ErrorKind.AUTH, "Unauthorized Connection: invalid or revoked API key")
    raise PeerError(
        ErrorKind.AUTH,
        "Unauthorized Connection: Missing Authorization header (send your API key, or ?token=)",
    )


async def require_key(request: Request) -> Principal:
    """FastAPI dependency for the REST API: the calling key (no tokens), or open mode."""
    state: ServerState = request.app.state.streamscribe
    if await open_mode(state):
        return Principal(None)
    secret = credential(request.headers.get("authorization"))
    if secret is None:
        raise HTTPException(401, "Missing Authorization header: send your API key")
    key = await state.store.authenticate(secret)
    if key is None:
        raise HTTPException(401, "Invalid or revoked API key")
    return Principal(key)


async def require_metrics_access(request: Request) -> None:
    """FastAPI dependency for /metrics and /v1/metrics: open unless `public_metrics` is off;
    then an API key or the admin key (what a Prometheus scraper sends as a bearer token)."""
    state: ServerState = request.app.state.streamscribe
    if state.settings.public_metrics:
        return
    given = credential(request.headers.get("authorization"))
    admin = state.settings.admin_key
    if given is not None and admin and hmac.compare_digest(given.encode(), admin.encode()):
        return
    await require_key(request)


async def require_admin(request: Request) -> None:
    """FastAPI dependency for /v1/admin: the admin key from STREAMSCRIBE_ADMIN_KEY."""
    state: ServerState = request.app.state.streamscribe
    expected = state.settings.admin_key
    if not expected:
        raise HTTPException(
            403, "The admin API is off: start the server with STREAMSCRIBE_ADMIN_KEY set"
        )
    given = credential(request.headers.get("authorization"))
    if given is None:
        raise HTTPException(
            401, "Missing Authorization header: send the admin key (STREAMSCRIBE_ADMIN_KEY)"
        )
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(403, "Wrong admin key: send the value of STREAMSCRIBE_ADMIN_KEY")

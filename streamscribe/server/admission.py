"""Whether a request may start, and with what: admission, limits, the model and the speakers.

Every kind of work asks the same questions before it starts: a live stream of any dialect, a
call's media, a file upload, an OpenAI or Deepgram batch request. Is the server draining or
full? Does the caller's key allow another stream, more audio today? Which model serves this
session's language (loaded on first use), and does it need the speaker encoder? Each answer that
is "no" is a `ProtocolError` whose reason names the limit or the fix; the caller's dialect turns
it into its own refusal. What a live stream needs while it runs is in `stream/host.py`.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, time, timedelta

from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.errors import ModelNotFoundError, PeerError, ServerRefusal
from streamscribe.events import ErrorKind, SessionConfig
from streamscribe.server.auth import Principal
from streamscribe.server.model_choice import choose_model
from streamscribe.server.state import ServerState


async def check_admission(state: ServerState, principal: Principal) -> None:
    """Refuse a new session the server or the key has no room for (reason names the limit).

    Fair between keys: a key holds at most its own `max_streams` (else the server's
    `max_streams_per_key`); when every slot is taken, the session quiet the longest that never
    sent audio is ended to make room (`evict_idle_after_seconds`) before anyone is refused; and a
    long decode queue refuses only keys that already hold their share of the live sessions."""
    if state.draining:
        raise ServerRefusal(ErrorKind.BUSY, "Server shutting down: reconnect to another server")
    key = principal.key
    if key is not None:
        cap = key.max_streams
        if cap is None and state.settings.max_streams_per_key > 0:
            cap = state.settings.max_streams_per_key
        if cap is not None and state.live_of(key.id) >= cap:
            where = "" if key.max_streams is not None else "; server max_streams_per_key"
            raise ServerRefusal(
                ErrorKind.LIMIT,
                f"Unauthorized Connection: Too many concurrent sessions "
                f"(key {key.name!r} allows {cap}{where})",
            )
        await check_quota(state, principal)
    if (
        state.full
        and state.evict_idle(
            state.settings.evict_idle_after_seconds,
            "Session ended to make room: no audio was sent; send audio within "
            f"{state.settings.evict_idle_after_seconds:g} s when the server is full",
        )
        is None
    ):
        raise ServerRefusal(
            ErrorKind.BUSY, "Server busy: at session capacity; try again shortly or another server"
        )
    if state.queue_too_long and state.holds_fair_share(principal.key_id):
        raise ServerRefusal(
            ErrorKind.BUSY,
            "Server busy: decodes queue too long; try again shortly or another server",
        )


async def check_quota(state: ServerState, principal: Principal) -> None:
    """Refuse when the key's audio today (stored, and its live sessions so far) is at its daily
    allowance; the stored figure is read afresh here (uploads meter there too)."""
    key = principal.key
    if key is None or key.max_audio_hours_per_day is None:
        return
    state.note_usage(key.id, await state.store.audio_seconds_today(key.id), stored_total=True)
    if refusal := quota_refusal(state, principal):
        raise refusal


def quota_refusal(
    state: ServerState, principal: Principal, more_s: float = 0.0, what: str = ""
) -> ServerRefusal | None:
    """A QUOTA refusal if `more_s` more audio would take the key past its daily allowance
    (shared by every live session of the key), else None. Metered as the audio streams. With
    `what` (e.g. "this file") the message says how much it needs and how much is left."""
    key = principal.key
    if key is None or key.max_audio_hours_per_day is None:
        return None
    allowed = key.max_audio_hours_per_day * 3600
    used = state.metered_today(key.id)
    if (used + more_s > allowed) if more_s else (used >= allowed):
        detail = ""
        if what:
            left = max(0.0, allowed - used)
            detail = f" and {what} needs {more_s / 60:.1f} min, {left / 60:.1f} min are left"
        hours = key.max_audio_hours_per_day
        return ServerRefusal(ErrorKind.QUOTA, quota_message(key.name, hours, detail))
    return None


def quota_message(name: str, hours: float, detail: str = "", now: datetime | None = None) -> str:
    """What every dialect says when a key's daily audio is spent: the limit, the key, when it
    resets and the fix, most important first (close reasons keep only 123 bytes)."""
    now = now or datetime.now(UTC)
    left = seconds_to_reset(now)
    hours_left, minutes_left = divmod(math.ceil(left / 60), 60)
    until = f"{hours_left} h {minutes_left} min" if hours_left else f"{minutes_left} min"
    return (
        f"Daily audio limit reached: key {name!r} allows {hours:g} h of audio a day{detail}; "
        f"it resets at 00:00 UTC (in {until}); for more today use a key with a larger allowance "
        "(streamscribe keys create NAME --max-audio-hours-per-day H)"
    )


def seconds_to_reset(now: datetime | None = None) -> int:
    """Seconds until the daily allowances reset (the next 00:00 UTC), at least 1."""
    now = now or datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=UTC)
    return max(1, math.ceil((midnight - now).total_seconds()))


def session_limit_s(state: ServerState, principal: Principal, config: SessionConfig) -> float:
    """The longest this session may last: the server's, the client's, the token's, the key's."""
    limits = [
        state.settings.max_session_seconds,
        config.max_session_s,
        principal.max_session_seconds,
    ]
    if principal.key is not None:
        limits.append(principal.key.max_session_seconds)
    return float(min(x for x in limits if x))


async def session_scheduler(state: ServerState, config: SessionConfig) -> DecodeScheduler:
    """The scheduler of the model this session needs (loaded on first use).

    Raises ProtocolError naming the fix when no served model fits the session."""
    name = choose_model(state.settings, config, state.transcriber.multilingual)
    try:
        scheduler = await state.scheduler_for(name)
    except ModelNotFoundError as exc:
        raise PeerError(ErrorKind.BAD_REQUEST, f"Model {name!r} unavailable: {exc}") from None
    scheduler.tenant_batch_share = state.settings.fair_batch_share  # fairness between keys
    return scheduler


async def session_speakers(state: ServerState, config: SessionConfig) -> list | None:
    """One speaker tracker per channel when the session asked for speaker labels.

    The speaker encoder loads here, at connect time, so a missing `speakers` extra is an error
    naming the fix before any audio is sent, not a silent session without labels."""
    if not config.speaker_labels:
        return None
    from streamscribe.errors import SpeakerModelUnavailableError
    from streamscribe.speakers import SessionSpeakers

    try:
        return [
            await asyncio.to_thread(
                SessionSpeakers, config.max_speakers, device=state.settings.device
            )
            for _ in range(config.audio.channels)
        ]
    except SpeakerModelUnavailableError as exc:
        raise PeerError(ErrorKind.BAD_REQUEST, str(exc)) from None

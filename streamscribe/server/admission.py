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

from streamscribe.engine.scheduler import DecodeScheduler
from streamscribe.errors import ModelNotFoundError, PeerError, ServerRefusal
from streamscribe.events import ErrorKind, SessionConfig
from streamscribe.server.auth import Principal
from streamscribe.server.model_choice import choose_model
from streamscribe.server.state import ServerState


async def check_admission(state: ServerState, principal: Principal) -> None:
    """Refuse a new session the server or the key has no room for (reason names the limit)."""
    if state.draining:
        raise ServerRefusal(ErrorKind.BUSY, "Server shutting down: reconnect to another server")
    if state.at_capacity:
        raise ServerRefusal(
            ErrorKind.BUSY, "Server busy: at session capacity; try again shortly or another server"
        )
    key = principal.key
    if key is None:
        return
    if key.max_streams is not None:
        live = sum(1 for s in state.sessions.values() if s.key_id == key.id and not s.ending)
        if live >= key.max_streams:
            raise ServerRefusal(
                ErrorKind.LIMIT,
                f"Unauthorized Connection: Too many concurrent sessions "
                f"(key {key.name!r} allows {key.max_streams})",
            )
    if key.max_audio_hours_per_day is not None:
        used = await state.store.audio_seconds_today(key.id)
        if used >= key.max_audio_hours_per_day * 3600:
            raise ServerRefusal(
                ErrorKind.LIMIT,
                f"Daily audio limit reached: key {key.name!r} allows "
                f"{key.max_audio_hours_per_day:g} h per day (UTC)",
            )


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
        return await state.scheduler_for(name)
    except ModelNotFoundError as exc:
        raise PeerError(ErrorKind.BAD_REQUEST, f"Model {name!r} unavailable: {exc}") from None


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

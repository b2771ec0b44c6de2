"""What the store hands out: small frozen dataclasses, never ORM rows or SQLAlchemy objects.

Callers (server routes, the CLI) work with these plain values, so nothing above the store needs
to know about sessions, transactions or dialects. Times are timezone-aware UTC datetimes;
word and turn timings are integer milliseconds from the start of the stream, as in `events`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from streamscribe.events import TurnUpdate

ABNORMAL = "abnormal"
"""End reason of a session that never ended cleanly (the server died while it was live)."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """An API key as the store describes it; the secret itself is never stored, only its hash."""

    id: str
    name: str
    prefix: str  # the secret's first characters, for telling keys apart in listings
    created: datetime
    revoked: bool
    max_streams: int | None
    max_audio_hours_per_day: float | None
    max_session_seconds: int | None
    record_audio: bool
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What redeeming a temporary token grants: a session on behalf of `key_id`."""

    key_id: str
    max_session_seconds: int


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """One final turn as stored. `words` are dicts {text, start, end, confidence[, speaker]}."""

    channel: int
    turn_order: int
    text: str
    words: list[dict[str, Any]]
    speaker: str | None
    language: str | None
    language_confidence: float | None
    start_ms: int
    end_ms: int
    translation: str | None = None  # English, for sessions opened with translate=true

    @classmethod
    def from_update(cls, update: TurnUpdate) -> TurnRecord:
        words: list[dict[str, Any]] = []
        for w in update.words:
            word: dict[str, Any] = {
                "text": w.text,
                "start": int(w.start_ms),
                "end": int(w.end_ms),
                "confidence": round(float(w.confidence), 4),
            }
            if w.speaker is not None:
                word["speaker"] = w.speaker
            words.append(word)
        return cls(
            channel=update.channel,
            turn_order=update.turn_order,
            text=update.text,
            words=words,
            speaker=update.speaker,
            language=update.language,
            language_confidence=update.language_confidence,
            start_ms=int(update.start_ms),
            end_ms=int(update.end_ms),
            translation=update.translation,
        )


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    key_id: str | None
    protocol: str
    params: dict[str, Any]
    started: datetime
    ended: datetime | None
    audio_seconds: float
    end_reason: str | None
    recording_path: str | None
    turn_count: int


@dataclass(frozen=True, slots=True)
class SessionDetail:
    info: SessionInfo
    turns: list[TurnRecord]


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Audio seconds metered for one key (None: unauthenticated sessions) on one UTC day."""

    key_id: str | None
    day: date
    audio_seconds: float


@dataclass(frozen=True, slots=True)
class UploadJobInfo:
    """An upload job as stored: it outlives the process that accepted it (see rest/uploads.py).

    `status`: queued | decoding | transcribing | done | error | deleted; `finished` is None until
    the job has ended, and `upload_path` names the saved upload until then."""

    id: str
    key_id: str | None
    filename: str
    params: dict[str, Any]
    status: str
    audio_seconds: float
    done_seconds: float
    error: str | None
    upload_path: str | None
    created: datetime
    finished: datetime | None


@dataclass(frozen=True, slots=True)
class CallJobInfo:
    """A call-transcription job as stored: enough to say, after a restart, that it ended."""

    key_id: str | None
    call_id: str
    status: str
    session_id: str | None
    request: dict[str, Any]
    result: dict[str, Any] | None
    created: datetime
    ended: datetime | None

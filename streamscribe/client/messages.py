"""What the v3 streaming server says, as typed Python objects, and how a session URL is built.

Why this exists: the SDK's I/O classes (`streaming.py`, `sync.py`) should not poke at JSON dicts.
This module holds the sans-I/O half of the client: frozen dataclasses for the server's messages
(`Begin`, `Turn`, `Termination`, `SpeechStarted`), `StreamingError` for everything that ends a
session badly (an `Error` message, an abnormal close code, a refused connection), `parse_message`
for one text frame, and `build_query` / `session_url` for the `/v3/ws?...` handshake URL. Nothing
here touches a socket, so all of it is tested with plain unit tests.

The wire format is AssemblyAI Universal-Streaming v3 (see the project's protocol notes); the
server-side rendering of these messages lives in `streamscribe.protocols`, not here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from streamscribe.errors import StreamscribeError
from streamscribe.events import TurnUpdate, Word

log = logging.getLogger(__name__)

DEFAULT_URL = "ws://127.0.0.1:8000"
WS_PATH = "/v3/ws"
DEFAULT_SAMPLE_RATE = 16000

# Close codes the v3 service uses, with the text shown when the server sent no close reason.
_CLOSE_TEXT = {
    1001: "the server is going away (shutting down)",
    1006: "the connection was lost without a close frame",
    1008: "unauthorized connection: check the API key or token",
    1011: "internal server error",
    1013: "the server is busy: try again later",
    3005: "session cancelled: a server error occurred",
    3006: "invalid message or parameter",
    3007: "input duration violation: send 50-1000 ms of audio per message, in real time",
    3008: "session expired: maximum session duration exceeded",
    3009: "too many concurrent sessions",
    4002: "insufficient funds: the key's daily audio allowance is spent (it resets at 00:00 UTC)",
}


class StreamingError(StreamscribeError):
    """A streaming session failed: an `Error` message, an abnormal close, or no connection.

    `code` is the server's error/close code (an HTTP status for a rejected handshake, None when
    no server answered); `message` says what went wrong and, where we know it, how to fix it.
    """

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message if self.code is None else f"{self.message} (code {self.code})"

    def __repr__(self) -> str:
        return f"StreamingError(code={self.code!r}, message={self.message!r})"

    @classmethod
    def from_close(cls, code: int | None, reason: str = "") -> StreamingError:
        """The error an abnormal close code (and its reason, if any) stands for."""
        text = reason or _CLOSE_TEXT.get(code or 0) or "the server closed the connection"
        return cls(code, text)


@dataclass(frozen=True, slots=True)
class Begin:
    """First message of a session."""

    id: str
    expires_at: datetime | None

    @property
    def session_id(self) -> str:
        return self.id


@dataclass(frozen=True, slots=True)
class TurnWord:
    """One word of a turn; times are milliseconds from the start of the session's audio."""

    text: str
    start: int
    end: int
    confidence: float
    word_is_final: bool
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    """A partial or final transcript of one turn (all messages of a turn share `turn_order`)."""

    turn_order: int
    transcript: str
    end_of_turn: bool
    turn_is_formatted: bool
    end_of_turn_confidence: float
    words: tuple[TurnWord, ...] = ()
    language_code: str | None = None
    language_confidence: float | None = None
    speaker_label: str | None = None
    utterance: str = ""

    @property
    def final_words(self) -> tuple[TurnWord, ...]:
        return tuple(w for w in self.words if w.word_is_final)

    @property
    def tentative_words(self) -> tuple[TurnWord, ...]:
        return tuple(w for w in self.words if not w.word_is_final)

    def to_turn_update(self, channel: int = 0) -> TurnUpdate:
        """This turn in the internal event model (e.g. to write it with `streamscribe.formats`)."""
        return TurnUpdate(
            channel=channel,
            turn_order=self.turn_order,
            words=tuple(
                Word(w.text, w.start, w.end, w.confidence, w.word_is_final, w.speaker)
                for w in self.words
            ),
            end_of_turn=self.end_of_turn,
            formatted=self.turn_is_formatted,
            end_of_turn_confidence=self.end_of_turn_confidence,
            language=self.language_code,
            language_confidence=self.language_confidence,
            speaker=self.speaker_label,
        )


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech was detected; `timestamp` is milliseconds from the start of the session's audio."""

    timestamp: int


@dataclass(frozen=True, slots=True)
class Termination:
    """Last message of a session that ended normally."""

    audio_duration_seconds: float
    session_duration_seconds: float


Message = Begin | Turn | SpeechStarted | Termination


def parse_message(raw: str | bytes | Mapping[str, Any]) -> Message | StreamingError | None:
    """Parse one server text frame.

    Returns a message, a `StreamingError` for an `Error` frame (returned, not raised: the caller
    decides when to raise it), or None for a message type this client does not know (newer
    servers add types; like the official SDKs we skip them). Raises ValueError for a frame that
    is not a JSON object.
    """
    data = _load(raw)
    kind = data.get("type")
    if kind == "Begin":
        return Begin(id=str(data.get("id", "")), expires_at=_parse_time(data.get("expires_at")))
    if kind == "Turn":
        return _parse_turn(data)
    if kind == "Termination":
        return Termination(
            audio_duration_seconds=_number(data.get("audio_duration_seconds")),
            session_duration_seconds=_number(data.get("session_duration_seconds")),
        )
    if kind == "SpeechStarted":
        return SpeechStarted(timestamp=int(_number(data.get("timestamp"))))
    if kind == "Error" or (kind is None and "error" in data):
        code = data.get("error_code")
        return StreamingError(
            int(code) if isinstance(code, int | float) else None,
            str(data.get("error") or "the server reported an error"),
        )
    log.debug("ignoring server message of unknown type %r", kind)
    return None


def _load(raw: str | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return raw
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"server sent a text frame that is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"server sent JSON that is not an object: {type(data).__name__}")
    return data


def _parse_turn(data: Mapping[str, Any]) -> Turn:
    words = tuple(
        TurnWord(
            text=str(w.get("text", "")),
            start=int(_number(w.get("start"))),
            end=int(_number(w.get("end"))),
            confidence=_number(w.get("confidence")),
            word_is_final=bool(w.get("word_is_final", False)),
            speaker=w.get("speaker"),
        )
        for w in data.get("words") or ()
        if isinstance(w, Mapping)
    )
    lang_conf = data.get("language_confidence")
    return Turn(
        turn_order=int(_number(data.get("turn_order"))),
        transcript=str(data.get("transcript", "")),
        end_of_turn=bool(data.get("end_of_turn", False)),
        turn_is_formatted=bool(data.get("turn_is_formatted", False)),
        end_of_turn_confidence=_number(data.get("end_of_turn_confidence")),
        words=words,
        language_code=data.get("language_code"),
        language_confidence=None if lang_conf is None else _number(lang_conf),
        speaker_label=data.get("speaker_label"),
        utterance=str(data.get("utterance") or ""),
    )


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0.0
    try:
        return float(value)
    except ValueError:
        return 0.0


def _parse_time(value: Any) -> datetime | None:
    """`expires_at` is epoch seconds in the cloud's messages; ISO-8601 strings parse too."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


# ------------------------------------------------------------------------- handshake URL


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | dict):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return str(value)


def build_query(params: Mapping[str, Any]) -> str:
    """The `/v3/ws` query string for session parameters.

    `sample_rate` defaults to 16000; parameters that are None are left out (the server applies
    its defaults); booleans become `true`/`false`; lists such as `keyterms_prompt` are sent as
    JSON arrays, as the v3 API expects. Unknown parameters are passed through unchanged.
    """
    items = {"sample_rate": DEFAULT_SAMPLE_RATE, **params}
    return urlencode([(k, _query_value(v)) for k, v in items.items() if v is not None])


def session_url(url: str, params: Mapping[str, Any], token: str | None = None) -> str:
    """The full WebSocket URL: `url` (ws/wss/http/https or bare host:port) + `/v3/ws?query`."""
    base = url.strip()
    if "://" not in base:
        base = "ws://" + base
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"URL {url!r}: use ws://HOST:PORT or wss://HOST:PORT")
    path = parts.path.rstrip("/")
    if not path.endswith(WS_PATH):
        path += WS_PATH
    query_params = dict(params)
    if token is not None:
        query_params["token"] = token
    return urlunsplit((scheme, parts.netloc, path, build_query(query_params), ""))

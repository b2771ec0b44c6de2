"""Fireworks streaming transcription (`/v1/audio/transcriptions/streaming`), sans-I/O.

Theory of operation: `parse_query` turns the upgrade's query (repeated keys kept: clients send
`timestamp_granularities` either repeated or comma-separated) into a `SessionConfig`, and
`parse_options` into what shapes the wire (`FireworksOptions`); both raise `ProtocolError`,
which the route answers with an HTTP error before the upgrade. A `FireworksProtocol` then
translates both ways. Client frames in: binary 16 kHz PCM16 (an odd trailing byte is carried to
the next frame) and JSON barriers: `{"checkpoint_id": ...}`, `stt.input.trace`, `stt.state.clear`.
Each barrier is a `ForceEndpoint` with a marker; its echo goes out when the engine answers
`Flushed`, so it always follows the transcript of the audio sent before it. The `"final"`
checkpoint (or trace) also ends the stream: echo, then close 1000.

Engine events out: every update is the whole segment list (one segment per turn, integer ids
from 0, revised in place), so clients that upsert by id and clients that replace their state
both read it right. Words become `is_final` as the engine's agreement settles them, but the last
word of a segment stays tentative until its turn ends: clients take "last word of the last
segment final" to mean the segment is done. The finished segment is the punctuated, cased
re-send of the turn. `start`/`end` (float seconds) appear only with `timestamp_granularities`.

Errors after the upgrade go out as `{"error": {"message", "type", "code"}}`, then a close:
1003 unsupported data, 1008 policy (limits, time-outs), 1009 frame too long, 1011 internal,
1013 busy. What is not built (skipping the VAD, other VAD settings) is refused by name; what has
no meaning offline (model names, retries) is accepted, and so is a sampling `temperature`
(decoding stays deterministic: `APPROXIMATED`, listed by /v1/info).

Reference: shared/protocols/fireworks-streaming.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from streamscribe.errors import ProtocolError
from streamscribe.events import (
    AudioFormat,
    Command,
    EndReason,
    Error,
    ErrorKind,
    Event,
    Flushed,
    ForceEndpoint,
    RawAudio,
    SessionConfig,
    SessionEnded,
    Terminate,
    TurnUpdate,
    Word,
)
from streamscribe.protocols.common import (
    IGNORED,
    WHISPER_LANGUAGES,
    Close,
    Machine,
    Outgoing,
    QueryReader,
    RateLimit,
    SendJson,
    Step,
    Transitions,
    close_code_of,
    close_reason,
    coded,
    loads_json,
    quoted,
    shown,
)

# What this dialect accepts but does not do exactly as the cloud does (listed by /v1/info)
APPROXIMATED = {
    "temperature": "any value 0-1 is accepted; decoding is always deterministic (beam search)",
    "model, max_retries, response_format": "accepted, no meaning offline",
}

RATE = 16000
MAX_CHUNK_MS = 5000  # clients send 50-400 ms; anything far longer is not a live stream
MAX_CHUNK_BYTES = RATE * 2 * MAX_CHUNK_MS // 1000
MAX_TEXT_CHARS = 64 * 1024
MAX_ID_CHARS = 256
MAX_PROMPT_CHARS = 4000
CONTROL_RATE = 50.0
CONTROL_BURST = 100
RESPONSE_FORMATS = ("verbose_json", "json")
GRANULARITIES = ("word", "segment")
TEXT_TIMEOUT_S = (1.0, 29.0)  # the LiveKit plugin's documented range

# close codes (protocol document §4.5: recommended, the cloud's are unverified)
NORMAL = 1000
GOING_AWAY = 1001
UNSUPPORTED = 1003
POLICY = 1008
TOO_BIG = 1009
INTERNAL = 1011
TRY_AGAIN_LATER = 1013

PAYMENT_REQUIRED = "payment_required"  # the error type of a spent daily audio allowance

CLOSE_CODES = {
    ErrorKind.AUTH: POLICY,
    ErrorKind.BAD_REQUEST: UNSUPPORTED,
    ErrorKind.BAD_AUDIO: UNSUPPORTED,
    ErrorKind.RATE: POLICY,
    ErrorKind.LIMIT: POLICY,
    ErrorKind.QUOTA: POLICY,
    ErrorKind.EXPIRED: POLICY,
    ErrorKind.TIMEOUT: POLICY,
    ErrorKind.BUSY: TRY_AGAIN_LATER,
    ErrorKind.INTERNAL: INTERNAL,
}
# refusals before the upgrade: HTTP status and error type
HTTP_STATUS = {
    ErrorKind.AUTH: (401, "unauthorized"),
    ErrorKind.BAD_REQUEST: (400, "invalid_request_error"),
    ErrorKind.BAD_AUDIO: (400, "invalid_request_error"),
    ErrorKind.LIMIT: (429, "rate_limit_error"),
    # Fireworks' error table: 402 Payment Required, "not on a paid plan or has exceeded usage
    # limits" (the body's type is unverified; named after the status)
    ErrorKind.QUOTA: (402, PAYMENT_REQUIRED),
    ErrorKind.RATE: (429, "rate_limit_error"),
    ErrorKind.BUSY: (503, "server_busy"),
}
ERROR_TYPES = {
    ErrorKind.AUTH: "unauthorized",
    ErrorKind.BAD_REQUEST: "invalid_request_error",
    ErrorKind.BAD_AUDIO: "invalid_audio",
    ErrorKind.RATE: "rate_limit_error",
    ErrorKind.LIMIT: "rate_limit_error",
    ErrorKind.QUOTA: PAYMENT_REQUIRED,
    ErrorKind.EXPIRED: "session_expired",
    ErrorKind.TIMEOUT: "timeout",
    ErrorKind.BUSY: "server_busy",
    ErrorKind.INTERNAL: "server_error",
}

FINAL = "final"


class State(Enum):
    OPEN = "open"  # audio flowing
    FINISHING = "finishing"  # the final barrier came: flushing, then echo and close
    CLOSED = "closed"  # closed, or an error close sent


# What each state allows (see `common.Machine`). Frames after the client's own end are dropped
# unparsed; after CLOSED the loop may still hand over a frame it read before it noticed the close
# (an engine failure closes the dialect while the loop waits for the next frame), and `error()`
# may come once more (the sender was cancelled between rendering the close and sending it).
TRANSITIONS: Transitions[State] = {
    State.OPEN: {
        Step.RECEIVE: State.OPEN,
        Step.TERMINATE: State.FINISHING,  # the final barrier
        Step.RENDER: State.OPEN,
        Step.END: State.CLOSED,
        Step.FAIL: State.CLOSED,
    },
    State.FINISHING: {
        Step.RECEIVE: IGNORED,
        Step.RENDER: State.FINISHING,
        Step.END: State.CLOSED,
        Step.FAIL: State.CLOSED,
    },
    State.CLOSED: {Step.RECEIVE: IGNORED, Step.FAIL: IGNORED},
}


@dataclass(frozen=True, slots=True)
class FireworksOptions:
    """What the query asks of the wire, beyond the session's config."""

    word_times: bool = False  # timestamp_granularities has word
    segment_times: bool = False  # timestamp_granularities has segment
    language: str | None = None  # the language asked for (None: the model's own)


@dataclass(frozen=True, slots=True)
class _Barrier:
    kind: str  # checkpoint | trace | clear
    value: Any  # the checkpoint_id / trace_id / reset_id, echoed as sent
    event_id: str | None = None


Query = Mapping[str, str] | Iterable[tuple[str, str]]


def _pairs(query: Query) -> list[tuple[str, str]]:
    return list(query.items()) if isinstance(query, Mapping) else list(query)


def _bad(reason: str) -> ProtocolError:
    return coded(ErrorKind.BAD_REQUEST, reason, UNSUPPORTED)


def parse_query(query: Query) -> SessionConfig:
    """Validate the query string; unknown parameters are ignored (clients add their own)."""
    pairs = _pairs(query)
    values = dict(pairs)
    q = QueryReader(values, UNSUPPORTED)
    options = parse_options(pairs)
    turn: dict[str, Any] = {"format_turns": True}  # finished segments are punctuated, cased
    if options.language is not None:
        turn["language"] = options.language
    if q.has("prompt"):
        if len(values["prompt"]) > MAX_PROMPT_CHARS:
            raise _bad(f"Invalid prompt: longer than {MAX_PROMPT_CHARS} characters")
        turn["prompt"] = values["prompt"]
    q.float("temperature", 0.0, 0.0, 1.0)  # any 0-1 is accepted; decoding is deterministic
    q.choice("response_format", RESPONSE_FORMATS, "verbose_json")
    if q.bool("skip_vad"):
        raise _bad(
            "skip_vad=true is not supported: streamscribe needs its VAD to find segments; "
            "leave skip_vad out (or send false)"
        )
    if q.has("vad_kwargs"):
        turn.update(_vad_kwargs(values["vad_kwargs"]))
    timeout = q.float("text_timeout_seconds", None, *TEXT_TIMEOUT_S)
    if timeout is not None:  # silence that ends a segment
        turn["max_turn_silence_ms"] = int(round(timeout * 1000))
        turn["min_turn_silence_ms"] = min(400, turn["max_turn_silence_ms"])
    q.int("max_retries", None, 0, 10)  # server-side retries: nothing to retry offline
    rate = q.int("sample_rate", RATE)
    if rate != RATE:
        raise _bad(
            f"Invalid sample_rate={rate}: Fireworks streaming takes 16000 Hz mono PCM16 only"
        )
    return SessionConfig(
        audio=AudioFormat(encoding="pcm_s16le", sample_rate=RATE, channels=1),
        turn=turn,
        model=values.get("model") or None,
    )


def parse_options(query: Query) -> FireworksOptions:
    pairs = _pairs(query)
    wanted: set[str] = set()
    for key, value in pairs:
        if key not in ("timestamp_granularities", "timestamp_granularities[]"):
            continue
        for item in value.split(","):
            item = item.strip()
            if item not in GRANULARITIES:
                raise _bad(
                    f"Invalid timestamp_granularities={quoted(value)}: expected word, segment "
                    "or both (repeated or comma-separated)"
                )
            wanted.add(item)
    language = dict(pairs).get("language", "").strip().lower() or None
    if language is not None and language not in WHISPER_LANGUAGES:
        raise _bad(
            f"Invalid language={quoted(language)}: expected an ISO-639-1 code the model knows, "
            "e.g. en, es, fr, de (or leave it out)"
        )
    return FireworksOptions("word" in wanted, "segment" in wanted, language)


def _vad_kwargs(raw: str) -> dict[str, Any]:
    shape = 'a JSON object, e.g. {"threshold": 0.5}'
    try:
        value = loads_json(raw)
    except ValueError:
        raise _bad(f"Invalid vad_kwargs={quoted(raw)}: expected {shape}") from None
    if not isinstance(value, dict):
        raise _bad(f"Invalid vad_kwargs={quoted(raw)}: expected {shape}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key != "threshold":
            raise _bad(
                f"vad_kwargs {quoted(str(key))} is not supported: only threshold (0-1) is; "
                "turn length follows text_timeout_seconds"
            )
        if isinstance(item, bool) or not isinstance(item, int | float) or not 0 <= item <= 1:
            raise _bad("Invalid vad_kwargs threshold: expected a number from 0 to 1")
        out["vad_threshold"] = float(item)
    return out


def http_error(exc: ProtocolError) -> tuple[int, dict[str, Any]]:
    """A refusal before the upgrade: HTTP status and JSON body."""
    status, kind = HTTP_STATUS.get(exc.kind, (500, "server_error"))
    return status, {"error": {"message": exc.reason, "type": kind, "code": status}}


class FireworksProtocol:
    """One streaming connection's protocol state."""

    def __init__(
        self,
        config: SessionConfig,
        options: FireworksOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.options = options or FireworksOptions()
        self._machine = Machine("Fireworks", TRANSITIONS, State.OPEN)
        self._carry = b""
        self._control_rate = RateLimit(CONTROL_RATE, CONTROL_BURST, clock)
        self._barriers: dict[str, _Barrier] = {}
        self._markers = 0
        # segment id -> (words as shown, language); one segment per engine turn
        self._segments: dict[int, tuple[tuple[Word, ...], str]] = {}
        self._language = self.options.language or "en"

    @property
    def state(self) -> State:
        return self._machine.state

    # ---------------------------------------------------------------- client -> server
    def receive_bytes(self, data: bytes) -> list[Command]:
        if not self._machine.allows(Step.RECEIVE):
            return []  # after the final checkpoint nothing more is transcribed
        if len(data) > MAX_CHUNK_BYTES:
            raise coded(
                ErrorKind.BAD_AUDIO,
                f"Audio frame too long: {len(data) / 32:.0f} ms in one frame (at most "
                f"{MAX_CHUNK_MS} ms; send 50-400 ms chunks of 16 kHz PCM16)",
                TOO_BIG,
            )
        data = self._carry + data
        whole = len(data) - len(data) % 2
        self._carry = data[whole:]
        return [RawAudio(data[:whole])] if whole else []

    def take_replies(self) -> list[object]:
        """This dialect answers client messages only through engine events: nothing to add."""
        return []

    def receive_text(self, text: str) -> list[Command]:
        if not self._machine.allows(Step.RECEIVE):
            return []
        if not self._control_rate.allow():
            raise coded(
                ErrorKind.RATE,
                f"Too many messages: more than {CONTROL_RATE:.0f} text messages a second "
                "(audio goes in binary frames)",
                POLICY,
            )
        if len(text) > MAX_TEXT_CHARS:
            raise _bad(
                f"Invalid message: a text frame of {len(text)} characters (messages are JSON "
                f"objects of at most {MAX_TEXT_CHARS}; audio goes in binary frames)"
            )
        try:
            message = loads_json(text)
        except ValueError:
            raise _bad(f"Invalid JSON: {shown(text, 60)}") from None
        if not isinstance(message, dict):
            raise _bad(f"Invalid message: {shown(text, 60)} is not a JSON object")
        if "checkpoint_id" in message:
            value = _identifier(message["checkpoint_id"], "checkpoint_id", ints=True)
            return self._barrier(_Barrier("checkpoint", value), value == FINAL)
        kind = message.get("object")
        event_id = message.get("event_id")
        if event_id is not None:
            event_id = _identifier(event_id, "event_id")
        if kind == "stt.input.trace":
            value = _identifier(message.get("trace_id"), "trace_id")
            return self._barrier(_Barrier("trace", value, event_id), value == FINAL)
        if kind == "stt.state.clear":
            value = _identifier(message.get("reset_id"), "reset_id")
            return self._barrier(_Barrier("clear", value, event_id), False)
        name = shown(kind, 40) if isinstance(kind, str) else "missing"
        raise _bad(
            f'Unsupported message (object {name}): expected {{"checkpoint_id": ...}}, '
            "stt.input.trace or stt.state.clear"
        )

    def _barrier(self, barrier: _Barrier, final: bool) -> list[Command]:
        self._markers += 1
        marker = f"barrier-{self._markers}"
        self._barriers[marker] = barrier
        commands: list[Command] = [ForceEndpoint(marker=marker)]
        if final:
            self._machine.move(Step.TERMINATE)
            commands.append(Terminate())
        return commands

    # ---------------------------------------------------------------- server -> client
    def render(self, event: Event) -> list[Outgoing]:
        self._machine.move(Step.RENDER)
        if isinstance(event, TurnUpdate):
            return self._turn(event)
        if isinstance(event, Flushed):
            return self._echo(event.marker)
        if isinstance(event, SessionEnded):
            self._machine.move(Step.END)
            if event.reason is EndReason.SHUTDOWN:
                return [Close(GOING_AWAY, "Server shutting down: reconnect to another server")]
            return [Close(NORMAL)]
        if isinstance(event, Error):
            return self.error(ProtocolError.of(event.kind, event.message))
        return []  # no greeting, no speech events in this protocol

    def error(self, exc: ProtocolError) -> list[Outgoing]:
        """The error message and the close that end a session badly."""
        if not self._machine.allows(Step.FAIL):
            return []  # already closed: nothing more to say
        self._machine.move(Step.FAIL)
        code = close_code_of(exc) or CLOSE_CODES.get(exc.kind, INTERNAL)
        kind = ERROR_TYPES.get(exc.kind, "server_error")
        return [
            SendJson({"error": {"message": exc.reason, "type": kind, "code": code}}),
            Close(code, close_reason(exc.reason)),
        ]

    def _turn(self, update: TurnUpdate) -> list[Outgoing]:
        if update.channel != 0 or not update.words:
            return []
        if update.end_of_turn and not update.formatted:
            return []  # the finished segment is the formatted re-send that follows
        words = update.words
        if not update.end_of_turn and words[-1].final:
            # the segment is not done until its turn ends: its last word says so
            last = words[-1]
            words = (
                *words[:-1],
                Word(last.text, last.start_ms, last.end_ms, last.confidence, False),
            )
        language = update.language or self.options.language or self._language
        self._language = language
        self._segments[update.turn_order] = (words, language)
        return [SendJson(self._update())]

    def _echo(self, marker: str) -> list[Outgoing]:
        barrier = self._barriers.pop(marker, None)
        if barrier is None:
            return []
        if barrier.kind == "checkpoint":
            return [SendJson({"checkpoint_id": barrier.value})]
        event_id = barrier.event_id or f"event_{marker}"
        if barrier.kind == "trace":
            return [
                SendJson(
                    {"event_id": event_id, "object": "stt.output.trace", "trace_id": barrier.value}
                )
            ]
        self._segments.clear()  # what was said before the reset is no longer re-sent
        return [
            SendJson(
                {"event_id": event_id, "object": "stt.state.cleared", "reset_id": barrier.value}
            )
        ]

    def _update(self) -> dict[str, Any]:
        segments = []
        all_words = []
        for seg_id in sorted(self._segments):
            words, language = self._segments[seg_id]
            rendered = [self._word(w, language) for w in words]
            all_words += rendered
            segment: dict[str, Any] = {
                "id": seg_id,
                "text": " ".join(w.text for w in words),
                "words": rendered,
            }
            if self.options.segment_times:
                segment["start"] = round(words[0].start_ms / 1000, 3)
                segment["end"] = round(words[-1].end_ms / 1000, 3)
            segments.append(segment)
        return {
            "task": "transcribe",
            "language": self._language,
            "text": " ".join(s["text"] for s in segments),
            "words": all_words,
            "segments": segments,
        }

    def _word(self, word: Word, language: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "word": word.text,
            "language": language,
            "probability": round(float(word.confidence), 4),
            "hallucination_score": 0.0,
            "is_final": bool(word.final),
        }
        if self.options.word_times:
            out["start"] = round(word.start_ms / 1000, 3)
            out["end"] = round(word.end_ms / 1000, 3)
        return out


def _identifier(value: Any, name: str, ints: bool = False) -> Any:
    """A client-chosen id, echoed back as sent: a short string (or an integer where allowed)."""
    if ints and isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return value
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and _encodable(value):
        return value
    accepted = "a string or an integer" if ints else "a string"
    raise _bad(f"Invalid {name}: expected {accepted} of at most {MAX_ID_CHARS} characters")


def _encodable(text: str) -> bool:
    """Echoed ids must be valid UTF-8 on the way out (JSON lets a client send a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

"""AssemblyAI legacy real-time v2 (`/v2/realtime/ws`), sans-I/O.

Theory of operation: `parse_query` turns the upgrade's query string into a `SessionConfig` and
`parse_options` into the few v2-only switches (`V2Options`); both raise `ProtocolError` carrying
the v2 close code (4000 sample rate, 4104 word boost, 1008 anything else). A `V2Protocol` then
translates both ways. Client frames in: binary audio, or JSON text carrying base64 `audio_data`,
`force_end_utterance`, `end_utterance_silence_threshold` or `terminate_session`. Engine events
out: `SessionBegins`, `PartialTranscript`s (the running lower-case text of the utterance),
one punctuated `FinalTranscript` per utterance (the engine's formatted re-send of a turn),
`SessionInformation` when asked for, `SessionTerminated`, close 1000.

Like the cloud, partials keep coming while the client streams, empty between utterances: the
session asks for `AudioProgress` every `PARTIAL_EVERY_MS` of audio, and on each one with no
utterance in progress an empty `PartialTranscript` goes out. Clients rely on that to close a
session after a stretch of silence. A `force_end_utterance` is always answered with a
`FinalTranscript`, empty when there was nothing to end.

Types follow what SDK 0.64.2's models validate: a version-4 UUID session id, ISO datetimes
(`expires_at`, `created`), integer milliseconds, `audio_duration_seconds` a float. Every error
goes out twice: as `{"error": ...}` with the full reason (the SDK replaces the close reason of
4xxx codes with its own fixed text), then as the close code and reason.

Reference: shared/protocols/assemblyai-v2-realtime.md.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from streamscribe.errors import ProtocolError
from streamscribe.events import (
    AudioFormat,
    AudioProgress,
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
    SessionStarted,
    Terminate,
    TurnUpdate,
    UpdateConfig,
    Word,
)
from streamscribe.protocols.common import (
    BYTES_PER_SAMPLE,
    IGNORED,
    Close,
    Machine,
    Outgoing,
    QueryReader,
    RateLimit,
    SendJson,
    Step,
    Transitions,
    chunk_ms,
    close_code_of,
    close_reason,
    coded,
    loads_json,
    shown,
)

ENCODINGS = ("pcm_s16le", "pcm_mulaw")
SAMPLE_RATES = (8000, 48000)
# The cloud took 100-2000 ms per frame; shorter frames are accepted here (browser worklets send
# small ones). Frames under MIN_CHUNK_MS (a framework's last few ms before terminate_session) are
# held and sent on with the next ones; only a flood of them (over SHORT_FRAME_RATE a second after
# a burst) is refused, with 4032.
MIN_CHUNK_MS = 10
MAX_CHUNK_MS = 2000
SHORT_FRAME_RATE = 200.0
SHORT_FRAME_BURST = 400

# What this dialect accepts but does not do exactly as the cloud does (listed by /v1/info)
APPROXIMATED = {
    "audio frames under 10 ms": "held and sent on with the next frames, never refused",
    "word_boost": "the decoder's prompt (no boosting)",
}
SILENCE_THRESHOLD_MS = (0, 20000)  # end_utterance_silence_threshold, as the docs give it
MAX_WORD_BOOST = 100
MAX_WORD_BOOST_CHARS = 50
CONTROL_RATE = 50.0  # JSON control messages a second (audio_data frames are not counted)
CONTROL_BURST = 100
PARTIAL_EVERY_MS = 500  # the cadence of partials on the audio clock (empty ones in silence)
# An utterance whose last partial is this much older than the audio (and never got its final,
# e.g. noise the final decode dropped) is over: empty partials resume.
STALE_UTTERANCE_MS = 4000

# close codes (protocol document §4)
NORMAL = 1000
POLICY = 1008  # a query parameter other than sample_rate / word_boost (no v2 code exists)
INTERNAL = 1011
TRY_AGAIN_LATER = 1013
BAD_SAMPLE_RATE = 4000
NOT_AUTHORIZED = 4001
INSUFFICIENT_FUNDS = 4002  # the account's balance: here, the key's daily audio allowance
SESSION_EXPIRED = 4008
AUDIO_TOO_FAST = 4029
IDLE = 4031
AUDIO_TOO_SHORT = 4032
AUDIO_TOO_LONG = 4033
INVALID_JSON = 4100
INVALID_SCHEMA = 4101
TOO_MANY_STREAMS = 4102
BAD_WORD_BOOST = 4104

CLOSE_CODES = {
    ErrorKind.AUTH: NOT_AUTHORIZED,
    ErrorKind.BAD_REQUEST: INVALID_SCHEMA,
    ErrorKind.BAD_AUDIO: INVALID_SCHEMA,
    ErrorKind.RATE: AUDIO_TOO_FAST,
    ErrorKind.LIMIT: TOO_MANY_STREAMS,
    ErrorKind.QUOTA: INSUFFICIENT_FUNDS,
    ErrorKind.EXPIRED: SESSION_EXPIRED,
    ErrorKind.TIMEOUT: IDLE,
    ErrorKind.BUSY: TRY_AGAIN_LATER,
    ErrorKind.INTERNAL: INTERNAL,
}

_MESSAGE_KEYS = (
    "audio_data",
    "end_utterance_silence_threshold",
    "force_end_utterance",
    "terminate_session",
)
_FORCE = "force-"  # prefix of this dialect's ForceEndpoint markers


class State(Enum):
    OPEN = "open"  # SessionBegins sent, audio flowing
    TERMINATING = "terminating"  # terminate_session received: flushing the last utterance
    CLOSED = "closed"  # SessionTerminated or an error close sent


# What each state allows (see `common.Machine`). Frames after the client's own end are dropped
# unparsed; after CLOSED the loop may still hand over a frame it read before it noticed the close
# (an engine failure closes the dialect while the loop waits for the next frame), and `error()`
# may come once more (the sender was cancelled between rendering the close and sending it).
TRANSITIONS: Transitions[State] = {
    State.OPEN: {
        Step.RECEIVE: State.OPEN,
        Step.TERMINATE: State.TERMINATING,  # terminate_session
        Step.RENDER: State.OPEN,
        Step.END: State.CLOSED,
        Step.FAIL: State.CLOSED,
    },
    State.TERMINATING: {
        Step.RECEIVE: IGNORED,
        Step.RENDER: State.TERMINATING,
        Step.END: State.CLOSED,
        Step.FAIL: State.CLOSED,
    },
    State.CLOSED: {Step.RECEIVE: IGNORED, Step.FAIL: IGNORED},
}


@dataclass(frozen=True, slots=True)
class V2Options:
    """What the v2 query asks of the wire, beyond the session's config."""

    partials: bool = True  # not disable_partial_transcripts
    session_information: bool = False  # enable_extra_session_information


def _fail(code: int, reason: str) -> ProtocolError:
    kind = (
        ErrorKind.BAD_AUDIO if code in (AUDIO_TOO_SHORT, AUDIO_TOO_LONG) else ErrorKind.BAD_REQUEST
    )
    return coded(kind, reason, code)


def parse_query(query: Mapping[str, str]) -> SessionConfig:
    """Validate the `/v2/realtime/ws` query; unknown parameters are ignored, as the cloud does."""
    rate = QueryReader(query, BAD_SAMPLE_RATE).int("sample_rate", None, *SAMPLE_RATES)
    if rate is None:
        raise _fail(
            BAD_SAMPLE_RATE,
            "Missing sample_rate: add sample_rate=16000 (any integer 8000-48000) to the URL",
        )
    q = QueryReader(query, POLICY)
    encoding = q.choice("encoding", ENCODINGS, "pcm_s16le")
    turn: dict[str, Any] = {"format_turns": True}  # finals are the punctuated, cased re-send
    if q.has("word_boost") and not query["word_boost"].lstrip().startswith("["):
        raise _fail(
            BAD_WORD_BOOST,
            'Could not parse word_boost: expected a JSON array of strings, e.g. ["foo", "bar"]',
        )
    boost = QueryReader(query, BAD_WORD_BOOST).string_list(
        "word_boost", MAX_WORD_BOOST, MAX_WORD_BOOST_CHARS
    )
    if boost:
        turn["keyterms"] = boost
    parse_options(query)  # bad switches stop the session here too
    return SessionConfig(
        audio=AudioFormat(encoding=encoding, sample_rate=rate, channels=1),
        turn=turn,
        progress_interval_ms=PARTIAL_EVERY_MS,
    )


def parse_options(query: Mapping[str, str]) -> V2Options:
    q = QueryReader(query, POLICY)
    return V2Options(
        partials=not q.bool("disable_partial_transcripts"),
        session_information=q.bool("enable_extra_session_information"),
    )


def silence_threshold(value: Any) -> dict[str, int]:
    """`end_utterance_silence_threshold` (int ms) as engine turn settings."""
    lo, hi = SILENCE_THRESHOLD_MS
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        shown_value = shown(repr(value), 20) if isinstance(value, int | float) else "not a number"
        raise _fail(
            INVALID_SCHEMA,
            f"Invalid end_utterance_silence_threshold ({shown_value}): expected an integer "
            f"number of milliseconds from {lo} to {hi}",
        )
    # the utterance ends after this much silence, whether or not it sounds finished
    return {"min_turn_silence_ms": value, "max_turn_silence_ms": value}


def iso(at: datetime) -> str:
    """ISO-8601 as the cloud wrote it: UTC, no offset, microseconds."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class V2Protocol:
    """One v2 connection's protocol state."""

    def __init__(
        self,
        config: SessionConfig,
        options: V2Options | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.config = config
        self.options = options or V2Options()
        self._machine = Machine("AssemblyAI v2", TRANSITIONS, State.OPEN)
        self._now = now
        fmt = config.audio
        self._sample_bytes = BYTES_PER_SAMPLE[fmt.encoding]
        self._carry = b""  # short frames and an odd trailing byte, kept for the next frame
        # text frames may carry base64 audio: room for the longest frame accepted, plus JSON
        longest = int(fmt.sample_rate * self._sample_bytes * MAX_CHUNK_MS / 1000)
        self.max_text_chars = (longest + 2) // 3 * 4 + 1024
        self._control_rate = RateLimit(CONTROL_RATE, CONTROL_BURST, clock)
        self._short_rate = RateLimit(SHORT_FRAME_RATE, SHORT_FRAME_BURST, clock)
        # the utterance being rendered
        self._utterance_start_ms = 0  # audio_start: where the previous utterance ended
        self._heard_ms = 0  # the latest AudioProgress
        self._partial_end_ms = 0  # partials' audio_end never goes back
        self._words_at_ms: int | None = None  # when a partial with words last went out
        self._stale_ms = STALE_UTTERANCE_MS
        # force_end_utterance bookkeeping: finals rendered, and the count at each force
        self._forces = 0
        self._finals = 0
        self._finals_at_force: dict[str, int] = {}

    @property
    def state(self) -> State:
        return self._machine.state

    # ---------------------------------------------------------------- client -> server
    def receive_bytes(self, data: bytes) -> list[Command]:
        if not self._machine.allows(Step.RECEIVE):
            return []  # audio after terminate_session is not transcribed
        return self._audio(data)

    def take_replies(self) -> list[object]:
        """This dialect answers client messages only through engine events: nothing to add."""
        return []

    def receive_text(self, text: str) -> list[Command]:
        if not self._machine.allows(Step.RECEIVE):
            return []  # flushing or closed: nothing a client sends matters, not even parsed
        if len(text) > self.max_text_chars:
            raise _fail(
                INVALID_SCHEMA,
                f"Invalid message: a text frame of {len(text)} characters (at most "
                f"{self.max_text_chars}: {MAX_CHUNK_MS} ms of base64 audio_data)",
            )
        try:
            message = loads_json(text)
        except ValueError:
            raise _fail(INVALID_JSON, f"Invalid JSON: {shown(text, 60)}") from None
        if not isinstance(message, dict):
            raise _fail(INVALID_SCHEMA, f"Invalid message: {shown(text, 60)} is not a JSON object")
        unknown = [k for k in message if k not in _MESSAGE_KEYS]
        if unknown or not message:
            name = shown(str(unknown[0]), 40) if unknown else "{}"
            raise _fail(
                INVALID_SCHEMA,
                f"Invalid message: unknown field {name} (expected audio_data, "
                "force_end_utterance, end_utterance_silence_threshold or terminate_session)",
            )
        if set(message) != {"audio_data"} and not self._control_rate.allow():
            raise coded(
                ErrorKind.RATE,
                f"Too many messages: more than {CONTROL_RATE:.0f} control messages a second",
                AUDIO_TOO_FAST,
            )
        commands: list[Command] = []
        if "audio_data" in message:
            commands += self._audio(_base64(message["audio_data"]))
        if "end_utterance_silence_threshold" in message:
            value = message["end_utterance_silence_threshold"]
            changes = silence_threshold(value)
            self._stale_ms = max(STALE_UTTERANCE_MS, value + 2000)
            commands.append(UpdateConfig(changes))
        if _flag(message, "force_end_utterance") or _flag(message, "terminate_session"):
            commands += self._release()  # a short last frame is transcribed too
        if _flag(message, "force_end_utterance"):
            self._forces += 1
            marker = f"{_FORCE}{self._forces}"
            self._finals_at_force[marker] = self._finals
            commands.append(ForceEndpoint(marker=marker))
        if _flag(message, "terminate_session"):
            self._machine.move(Step.TERMINATE)
            commands.append(Terminate())
        return commands

    def _audio(self, data: bytes) -> list[Command]:
        fmt = self.config.audio
        ms = chunk_ms(len(data), fmt.encoding, fmt.sample_rate)
        if not data or (ms < MIN_CHUNK_MS and not self._short_rate.allow()):
            raise _fail(
                AUDIO_TOO_SHORT,
                f"Audio duration is too short: {ms:.1f} ms in one frame"
                + (f", more than {SHORT_FRAME_RATE:.0f} such frames a second" if data else "")
                + f"; send {MIN_CHUNK_MS}-{MAX_CHUNK_MS} ms of {fmt.encoding} at "
                f"{fmt.sample_rate} Hz",
            )
        if ms > MAX_CHUNK_MS + 0.5:
            raise _fail(
                AUDIO_TOO_LONG,
                f"Audio duration is too long: {ms:.0f} ms in one frame; send "
                f"{MIN_CHUNK_MS}-{MAX_CHUNK_MS} ms of {fmt.encoding} at {fmt.sample_rate} Hz",
            )
        data = self._carry + data
        if chunk_ms(len(data), fmt.encoding, fmt.sample_rate) < MIN_CHUNK_MS:
            self._carry = data  # held: sent on with the next frame (or before the end)
            return []
        whole = len(data) - len(data) % self._sample_bytes
        self._carry = data[whole:]
        return [RawAudio(data[:whole])] if whole else []

    def _release(self) -> list[Command]:
        """Whole samples held back from short frames (an odd byte is dropped at the end)."""
        whole = len(self._carry) - len(self._carry) % self._sample_bytes
        held, self._carry = self._carry[:whole], b""
        return [RawAudio(held)] if held else []

    # ---------------------------------------------------------------- server -> client
    def render(self, event: Event) -> list[Outgoing]:
        self._machine.move(Step.RENDER)
        if isinstance(event, SessionStarted):
            expires = datetime.fromtimestamp(event.expires_at, UTC)
            return [
                SendJson(
                    {
                        "message_type": "SessionBegins",
                        "session_id": event.session_id,
                        "expires_at": iso(expires),
                    }
                )
            ]
        if isinstance(event, TurnUpdate):
            return self._turn(event)
        if isinstance(event, AudioProgress):
            return self._progress(event.audio_ms)
        if isinstance(event, Flushed):
            return self._flushed(event.marker)
        if isinstance(event, SessionEnded):
            self._machine.move(Step.END)
            out: list[Outgoing] = []
            if self.options.session_information:
                out.append(
                    SendJson(
                        {
                            "message_type": "SessionInformation",
                            "audio_duration_seconds": round(event.audio_ms / 1000, 3),
                        }
                    )
                )
            out.append(SendJson({"message_type": "SessionTerminated"}))
            if event.reason is EndReason.SHUTDOWN:
                return [*out, Close(1001, "Server shutting down: reconnect to another server")]
            return [*out, Close(NORMAL)]
        if isinstance(event, Error):
            return self.error(ProtocolError.of(event.kind, event.message))
        return []  # SpeechStarted: v2 has no such message

    def error(self, exc: ProtocolError) -> list[Outgoing]:
        """The error message and the close that end a session badly."""
        if not self._machine.allows(Step.FAIL):
            return []  # already closed: nothing more to say
        self._machine.move(Step.FAIL)
        code = close_code_of(exc) or CLOSE_CODES.get(exc.kind, INTERNAL)
        return [SendJson({"error": exc.reason}), Close(code, close_reason(exc.reason))]

    def _turn(self, update: TurnUpdate) -> list[Outgoing]:
        if not update.end_of_turn:
            if not update.words:
                return []
            self._words_at_ms = self._heard_ms
            if not self.options.partials:
                return []
            return [SendJson(self._transcript("PartialTranscript", update.words))]
        if not update.formatted:
            return []  # the FinalTranscript is the punctuated, cased re-send that follows
        message = self._transcript("FinalTranscript", update.words)
        message["punctuated"] = True
        message["text_formatted"] = True
        self._end_utterance(message["audio_end"])
        return [SendJson(message)]

    def _progress(self, audio_ms: int) -> list[Outgoing]:
        self._heard_ms = max(self._heard_ms, audio_ms)
        if self._words_at_ms is not None:
            if self._heard_ms - self._words_at_ms < self._stale_ms:
                return []  # an utterance is in progress: its own partials speak for it
            self._words_at_ms = None  # it never got a final (nothing was said after all)
        if not self.options.partials:
            return []
        return [SendJson(self._transcript("PartialTranscript", (), self._heard_ms))]

    def _flushed(self, marker: str) -> list[Outgoing]:
        """A force_end_utterance that ended nothing still gets its (empty) FinalTranscript."""
        if marker not in self._finals_at_force:
            return []
        if self._finals_at_force.pop(marker) != self._finals:
            return []
        message = self._transcript("FinalTranscript", (), self._heard_ms)
        message["punctuated"] = True
        message["text_formatted"] = True
        self._end_utterance(message["audio_end"])
        return [SendJson(message)]

    def _end_utterance(self, end_ms: int) -> None:
        self._finals += 1
        self._utterance_start_ms = max(self._utterance_start_ms, end_ms)
        self._words_at_ms = None

    def _transcript(
        self, kind: str, words: tuple[Word, ...], end_ms: int | None = None
    ) -> dict[str, Any]:
        start = self._utterance_start_ms
        if words:
            start = min(start, int(words[0].start_ms))
            end = max(start, int(words[-1].end_ms))
        else:
            end = max(start, int(end_ms if end_ms is not None else start))
        if kind == "PartialTranscript":
            end = max(end, self._partial_end_ms)
        self._partial_end_ms = end
        confidence = sum(w.confidence for w in words) / len(words) if words else 0.0
        return {
            "message_type": kind,
            "audio_start": start,
            "audio_end": end,
            "confidence": round(float(confidence), 4),
            "text": " ".join(w.text for w in words),
            "words": [
                {
                    "start": int(w.start_ms),
                    "end": int(w.end_ms),
                    "confidence": round(float(w.confidence), 4),
                    "text": w.text,
                }
                for w in words
            ],
            "created": iso(self._now()),
        }


def _flag(message: dict[str, Any], name: str) -> bool:
    if name not in message:
        return False
    value = message[name]
    if not isinstance(value, bool):
        raise _fail(INVALID_SCHEMA, f"Invalid message: {name} must be true or false")
    return value


def _base64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise _fail(INVALID_SCHEMA, "Invalid message: audio_data must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(
            INVALID_SCHEMA, "Invalid message: audio_data is not valid base64 (RFC 4648)"
        ) from None

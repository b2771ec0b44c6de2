"""AssemblyAI Universal-Streaming v3 (`/v3/ws`), sans-I/O.

Theory of operation: `parse_query` turns the upgrade's query string into a `SessionConfig` or
raises `ProtocolError` (close 3006). A `V3Protocol` object then translates both ways: client
frames in (`receive_bytes`, `receive_text`) become engine commands; engine events out (`render`)
become wire frames, ending with `Termination` and close 1000. States are named, and what is
legal in each is checked here, never in the route. Types follow what the official SDK's pydantic
models validate: every int is an int (ms, whole seconds), never a float.

Hostile input stops here, with a close code and a reason that says what is accepted: text frames
over `MAX_TEXT_CHARS`, JSON that is not strict JSON (NaN, nesting too deep, numbers past Python's
limits), settings outside the ranges the query accepts, keyterm lists and prompts beyond their
limits, language codes the model does not know, control messages faster than `CONTROL_RATE` a
second (close 3007, as the cloud does for rates). Frames after `Terminate` are not even parsed.
Sizes are not garbage, though: audio frames shorter than the protocol's 50 ms are held and sent
on with the next ones (and before `Terminate` or `ForceEndpoint`), so a voice-agent framework's
20 ms frames, or the few milliseconds it still holds when it stops, never end a session.
Everything else about misbehaving peers (message size, slow readers, vanishing sockets) belongs
to the server and the WebSocket layer.

Reference: shared/protocols/assemblyai-v3-streaming.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from streamscribe.errors import ProtocolError
from streamscribe.events import (
    AudioFormat,
    Command,
    Error,
    ErrorKind,
    Event,
    ForceEndpoint,
    KeepAlive,
    RawAudio,
    SessionConfig,
    SessionEnded,
    SessionStarted,
    SpeechStarted,
    Terminate,
    TurnUpdate,
    UpdateConfig,
)
from streamscribe.protocols.common import (
    BYTES_PER_SAMPLE,
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
    chunk_ms,
    close_code_of,
    close_reason,
    coded,
    finite_number,
    list_problem,
    loads_json,
    quoted,
    shown,
)

ENCODINGS = ("pcm_s16le", "pcm_mulaw")
MIN_CHUNK_MS = 50
MAX_CHUNK_MS = 1000
# Frames shorter than MIN_CHUNK_MS are held and sent on with the next ones (voice-agent
# frameworks send 10-20 ms frames, and the few ms they still hold just before Terminate); only
# a flood of them is refused: more than SHORT_FRAME_RATE a second after a burst.
SHORT_FRAME_RATE = 200.0
SHORT_FRAME_BURST = 400

# Limits on what a client may ask for (the cloud documents 100 keyterms of 50 characters).
# Whisper reads only the last ~220 prompt tokens; a longer prompt is only work for the tokenizer.
MAX_KEYTERMS = 100
MAX_KEYTERM_CHARS = 50
MAX_PROMPT_CHARS = 4000
MAX_SPEAKERS = 10
# A control message is a small JSON object; anything far larger is not one.
MAX_TEXT_CHARS = 64 * 1024
# Text (control) frames: a burst of CONTROL_BURST, then CONTROL_RATE a second. Audio frames are
# not counted: each holds at least 50 ms, and the server's back-pressure paces them.
CONTROL_RATE = 50.0
CONTROL_BURST = 100

# What this dialect accepts but does not do exactly as the cloud does (listed by /v1/info)
APPROXIMATED = {
    "audio frames under 50 ms": "held and sent on with the next frames, never refused",
    "speech_model": "a served model's name picks it; vendor names mean the default model",
    "keyterms_prompt": "the decoder's prompt (no boosting)",
}

# close codes (protocol document §5)
NORMAL = 1000
UNAUTHORIZED = 1008
TRY_AGAIN_LATER = 1013
SERVER_ERROR = 3005
BAD_MESSAGE = 3006
BAD_AUDIO = 3007
EXPIRED = 3008
TOO_MANY_SESSIONS = 3009
# A spent daily audio allowance. The v3 error table has no row for an account out of balance (it
# falls under 1008 "Unauthorized Connection: <reason>", the same code as a bad key); the v3 SDK's
# own table (assemblyai 1.8 `RealTimeErrorCodes`, and the JS SDK's `InsufficientFunds`) keeps the
# v2 code 4002 "Insufficient Funds", so a client can tell it from a bad key and from 3009.
INSUFFICIENT_FUNDS = 4002
IDLE = 4031

CLOSE_CODES = {
    ErrorKind.AUTH: UNAUTHORIZED,
    ErrorKind.BAD_REQUEST: BAD_MESSAGE,
    ErrorKind.BAD_AUDIO: BAD_AUDIO,
    ErrorKind.RATE: BAD_AUDIO,
    ErrorKind.LIMIT: TOO_MANY_SESSIONS,
    ErrorKind.QUOTA: INSUFFICIENT_FUNDS,
    ErrorKind.EXPIRED: EXPIRED,
    ErrorKind.TIMEOUT: IDLE,
    ErrorKind.BUSY: TRY_AGAIN_LATER,
    ErrorKind.INTERNAL: SERVER_ERROR,
}

# Accepted ranges of numeric settings, in the query and in UpdateConfiguration alike.
_RANGES: dict[str, tuple[float, float]] = {
    "end_of_turn_confidence_threshold": (0.0, 1.0),
    "min_turn_silence": (0, 10000),
    "min_end_of_turn_silence_when_confident": (0, 10000),
    "max_turn_silence": (0, 60000),
    "vad_threshold": (0.0, 1.0),
}

# UpdateConfiguration / query names -> engine turn-setting names
_TURN_FIELDS: dict[str, tuple[str, type]] = {
    "end_of_turn_confidence_threshold": ("end_of_turn_confidence_threshold", float),
    "min_turn_silence": ("min_turn_silence_ms", int),
    "min_end_of_turn_silence_when_confident": ("min_turn_silence_ms", int),
    "max_turn_silence": ("max_turn_silence_ms", int),
    "vad_threshold": ("vad_threshold", float),
    "format_turns": ("format_turns", bool),
    "keyterms_prompt": ("keyterms", tuple),
    "prompt": ("prompt", str),
}


class State(Enum):
    OPEN = "open"  # Begin sent, audio flowing
    TERMINATING = "terminating"  # Terminate received: flushing the last turn
    CLOSED = "closed"  # Termination or an error close sent


# What each state allows (see `common.Machine`). Frames after the client's own end are dropped
# unparsed; after CLOSED the loop may still hand over a frame it read before it noticed the close
# (an engine failure closes the dialect while the loop waits for the next frame), and `error()`
# may come once more (the sender was cancelled between rendering the close and sending it).
TRANSITIONS: Transitions[State] = {
    State.OPEN: {
        Step.RECEIVE: State.OPEN,
        Step.TERMINATE: State.TERMINATING,  # Terminate
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


def parse_query(query: Mapping[str, str]) -> SessionConfig:
    """Validate the `/v3/ws` query string; unknown parameters are ignored (new SDKs add many)."""
    q = QueryReader(query, BAD_MESSAGE)
    encoding = q.choice("encoding", ENCODINGS, "pcm_s16le")
    sample_rate = q.int("sample_rate", None, 8000, 48000)
    if sample_rate is None:
        raise coded(
            ErrorKind.BAD_REQUEST,
            "Missing sample_rate: add sample_rate=16000 (any integer 8000-48000) to the URL",
            BAD_MESSAGE,
        )
    turn: dict[str, Any] = {"format_turns": q.bool("format_turns")}
    threshold = q.float(
        "end_of_turn_confidence_threshold", None, *_RANGES["end_of_turn_confidence_threshold"]
    )
    if threshold is not None:
        turn["end_of_turn_confidence_threshold"] = threshold
    min_silence = q.int("min_turn_silence", None, 0, 10000)
    if min_silence is None:
        min_silence = q.int("min_end_of_turn_silence_when_confident", None, 0, 10000)
    if min_silence is not None:
        turn["min_turn_silence_ms"] = min_silence
    max_silence = q.int("max_turn_silence", None, 0, 60000)
    if max_silence is not None:
        turn["max_turn_silence_ms"] = max_silence
    if "min_turn_silence_ms" in turn and "max_turn_silence_ms" in turn:
        turn["max_turn_silence_ms"] = max(turn["max_turn_silence_ms"], turn["min_turn_silence_ms"])
    vad = q.float("vad_threshold", None, *_RANGES["vad_threshold"])
    if vad is not None:
        turn["vad_threshold"] = vad
    keyterms = q.string_list("keyterms_prompt", MAX_KEYTERMS, MAX_KEYTERM_CHARS)
    if keyterms:
        turn["keyterms"] = keyterms
    if q.has("prompt"):
        if len(query["prompt"]) > MAX_PROMPT_CHARS:
            raise _bad_message(f"Invalid prompt: longer than {MAX_PROMPT_CHARS} characters")
        turn["prompt"] = query["prompt"]
    languages = q.string_list("language_codes") or q.string_list("language_code")
    if not languages and q.has("language"):
        languages = (query["language"].strip(),)
    language = pinned_language(languages)
    if language is not None:
        turn["language"] = language
    if q.bool("translate"):  # our extension: the English translation of each final turn
        turn["translate"] = True
    max_speakers = q.int("max_speakers", None, 1, MAX_SPEAKERS)
    inactivity = q.int("inactivity_timeout", None, 5, 3600)
    return SessionConfig(
        audio=AudioFormat(encoding=encoding, sample_rate=sample_rate, channels=1),
        turn=turn,
        inactivity_timeout_s=float(inactivity) if inactivity is not None else None,
        language_detection=q.bool("language_detection"),
        speaker_labels=q.bool("speaker_labels"),
        max_speakers=max_speakers,
        record=q.bool("record", True),
        model=query.get("speech_model") or None,
    )


def pinned_language(languages: tuple[str, ...] | list[str]) -> str | None:
    """The one language a client pinned (None: detect); unknown codes are refused."""
    if len(languages) != 1 or languages[0].lower() in ("multi", "auto"):
        return None
    language = languages[0].split("-")[0].lower()
    if language not in WHISPER_LANGUAGES:
        raise _bad_message(
            f"Invalid language code {quoted(languages[0])}: expected a code the model "
            "knows, e.g. en, es, fr, de, it, pt (or multi to detect it)"
        )
    return language


def _bad_message(reason: str) -> ProtocolError:
    return coded(ErrorKind.BAD_REQUEST, reason, BAD_MESSAGE)


def _json_type(value: Any) -> str:
    """How a non-string `type` is named in a reason (never its repr: it may be huge or deep)."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "true" if value else "false"
    return {int: "a number", float: "a number", list: "an array", dict: "an object"}.get(
        type(value), "a value"
    )


def _json_hint(data: bytes) -> str:
    """A hint for a binary frame that was meant as a text message."""
    head = data[:1]
    if head in (b"{", b"[") and data.rstrip()[-1:] in (b"}", b"]"):
        return " (this binary frame looks like JSON: send control messages as text frames)"
    return ""


def parse_update(message: dict[str, Any]) -> dict[str, Any]:
    """Fields of an UpdateConfiguration message as engine turn settings.

    Values are checked like the query's: numbers finite and in the same ranges, keyterms and
    prompt within their limits. Unknown fields and nulls are ignored, as the cloud does.
    """
    changes: dict[str, Any] = {}
    codes = message.get("language_codes")
    if codes is not None:
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise _bad_message("Invalid Message: language_codes must be a list of strings")
        changes["language"] = pinned_language(codes)
    for key, value in message.items():
        if key == "type" or key not in _TURN_FIELDS or value is None:
            continue
        if key == "min_end_of_turn_silence_when_confident" and (
            message.get("min_turn_silence") is not None
        ):
            continue  # the new name wins, in whatever order the two arrive
        name, kind = _TURN_FIELDS[key]
        if kind is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _bad_message(f"Invalid Message: {key} must be a list of strings")
            problem = list_problem(tuple(value), MAX_KEYTERMS, MAX_KEYTERM_CHARS)
            if problem:
                raise _bad_message(f"Invalid Message: {key}: {problem}")
            changes[name] = tuple(value)
        elif kind is bool:
            if not isinstance(value, bool):
                raise _bad_message(f"Invalid Message: {key} must be true or false")
            changes[name] = value
        elif kind is str:
            if not isinstance(value, str):
                raise _bad_message(f"Invalid Message: {key} must be a string")
            if len(value) > MAX_PROMPT_CHARS:
                raise _bad_message(
                    f"Invalid Message: {key} is longer than {MAX_PROMPT_CHARS} characters"
                )
            changes[name] = value
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _bad_message(f"Invalid Message: {key} must be a number")
            lo, hi = _RANGES[key]
            if not finite_number(value) or not lo <= value <= hi:
                raise _bad_message(f"Invalid Message: {key} must be a number between {lo} and {hi}")
            changes[name] = kind(value)
    return changes


class V3Protocol:
    """One v3 connection's protocol state."""

    def __init__(
        self,
        config: SessionConfig,
        clock: Callable[[], float] = time.monotonic,
        model_name: str | None = None,
    ) -> None:
        self.config = config
        self.model_name = model_name  # the served model, told in Begin's `configuration`
        self._machine = Machine("AssemblyAI v3", TRANSITIONS, State.OPEN)
        self.format_turns = bool(config.turn.get("format_turns", False))
        fmt = config.audio
        self._bytes_per_frame = BYTES_PER_SAMPLE[fmt.encoding] * fmt.channels
        self._control_rate = RateLimit(CONTROL_RATE, CONTROL_BURST, clock)
        self._short_rate = RateLimit(SHORT_FRAME_RATE, SHORT_FRAME_BURST, clock)
        self._held = b""  # short frames not yet sent on: less than MIN_CHUNK_MS of audio

    @property
    def state(self) -> State:
        return self._machine.state

    # ---------------------------------------------------------------- client -> server
    def receive_bytes(self, data: bytes) -> list[Command]:
        if not self._machine.allows(Step.RECEIVE):
            return []  # audio after Terminate is ignored
        fmt = self.config.audio
        if len(data) % self._bytes_per_frame:
            raise coded(
                ErrorKind.BAD_AUDIO,
                f"Invalid audio: {len(data)} bytes is not a whole number of {fmt.encoding} "
                f"samples ({self._bytes_per_frame} bytes each){_json_hint(data)}",
                BAD_AUDIO,
            )
        ms = chunk_ms(len(data), fmt.encoding, fmt.sample_rate, fmt.channels)
        if not data or ms > MAX_CHUNK_MS + 0.5:
            raise coded(
                ErrorKind.BAD_AUDIO,
                f"Input duration violation: {ms:.0f} ms. Expected between "
                f"{MIN_CHUNK_MS} and {MAX_CHUNK_MS} ms{_json_hint(data)}",
                BAD_AUDIO,
            )
        if ms < MIN_CHUNK_MS - 0.5 and not self._short_rate.allow():
            raise coded(
                ErrorKind.RATE,
                f"Input duration violation: more than {SHORT_FRAME_RATE:.0f} frames shorter "
                f"than {MIN_CHUNK_MS} ms a second (send {MIN_CHUNK_MS}-{MAX_CHUNK_MS} ms frames)",
                BAD_AUDIO,
            )
        self._held += data
        held_ms = chunk_ms(len(self._held), fmt.encoding, fmt.sample_rate, fmt.channels)
        if held_ms < MIN_CHUNK_MS - 0.5:
            return []  # a short frame: sent on with the next ones (or before Terminate)
        return self._release()

    def _release(self) -> list[Command]:
        """The audio held back from short frames, as one command (nothing if none is held)."""
        held, self._held = self._held, b""
        return [RawAudio(held)] if held else []

    def take_replies(self) -> list[object]:
        """This dialect answers client messages only through engine events: nothing to add."""
        return []

    def receive_text(self, text: str) -> list[Command]:
        if not self._machine.allows(Step.RECEIVE):
            return []  # flushing or closed: nothing a client sends matters, not even parsed
        if not self._control_rate.allow():
            raise coded(
                ErrorKind.RATE,
                f"Message rate exceeded: more than {CONTROL_RATE:.0f} text messages a second "
                "(KeepAlive once every few seconds is plenty)",
                BAD_AUDIO,
            )
        if len(text) > MAX_TEXT_CHARS:
            raise _bad_message(
                f"Invalid Message: a text frame of {len(text)} characters (control messages are "
                f"JSON objects of at most {MAX_TEXT_CHARS}; audio goes in binary frames)"
            )
        try:
            message = loads_json(text)
        except ValueError:
            raise _bad_message(f"Invalid JSON: {shown(text, 60)}") from None
        if not isinstance(message, dict):
            raise _bad_message(f"Invalid Message: {shown(text, 60)}")
        kind = message.get("type")
        if kind == "Terminate":
            self._machine.move(Step.TERMINATE)
            return [*self._release(), Terminate()]  # a short last frame is transcribed too
        if kind == "ForceEndpoint":
            return [*self._release(), ForceEndpoint()]
        if kind == "KeepAlive":
            return [KeepAlive()]
        if kind == "UpdateConfiguration":
            changes = parse_update(message)
            if "format_turns" in changes:
                self.format_turns = changes["format_turns"]
            return [UpdateConfig(changes)] if changes else []
        if kind is None and "audio_data" in message:
            raise _bad_message(
                f"Invalid Message: send audio as binary frames of raw {self.config.audio.encoding}"
                " bytes, not base64 in audio_data (that is the v2 API)"
            )
        shown_kind = shown(kind, 40) if isinstance(kind, str) else _json_type(kind)
        raise _bad_message(
            f"Invalid Message Type: {shown_kind} (expected Terminate, ForceEndpoint, "
            "KeepAlive or UpdateConfiguration)"
        )

    # ---------------------------------------------------------------- server -> client
    def render(self, event: Event) -> list[Outgoing]:
        self._machine.move(Step.RENDER)
        if isinstance(event, SessionStarted):
            begin: dict[str, Any] = {
                "type": "Begin",
                "id": event.session_id,
                "expires_at": int(event.expires_at),
            }
            if self.model_name:
                begin["configuration"] = {"model": self.model_name}
            return [SendJson(begin)]
        if isinstance(event, TurnUpdate):
            if event.formatted and not self.format_turns:
                return []  # the formatted re-send is only for clients that asked for it
            return [SendJson(self._turn(event))]
        if isinstance(event, SpeechStarted):
            return []  # optional in v3 and unknown to SDK 0.64: not sent
        if isinstance(event, SessionEnded):
            self._machine.move(Step.END)
            return [
                SendJson(
                    {
                        "type": "Termination",
                        "audio_duration_seconds": int(round(event.audio_ms / 1000)),
                        "session_duration_seconds": int(round(event.session_ms / 1000)),
                    }
                ),
                Close(NORMAL),
            ]
        if isinstance(event, Error):
            return self.error(ProtocolError.of(event.kind, event.message))
        return []

    def error(self, exc: ProtocolError) -> list[Outgoing]:
        """The Error message and the close that end a session badly."""
        if not self._machine.allows(Step.FAIL):
            return []  # already closed: nothing more to say
        self._machine.move(Step.FAIL)
        code = close_code_of(exc) or CLOSE_CODES.get(exc.kind, SERVER_ERROR)
        return [
            SendJson({"type": "Error", "error_code": code, "error": exc.reason}),
            Close(code, close_reason(exc.reason)),
        ]

    def _turn(self, update: TurnUpdate) -> dict[str, Any]:
        words = [
            {
                "start": int(w.start_ms),
                "end": int(w.end_ms),
                "text": w.text,
                "confidence": round(float(w.confidence), 4),
                "word_is_final": bool(w.final),
                **({"speaker": w.speaker} if self.config.speaker_labels and w.speaker else {}),
            }
            for w in update.words
        ]
        transcript = update.text if update.formatted else update.final_text
        message: dict[str, Any] = {
            "type": "Turn",
            "turn_order": int(update.turn_order),
            "turn_is_formatted": bool(update.formatted),
            "end_of_turn": bool(update.end_of_turn),
            "transcript": transcript,
            "end_of_turn_confidence": round(float(update.end_of_turn_confidence), 4),
            "words": words,
            "utterance": transcript if update.end_of_turn else "",
        }
        if self.config.language_detection and update.end_of_turn and update.language:
            message["language_code"] = update.language
            message["language_confidence"] = round(
                float(1.0 if update.language_confidence is None else update.language_confidence), 4
            )
        if self.config.speaker_labels and update.speaker:
            message["speaker_label"] = update.speaker
        if update.end_of_turn and update.translation is not None:
            message["translation"] = update.translation  # our extension (translate=true)
        return message

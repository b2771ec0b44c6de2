"""Deepgram live transcription (`/v1/listen` WebSocket), sans-I/O.

Theory of operation: `parse_options` reads the upgrade's query string (repeated keys for lists,
as the SDK sends them) into `DeepgramOptions` or raises `ProtocolError`, which the route answers
with an HTTP status before the upgrade, as the cloud does (400 bad parameters, 401 credentials).
`session_config` turns the options into the protocol-neutral `SessionConfig`. A
`DeepgramProtocol` then translates both ways: binary frames become `RawAudio` (any chunk size:
partial sample frames are carried over to the next frame), an empty binary frame or
`CloseStream` becomes `Terminate`, `Finalize` a marked `ForceEndpoint`, `KeepAlive` itself;
engine events become `Results`, `SpeechStarted`, `UtteranceEnd` and, at the end, `Metadata` and
close 1000. A text message that cannot be used is answered with Deepgram's `Error`
(`SchemaError`) and the stream goes on; `Configure` with `ConfigureSuccess`/`ConfigureFailure`.
Both go through `take_replies()`, so the session loop queues them in order with the engine's
events. Errors that end a stream close with Deepgram's codes: 1008 `DATA-0000` for audio that
cannot be used or a flood of messages, 1011 `NET-0001` after 10 s without audio or a message,
1011 `NET-0000` otherwise.

Turns and spans: the engine's turn is Deepgram's span. Interim `Results` (`is_final: false`)
carry the whole turn so far; the turn's end is one final `Results` (`is_final: true`) with
`speech_final: true` when silence ended it (unless `endpointing=false`), `from_finalize: true`
when a client `Finalize` did. Spans tile the stream: each starts where the channel's last final
ended. With `punctuate`/`smart_format` the final carries the engine's formatted re-send (the
beam decode of the whole turn), with `punctuated_word` on every word. Times are float seconds.
After `CloseStream` only the flush's final results go out, then `Metadata`. `UtteranceEnd`
follows a final once the audio heard (`AudioProgress`) lies `utterance_end_ms` past its last word
with no new word since: a gap on the audio clock, as the cloud measures it.

Streams without `encoding=` are WAV: the connection starts in AWAITING_FORMAT, holds Finalize
(KeepAlive goes through at once) until the first binary frame, reads the format from its header
and answers `AudioFormatSettled`, the held commands, then `RawAudio` of what follows the header.
A stream that is not WAV, or has several channels without `multichannel=true`, is closed 1008.
Any other message before the first audio ends the wait with the query's format, as the route
did before the session loop learned `AudioFormatSettled`.

States and their legal steps are the `TRANSITIONS` table; a render after the close is our bug
and raises `LocalProtocolError`. Options (shared with the pre-recorded API,
`deepgram_prerecorded`) are read and words rendered in `deepgram_options`, the WAV header and the
wait's bookkeeping in `deepgram_format`; this module holds the connection's state and messages.

Reference: shared/protocols/deepgram-listen.md.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from streamscribe.errors import PeerError, ProtocolError
from streamscribe.events import (
    AudioFormat,
    AudioFormatSettled,
    AudioProgress,
    Command,
    Error,
    ErrorKind,
    Event,
    Flushed,
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
    Word,
)
from streamscribe.protocols.common import (
    BYTES_PER_SAMPLE,
    IGNORED,
    Close,
    Machine,
    Outgoing,
    RateLimit,
    SendJson,
    Step,
    Transitions,
    close_reason,
    coded,
    list_problem,
    loads_json,
    shown,
)
from streamscribe.protocols.deepgram_format import (
    FormatWait,
    control_type,
    stream_format,
    wav_format,
)
from streamscribe.protocols.deepgram_options import (
    MAX_KEYTERM_CHARS,
    MAX_KEYTERMS,
    NO_AUDIO_TIMEOUT_S,
    DeepgramOptions,
    Params,
    alternative,
    created_stamp,
    model_info,
    parse_options,
    seconds,
    session_config,
    warnings,
)

__all__ = ["DeepgramProtocol", "parse_options", "parse_query", "session_config", "wav_format"]

MAX_TEXT_CHARS = 64 * 1024
CONTROL_RATE = 50.0
CONTROL_BURST = 100

# close codes and reason prefixes (protocol document §4)
NORMAL = 1000
POLICY = 1008
SERVER_ERROR = 1011
DATA_ERROR = "DATA-0000"
NET_ERROR = "NET-0000"
NET_TIMEOUT = "NET-0001"
# A spent daily audio allowance mid-stream. Deepgram refuses a project out of credit with HTTP
# 402 `ASR_PAYMENT_REQUIRED` (before the upgrade, `deepgram_options.HTTP_STATUS`); no close code
# for it is documented, so the close is a policy close (not 1011, which clients retry) whose
# reason starts with that same err_code.
PAYMENT_REQUIRED = "ASR_PAYMENT_REQUIRED"


def parse_query(params: Params) -> SessionConfig:
    """`parse_options` then `session_config`, for a stream whose encoding is in the query."""
    return session_config(parse_options(params))


# ---------------------------------------------------------------- the live protocol


class State(Enum):
    AWAITING_FORMAT = "awaiting_format"  # no encoding= in the query: the first frame's WAV header
    OPEN = "open"  # audio flowing
    CLOSING = "closing"  # CloseStream (or an empty frame) received: flushing the last turns
    CLOSED = "closed"  # Metadata or an error close sent


# What each state allows (see `common.Machine`). AWAITING_FORMAT settles (SETTLE) on the first
# binary frame's WAV header, or on the query's format when a message other than KeepAlive or
# Finalize comes first; until then commands are held. After CloseStream frames are dropped
# unparsed; after CLOSED the loop may still hand over a frame it read before it noticed the close
# (an engine failure closes the dialect while the loop waits for the next frame), and `error()`
# may come once more (the sender was cancelled between rendering the close and sending it).
TRANSITIONS: Transitions[State] = {
    State.AWAITING_FORMAT: {
        Step.RECEIVE: State.AWAITING_FORMAT,
        Step.SETTLE: State.OPEN,
        Step.RENDER: State.AWAITING_FORMAT,
        Step.END: State.CLOSED,
        Step.FAIL: State.CLOSED,
    },
    State.OPEN: {
        Step.RECEIVE: State.OPEN,
        Step.TERMINATE: State.CLOSING,  # CloseStream, or an empty binary frame
        Step.RENDER: State.OPEN,
        Step.END: State.CLOSED,
        Step.FAIL: State.CLOSED,
    },
    State.CLOSING: {
        Step.RECEIVE: IGNORED,
        Step.RENDER: State.CLOSING,
        Step.END: State.CLOSED,
        Step.FAIL: State.CLOSED,
    },
    State.CLOSED: {Step.RECEIVE: IGNORED, Step.FAIL: IGNORED},
}


class DeepgramProtocol:
    """One `/v1/listen` connection's protocol state.

    Without `encoding=` in the options the connection starts in AWAITING_FORMAT: `config.audio`
    is only the query's fallback until the first binary frame's WAV header settles the format
    (`AudioFormatSettled` goes out first, then the held commands, then the audio after the
    header). `clock` (seconds, monotonic) paces control messages; `now` stamps Metadata.
    """

    def __init__(
        self,
        config: SessionConfig,
        options: DeepgramOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.options = options or DeepgramOptions()
        waiting = self.options.encoding is None
        initial = State.AWAITING_FORMAT if waiting else State.OPEN
        self._machine = Machine("Deepgram", TRANSITIONS, initial)
        self._wait = FormatWait()
        self.request_id = str(uuid.uuid4())
        self.created = now()
        self._pending = b""
        self._skip = 0  # bytes of a WAV header still to drop from the audio
        self._frames = 0
        self._sha = hashlib.sha256()
        self._control_rate = RateLimit(CONTROL_RATE, CONTROL_BURST, clock)
        self._finalizes = 0
        self._forced_since_flush: set[int] = set()
        self._replies: list[Reply] = []
        self._keyterms = self.options.keyterms
        self._heard_ms = 0
        self.model_uuid, self.model_info = model_info(self.options.model)
        self._set_format(config.audio)

    def _set_format(self, fmt: AudioFormat) -> None:
        self.config = replace(self.config, audio=fmt)
        self.channels = fmt.channels
        self._frame_bytes = BYTES_PER_SAMPLE[fmt.encoding] * fmt.channels
        self._span_start_ms = [0] * fmt.channels  # where each channel's next span begins
        # UtteranceEnd: per channel, the end of the last word seen and of the last finalized
        # one, and whether a final is waiting for its gap
        self._last_word_ms = [0] * fmt.channels
        self._final_word_ms = [0] * fmt.channels
        self._utterance_open = [False] * fmt.channels

    @property
    def state(self) -> State:
        return self._machine.state

    @property
    def audio_ms(self) -> int:
        """Audio received so far, per channel."""
        return self._frames * 1000 // self.config.audio.sample_rate

    # ---------------------------------------------------------------- client -> server
    def receive_bytes(self, data: bytes) -> list[Command]:
        if not self._machine.allows(Step.RECEIVE):
            return []  # audio after CloseStream is ignored
        if self.state is State.AWAITING_FORMAT:
            if data:
                fmt, header = stream_format(data, self.options.multichannel)
                self._skip = header
                return [*self._settle(fmt), *self.receive_bytes(data)]
            return [*self._settle(self.config.audio), *self.receive_bytes(data)]
        if not data:
            self._machine.move(Step.TERMINATE)  # the legacy close: an empty binary frame
            return [Terminate()]
        if data[:1] == b"{" and len(data) <= 256 and data.rstrip()[-1:] == b"}":
            try:
                control = self._control_in_binary(data)
            except SchemaError as exc:
                self._reply(_schema_error_json(exc))
                return []
            if control is not None:
                return control
        self._sha.update(data)
        if self._skip:
            cut = min(self._skip, len(data))
            data, self._skip = data[cut:], self._skip - cut
        data = self._pending + data
        whole = len(data) - len(data) % self._frame_bytes
        self._pending = data[whole:]
        if not whole:
            return []
        self._frames += whole // self._frame_bytes
        return [RawAudio(data[:whole])]

    def _control_in_binary(self, data: bytes) -> list[Command] | None:
        """A control message sent as a binary frame (a common client slip) is still honoured."""
        try:
            message = loads_json(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        if isinstance(message, dict) and message.get("type") in (
            "KeepAlive",
            "Finalize",
            "CloseStream",
        ):
            return self._control(message, data.decode("utf-8"))
        return None

    def receive_text(self, text: str) -> list[Command]:
        """A control message; one that cannot be used is answered with Deepgram's `Error`
        (SchemaError) and the stream goes on. Only a flood of messages ends it (1008)."""
        if self.state is State.AWAITING_FORMAT:
            if control_type(text) == "KeepAlive":
                return [KeepAlive()]  # at once: the idle timer is reset before any audio
            if self._wait.hold(text):
                return []
            return self._settle(self.config.audio)  # the query's format, as before any WAV
        try:
            return self._receive_text(text)
        except SchemaError as exc:
            self._reply(_schema_error_json(exc))
            return []

    def _settle(self, fmt: AudioFormat) -> list[Command]:
        """Leave AWAITING_FORMAT with `fmt`: the format first, then the held messages' commands
        (parsed now, as if they had come after the format)."""
        self._machine.move(Step.SETTLE)
        self._set_format(fmt)
        commands: list[Command] = [AudioFormatSettled(fmt)]
        for text in self._wait.release():
            commands += self.receive_text(text)
        return commands

    def take_replies(self) -> list[Reply]:
        """Answers to the client's last message, for the session loop to queue in order."""
        replies, self._replies = self._replies, []
        return replies

    def _reply(self, data: dict[str, Any]) -> None:
        self._replies.append(Reply(data))

    def _receive_text(self, text: str) -> list[Command]:
        if not self._machine.allows(Step.RECEIVE):
            return []  # flushing or closed: nothing a client sends matters, not even parsed
        if not self._control_rate.allow():
            raise coded(
                ErrorKind.RATE,
                f"Too many messages: more than {CONTROL_RATE:.0f} text messages a second "
                "(a KeepAlive every few seconds is plenty)",
                POLICY,
            )
        if len(text) > MAX_TEXT_CHARS:
            raise SchemaError(
                f"A text frame of {len(text)} characters: control messages are small JSON "
                "objects and audio goes in binary frames",
                text,
            )
        try:
            message = loads_json(text)
        except ValueError:
            raise SchemaError("Could not parse the message as JSON", text) from None
        if not isinstance(message, dict):
            raise SchemaError("A control message must be a JSON object with a type", text)
        return self._control(message, text)

    def _control(self, message: dict[str, Any], text: str) -> list[Command]:
        kind = message.get("type")
        if kind == "KeepAlive":
            return [KeepAlive()]
        if kind == "CloseStream":
            self._machine.move(Step.TERMINATE)
            return [Terminate()]
        if kind == "Finalize":
            channel = message.get("channel")
            if channel is not None and (
                isinstance(channel, bool)
                or not isinstance(channel, int)
                or not 0 <= channel < self.channels
            ):
                raise SchemaError(
                    f"Finalize channel must be an integer from 0 to {self.channels - 1}", text
                )
            self._finalizes += 1
            return [ForceEndpoint(channel, marker=f"finalize-{self._finalizes}")]
        if kind == "Configure":
            return self._configure(message)
        named = shown(kind, 40) if isinstance(kind, str) else "missing"
        raise SchemaError(
            f"Unknown message type {named}: expected KeepAlive, Finalize, CloseStream or Configure",
            text,
        )

    def _configure(self, message: dict[str, Any]) -> list[Command]:
        """Configure (SDK v7): new keyterms take effect at once, answered ConfigureSuccess;
        what cannot be changed mid-stream is answered ConfigureFailure with the reason."""
        features = message.get("features")
        keyterms = message.get("keyterms")
        if features:
            self._reply(
                _configure_failure(
                    "CONFIGURE_INTERNAL_ERROR",
                    "Changing features mid-stream is not supported: set them in the URL "
                    "when connecting",
                )
            )
            return []
        if keyterms is None:  # omitted or null: the keyterms stay as they are
            self._reply({"type": "ConfigureSuccess", "keyterms": list(self._keyterms)})
            return []
        if not isinstance(keyterms, list) or not all(isinstance(k, str) for k in keyterms):
            self._reply(
                _configure_failure(
                    "CONFIGURE_KEYTERMS_NOT_SUPPORTED", "keyterms must be a list of strings"
                )
            )
            return []
        terms = tuple(k.strip() for k in keyterms if k.strip())
        if list_problem(terms, MAX_KEYTERMS, MAX_KEYTERM_CHARS):
            self._reply(
                _configure_failure(
                    "CONFIGURE_KEYTERM_LIMIT_EXCEEDED",
                    f"at most {MAX_KEYTERMS} keyterms of {MAX_KEYTERM_CHARS} characters",
                )
            )
            return []
        self._keyterms = terms  # the new list replaces the old, query keyterms included
        self._reply({"type": "ConfigureSuccess", "keyterms": list(terms)})
        return [UpdateConfig({"keyterms": terms})]

    # ---------------------------------------------------------------- server -> client
    def render(self, event: Event | Reply) -> list[Outgoing]:
        self._machine.move(Step.RENDER)
        if isinstance(event, Reply):
            data = event.data
            if data["type"].startswith("Configure"):
                data = {"type": data["type"], "request_id": self.request_id, **data}
            return [SendJson(data)]
        if isinstance(event, SessionStarted):
            self.request_id = event.session_id  # the stored session's id: read it back later
            return []  # Deepgram sends no greeting
        if isinstance(event, SpeechStarted):
            if not self.options.vad_events or self.state is not State.OPEN:
                return []
            message = {
                "type": "SpeechStarted",
                "channel": [event.channel],
                "timestamp": seconds(event.at_ms),
            }
            return [SendJson(message)]
        if isinstance(event, TurnUpdate):
            return self._turn(event)
        if isinstance(event, AudioProgress):
            self._heard_ms = max(self._heard_ms, event.audio_ms)
            return self._utterance_ends()
        if isinstance(event, Flushed):
            return self._flushed(event)
        if isinstance(event, SessionEnded):
            self._machine.move(Step.END)
            return [SendJson(self._metadata(event)), Close(NORMAL)]
        if isinstance(event, Error):
            return self.error(ProtocolError.of(event.kind, event.message))
        return []

    def _turn(self, update: TurnUpdate) -> list[Outgoing]:
        opts = self.options
        channel = update.channel
        if not update.end_of_turn:
            if update.words:  # the utterance goes on: no UtteranceEnd before its next final
                self._last_word_ms[channel] = max(self._last_word_ms[channel], update.end_ms)
                self._utterance_open[channel] = False
            if not opts.interim_results or not update.words or self.state is not State.OPEN:
                return []  # after CloseStream only the final results of the flush go out
            return [SendJson(self._results(channel, update.words, False, False, False))]
        if update.formatted != opts.formatted:
            return []  # the final is the unformatted end, or the formatted re-send after it
        forced = update.forced
        if forced:
            self._forced_since_flush.add(channel)
        message = self._results(
            channel,
            update.words,
            True,
            opts.endpointing and not forced,
            forced,
            update.language,
        )
        out: list[Outgoing] = [SendJson(message)]
        if update.words:
            self._last_word_ms[channel] = max(self._last_word_ms[channel], update.end_ms)
            self._final_word_ms[channel] = update.end_ms
            self._utterance_open[channel] = True
            out += self._utterance_ends()
        return out

    def _utterance_ends(self) -> list[Outgoing]:
        """UtteranceEnd for each channel whose last finalized word lies `utterance_end_ms` or
        more behind the audio heard (AudioProgress, queued behind the words of that audio)."""
        gap = self.options.utterance_end_ms
        if gap is None:
            return []
        out: list[Outgoing] = []
        for channel in range(self.channels):
            if self._utterance_open[channel] and (
                self._heard_ms - self._last_word_ms[channel] >= gap
            ):
                self._utterance_open[channel] = False
                message = {
                    "type": "UtteranceEnd",
                    "channel": [channel, self.channels],
                    "last_word_end": seconds(self._final_word_ms[channel]),
                }
                out.append(SendJson(message))
        return out

    def _flushed(self, event: Flushed) -> list[Outgoing]:
        """Every Finalize is answered: a channel whose turn it did not end (nothing was
        pending) gets an empty final result with `from_finalize: true`."""
        if not event.marker.startswith("finalize-"):
            return []
        targets = range(self.channels) if event.channel is None else [event.channel]
        out: list[Outgoing] = []
        for channel in targets:
            if channel in self._forced_since_flush:
                self._forced_since_flush.discard(channel)
                continue
            out.append(SendJson(self._results(channel, (), True, False, True)))
        return out

    def _results(
        self,
        channel: int,
        words: tuple[Word, ...],
        is_final: bool,
        speech_final: bool,
        from_finalize: bool,
        language: str | None = None,
    ) -> dict[str, Any]:
        start_ms = self._span_start_ms[channel]
        end_ms = max(
            [start_ms, *(w.end_ms for w in words)]
            + ([self.audio_ms] if from_finalize and not words else [])
        )
        if is_final:
            self._span_start_ms[channel] = end_ms
        punctuated = self.options.formatted
        lang = language if self.options.detect_language else None
        metadata: dict[str, Any] = {
            "request_id": self.request_id,
            "model_info": self.model_info,
            "model_uuid": self.model_uuid,
        }
        if self.options.extra:
            metadata["extra"] = dict(self.options.extra)
        return {
            "type": "Results",
            "channel_index": [channel, self.channels],
            "duration": seconds(end_ms - start_ms),
            "start": seconds(start_ms),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [alternative(words, punctuated, lang)]},
            "metadata": metadata,
        }

    def _metadata(self, ended: SessionEnded) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self._sha.hexdigest(),
            "created": created_stamp(self.created),
            "duration": seconds(ended.audio_ms),
            "channels": self.channels,
            "models": [self.model_uuid],
            "model_info": {self.model_uuid: self.model_info},
            **({"warnings": notes} if (notes := warnings(self.options)) else {}),
        }

    def error(self, exc: ProtocolError) -> list[Outgoing]:
        """The close that ends a session badly, with Deepgram's code and reason (the cloud
        sends no message first)."""
        if not self._machine.allows(Step.FAIL):
            return []  # already closed: nothing more to say
        self._machine.move(Step.FAIL)
        code, prefix = _close_for(exc)
        reason = timeout_reason() if exc.kind is ErrorKind.TIMEOUT else exc.reason
        return [Close(code, close_reason(f"{prefix} {reason}"))]


@dataclass(frozen=True)
class Reply:
    """An answer to a client message (Error, ConfigureSuccess, ConfigureFailure), queued by the
    session loop behind the events before it and rendered in order."""

    data: dict[str, Any]


class SchemaError(PeerError):
    """A text frame that is not a message this protocol knows; keeps the text for the reply.
    Raised and caught inside the protocol: the client gets an `Error` and the stream goes on."""

    def __init__(self, reason: str, text: str | None = None) -> None:
        super().__init__(ErrorKind.BAD_REQUEST, reason)
        self.text = text


def _schema_error_json(exc: SchemaError) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "Error",
        "variant": "SchemaError",
        "description": exc.reason,
        "code": DATA_ERROR,
    }
    if exc.text is not None:
        message["message"] = exc.text[:1000].encode("utf-8", "backslashreplace").decode()
    return message


def _configure_failure(code: str, description: str) -> dict[str, Any]:
    return {"type": "ConfigureFailure", "code": code, "description": description}


def _close_for(exc: ProtocolError) -> tuple[int, str]:
    if exc.kind is ErrorKind.TIMEOUT:
        return SERVER_ERROR, NET_TIMEOUT
    if exc.kind is ErrorKind.QUOTA:
        return POLICY, PAYMENT_REQUIRED
    if exc.kind in (ErrorKind.BAD_AUDIO, ErrorKind.BAD_REQUEST, ErrorKind.RATE, ErrorKind.AUTH):
        return POLICY, DATA_ERROR
    return SERVER_ERROR, NET_ERROR


def timeout_reason() -> str:
    """The NET-0001 explanation (the session loop's own wording names no message type)."""
    return (
        f"No audio received for {NO_AUDIO_TIMEOUT_S:.0f} s: send audio or "
        '{"type": "KeepAlive"} every few seconds'
    )

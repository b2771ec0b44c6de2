"""Azure Speech SDK's USP WebSocket protocol (as a Speech container speaks it), sans-I/O.

Theory of operation. An Azure Speech SDK (`SpeechConfig(host="ws://HOST:PORT")`) opens one
WebSocket per recognizer with subprotocol `USP`; the path names the recognizer (`PATHS`). Over
it the SDK runs *requests*, each named by an `X-RequestId` header: a `speech.context` text frame
(what to recognize: mode, language, diarization, output format, translation targets), then
binary `audio` frames, the first holding a WAV header, the last one empty (end of audio). We
answer each request with `turn.start`, then per engine turn `speech.startDetected`, hypotheses
and one phrase, and at the end `speech.endDetected` and `turn.end`; message bodies are
`azure_usp_results.py`, the frame codec `azure_usp_frames.py`.

How a request ends. The client's empty audio frame becomes `ForceEndpoint(marker=request id)`;
when the engine answers `Flushed` every phrase of the request has been sent, and we close the
request with an `EndOfDictation` phrase, `speech.endDetected` and `turn.end`. A single-shot
request (`recognize_once`: the interactive path, or mode `INTERACTIVE`) ends at its first phrase
instead. Continuous recognizers then open the next request on the same socket.

Replay. The SDK keeps the audio no phrase has acknowledged yet (a phrase acknowledges up to its
`Offset + Duration`) and sends it again at the start of its next request. The engine has already
heard that audio, so each request starts by skipping what the engine has past the last
acknowledged point, and its offsets count from that point. `EndOfDictation` acknowledges the
whole request, so continuous recognition never replays; `recognize_once` replays the audio after
its phrase, which is exactly the next utterance. Phrases finished between two requests are held
and sent after the next `turn.start`.

Errors. The SDK reconnects, again and again, after most closes; it gives up at once, raising
`canceled` with the close reason as `error_details`, on close 1007 (`BadRequest`), 4429
(`TooManyRequests`) and 4000 (`ConnectionFailure`), so those are the only codes we send
(`CLOSE_CODES`). Bad credentials are refused before the upgrade with HTTP 401, which the SDK
reports as `AuthenticationFailure` (the route does that).

States are named (`State`) and the client's steps are a table (`TRANSITIONS`); a step the table
does not allow is the client's mistake (close 1007 naming the state).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from streamscribe.errors import ProtocolError
from streamscribe.events import (
    AudioFormat,
    AudioFormatSettled,
    Command,
    EndReason,
    Error,
    ErrorKind,
    Flushed,
    ForceEndpoint,
    RawAudio,
    SessionConfig,
    SessionEnded,
    SpeechStarted,
    TurnUpdate,
)
from streamscribe.protocols import azure_usp_results as results
from streamscribe.protocols.azure_usp_frames import (
    BAD_REQUEST_CLOSE,
    UspMessage,
    bad,
    frame,
    parse_binary,
    parse_text,
    parse_wave_header,
)
from streamscribe.protocols.azure_usp_handshake import (
    Context,
    Handshake,
    Recognizer,
    read_context,
    session_config,
)
from streamscribe.protocols.common import Close, Outgoing, close_code_of, close_reason

NORMAL = 1000
CONNECTION_FAILURE = 4000  # the SDK: ConnectionFailure, no reconnect
TOO_MANY_REQUESTS = 4429  # the SDK: TooManyRequests, no reconnect
CLOSE_CODES = {
    ErrorKind.AUTH: BAD_REQUEST_CLOSE,  # only after the upgrade; before it: HTTP 401
    ErrorKind.BAD_REQUEST: BAD_REQUEST_CLOSE,
    ErrorKind.BAD_AUDIO: BAD_REQUEST_CLOSE,
    ErrorKind.RATE: TOO_MANY_REQUESTS,
    ErrorKind.LIMIT: TOO_MANY_REQUESTS,
    # A spent daily allowance. The SDK's own quota code, CancellationErrorCode.Forbidden ("the
    # free subscription used by the request ran out of quota"), is not reachable by a close
    # code: HTTP 403 at the upgrade reads as AuthenticationFailure, other 4xxx closes as
    # ConnectionFailure, and a `speech.phrase` with RecognitionStatus Forbidden did not cancel
    # (SDK 1.53, tried). 4429 ends it at once; the reason in `error_details` names the quota.
    ErrorKind.QUOTA: TOO_MANY_REQUESTS,
    ErrorKind.BUSY: TOO_MANY_REQUESTS,
    ErrorKind.TIMEOUT: CONNECTION_FAILURE,
    ErrorKind.EXPIRED: CONNECTION_FAILURE,
    ErrorKind.INTERNAL: CONNECTION_FAILURE,
}


class State(Enum):
    AWAITING_CONTEXT = "awaiting speech.context"  # connected: the first request's context
    READY = "ready"  # a request's context came: its first audio frame (WAV header) next
    STREAMING = "streaming"  # the request's audio flows
    FLUSHING = "flushing"  # its audio ended: the last phrases are on their way
    IDLE = "idle"  # the request is over (turn.end sent or on its way): the next context
    CLOSED = "closed"  # the end or an error close was rendered


class Input(Enum):
    CONTEXT = "speech.context"
    AUDIO = "audio"
    END_OF_AUDIO = "the end of audio"
    SERVICE_END = "the request's end (ours)"  # a single-shot phrase or the flush was sent


IGNORE = "ignore"  # legal, changes nothing: audio of a request we already ended
TRANSITIONS: dict[State, dict[Input, State | str]] = {
    State.AWAITING_CONTEXT: {Input.CONTEXT: State.READY},
    State.READY: {Input.AUDIO: State.STREAMING, Input.END_OF_AUDIO: State.FLUSHING},
    State.STREAMING: {
        Input.AUDIO: State.STREAMING,
        Input.END_OF_AUDIO: State.FLUSHING,
        Input.SERVICE_END: State.IDLE,
    },
    State.FLUSHING: {
        Input.AUDIO: IGNORE,
        Input.END_OF_AUDIO: IGNORE,  # said twice
        Input.SERVICE_END: State.IDLE,
    },
    State.IDLE: {
        Input.CONTEXT: State.READY,
        Input.AUDIO: IGNORE,
        Input.END_OF_AUDIO: IGNORE,
        Input.SERVICE_END: IGNORE,
    },
    State.CLOSED: {i: IGNORE for i in Input},
}


# ------------------------------------------------------------------ the connection


@dataclass
class _Request:
    id: str
    single_shot: bool
    base_ms: int = 0  # engine time of the request's first audio sample
    end_ms: int | None = None  # engine time when its end of audio came
    ended: bool = False  # its turn.end has been rendered
    phrases: int = 0


@dataclass(frozen=True, eq=False)
class TurnStart:
    """Our answer to a request's first audio frame (queued with the engine's events)."""

    request: _Request


class UspProtocol:
    """One USP connection: requests in, engine events out as USP messages."""

    def __init__(self, handshake: Handshake) -> None:
        self.handshake = handshake
        self.state = State.AWAITING_CONTEXT
        self.context: Context | None = None
        self.audio: AudioFormat | None = None
        self.request: _Request | None = None  # the client's current request (receive side)
        self.active: _Request | None = None  # the request being answered (render side)
        self.fed_frames = 0  # sample frames handed to the engine
        self.acked_frames = 0  # how far the client counts its audio as acknowledged
        self._skip = 0  # bytes of replayed audio still to drop
        self._carry = b""
        self._header_bytes = 0  # the WAV header's length in the request's first audio frame
        self._replies: list[object] = []
        self._held: list[TurnUpdate] = []
        self._guests = results.GuestNames()

    # ---------------------------------------------------------------- bookkeeping
    def _step(self, step: Input) -> bool:
        """Move along the table; False for a step that is legal but ignored."""
        target = TRANSITIONS[self.state].get(step)
        if target is None:
            raise bad(f"Unexpected {step.value} in state {self.state.value}")
        if target == IGNORE:
            return False
        self.state = target  # type: ignore[assignment]
        return True

    @property
    def awaiting_context(self) -> bool:
        return self.state is State.AWAITING_CONTEXT

    def session_config(self) -> SessionConfig:
        if self.context is None:
            raise bad("No speech.context yet")
        return session_config(self.context)

    def _ms(self, frames: int) -> int:
        rate = self.audio.sample_rate if self.audio else 16000
        return frames * 1000 // rate

    def _frames(self, ms: int) -> int:
        rate = self.audio.sample_rate if self.audio else 16000
        return ms * rate // 1000

    @property
    def _frame_bytes(self) -> int:
        fmt = self.audio or AudioFormat()
        return (2 if fmt.encoding == "pcm_s16le" else 1) * fmt.channels

    # ---------------------------------------------------------------- client -> server
    def receive_text(self, text: str) -> list[Command]:
        if self.state is State.CLOSED:
            return []
        message = parse_text(text)
        if message.path == "speech.context":
            return self._context(message)
        if message.path == "speech.config":
            message.json()  # checked, nothing in it changes what we do
        return []  # telemetry and the like

    def _context(self, message: UspMessage) -> list[Command]:
        body = message.json()
        request_id = message.request_id
        if not request_id:
            raise bad("Invalid speech.context: no X-RequestId header")
        first = self.context is None
        self._step(Input.CONTEXT)
        if first:
            self.context = read_context(body, self.handshake)
        assert self.context is not None
        self.request = _Request(request_id, self.context.single_shot)
        return []

    def receive_bytes(self, data: bytes) -> list[Command]:
        if self.state is State.CLOSED:
            return []
        message = parse_binary(data)
        if message.path != "audio":
            return []
        request = self.request
        if self.state is State.AWAITING_CONTEXT or request is None:
            raise bad("Unexpected audio before speech.context")
        if message.request_id != request.id:
            return []  # audio of a request that is already over
        payload = message.body
        assert isinstance(payload, bytes)
        if not payload:
            return self._end_of_audio(request)
        commands: list[Command] = []
        if self.state is State.READY:
            commands += self._start(request, payload)
            payload = payload[self._header_bytes :]
        elif not self._step(Input.AUDIO):
            return []
        return commands + self._samples(payload)

    def _start(self, request: _Request, payload: bytes) -> list[Command]:
        header = parse_wave_header(payload)
        self._header_bytes = header.data_offset
        commands: list[Command] = []
        if self.audio is None:
            self.audio = header.audio
            commands.append(AudioFormatSettled(header.audio))
        elif header.audio != self.audio:
            raise bad(
                "The audio format cannot change between requests of one connection "
                f"({self.audio.sample_rate} Hz, then {header.audio.sample_rate} Hz)"
            )
        self._step(Input.AUDIO)
        self._begin(request)
        return commands

    def _begin(self, request: _Request) -> None:
        """The request's audio starts at the last acknowledged point; what the engine heard past
        it will come again (the SDK replays it) and is skipped."""
        self.acked_frames = min(self.acked_frames, self.fed_frames)
        request.base_ms = self._ms(self.acked_frames)
        self._skip = (self.fed_frames - self.acked_frames) * self._frame_bytes
        self._carry = b""
        self._replies.append(TurnStart(request))

    def _samples(self, payload: bytes) -> list[Command]:
        if self._skip:
            dropped = min(self._skip, len(payload))
            self._skip -= dropped
            payload = payload[dropped:]
        data = self._carry + payload
        whole = len(data) - len(data) % self._frame_bytes
        self._carry = data[whole:]
        if not whole:
            return []
        self.fed_frames += whole // self._frame_bytes
        return [RawAudio(data[:whole])]

    def _end_of_audio(self, request: _Request) -> list[Command]:
        was_ready = self.state is State.READY
        if not self._step(Input.END_OF_AUDIO):
            return []
        if was_ready:
            if self.audio is None:
                raise bad("Invalid audio: a request ended before its WAV header")
            self._begin(request)
        request.end_ms = self._ms(self.fed_frames)
        return [ForceEndpoint(marker=request.id)]

    def take_replies(self) -> list[object]:
        replies, self._replies = self._replies, []
        return replies

    # ---------------------------------------------------------------- server -> client
    def render(self, event: object) -> list[Outgoing]:
        if self.state is State.CLOSED:
            return []
        if isinstance(event, TurnStart):
            return self._turn_start(event.request)
        if isinstance(event, TurnUpdate):
            return self._turn(event)
        if isinstance(event, SpeechStarted):
            request = self._open()
            if request is None:
                return []
            offset = results.ticks(event.at_ms - request.base_ms)
            return [frame("speech.startDetected", request.id, {"Offset": offset})]
        if isinstance(event, Flushed):
            request = self._open()
            if request is None or request.id != event.marker:
                return []
            return self._request_end(request)
        if isinstance(event, SessionEnded):
            return self._session_end(event)
        if isinstance(event, Error):
            return self.error(ProtocolError.of(event.kind, event.message))
        return []

    def _open(self) -> _Request | None:
        request = self.active
        return None if request is None or request.ended else request

    def _turn_start(self, request: _Request) -> list[Outgoing]:
        self.active = request
        out = [frame("turn.start", request.id, {"context": {"serviceTag": request.id}})]
        held, self._held = self._held, []
        for update in held:
            out += self._turn(update)
        return out

    def _turn(self, update: TurnUpdate) -> list[Outgoing]:
        request = self._open()
        final = update.end_of_turn and (update.formatted or not update.words)
        if request is None:
            if final:
                self._held.append(update)  # said between two requests: the next one gets it
            return []
        if not update.end_of_turn:
            return self._hypothesis(request, update) if update.words else []
        if not final:
            return []  # the formatted re-send of this turn follows: that is the phrase
        return self._phrase(request, update)

    @property
    def _recognizer(self) -> Recognizer:
        return self.context.recognizer if self.context else Recognizer.SPEECH

    @property
    def _phrase_path(self) -> str:
        translation = self._recognizer is Recognizer.TRANSLATION
        return "translation.phrase" if translation else "speech.phrase"

    def _speaker(self, update: TurnUpdate, final: bool) -> dict[str, Any]:
        if self._recognizer is not Recognizer.CONVERSATION:
            return {}
        label = update.speaker if final and self.context and self.context.diarization else None
        return {"SpeakerId": self._guests(label)}

    def _language(self, update: TurnUpdate) -> dict[str, Any]:
        """`PrimaryLanguage` when the client asked for detection among candidates."""
        context = self.context
        if context is None or not context.languages:
            return {}
        fallback = context.language or context.languages[0]
        return {"PrimaryLanguage": results.primary_language(update, context.languages, fallback)}

    def _channel(self, update: TurnUpdate) -> dict[str, Any]:
        return {"Channel": update.channel} if self.audio and self.audio.channels > 1 else {}

    def _hypothesis(self, request: _Request, update: TurnUpdate) -> list[Outgoing]:
        extra = {**self._speaker(update, False), **self._language(update)}
        body = results.hypothesis(update, request.base_ms, **extra)
        if self._recognizer is Recognizer.TRANSLATION:
            body["Translation"] = {"TranslationStatus": "Success", "Translations": []}
            return [frame("translation.hypothesis", request.id, body)]
        return [frame("speech.hypothesis", request.id, body)]

    def _phrase(self, request: _Request, update: TurnUpdate) -> list[Outgoing]:
        context = self.context
        assert context is not None
        extra = {**self._speaker(update, True), **self._language(update), **self._channel(update)}
        if not update.words:
            # an empty turn: the client saw hypotheses of it, and nothing was recognized
            return self._close_phrase(request, update, results.no_match(0, 0, **extra))
        end_ms = update.end_ms
        if self._recognizer is Recognizer.TRANSLATION:
            body = results.phrase(update, request.base_ms, **extra)
            body["Text"] = update.text
            english = update.language == "en" or (context.language or "").lower().startswith("en")
            translation = update.text if english else update.translation
            body["Translation"] = results.translations(translation, context.targets)
            out = [frame("translation.phrase", request.id, body)]
        else:
            out = []
            for part in self._phrases(request, update):
                extra = {**extra, **self._speaker(part, True)}
                body = results.phrase(
                    part,
                    request.base_ms,
                    detailed=context.detailed,
                    word_timings=context.word_timings,
                    **extra,
                )
                out.append(frame("speech.phrase", request.id, body))
        request.phrases += 1
        self.acked_frames = max(self.acked_frames, self._frames(end_ms))
        if request.single_shot:
            end = results.ticks(end_ms - request.base_ms)
            out = [frame("speech.endDetected", request.id, {"Offset": end}), *out]
            out += self._finish(request)
        return out

    def _phrases(self, request: _Request, update: TurnUpdate) -> list[TurnUpdate]:
        """A conversation transcriber's phrases end where the speaker changes."""
        context = self.context
        split = (
            self._recognizer is Recognizer.CONVERSATION
            and context is not None
            and context.diarization
            and not request.single_shot
        )
        return results.speaker_phrases(update) if split else [update]

    def _close_phrase(
        self, request: _Request, update: TurnUpdate, body: dict[str, Any]
    ) -> list[Outgoing]:
        path = self._phrase_path
        if not request.single_shot:
            return [frame(path, request.id, body)]
        return [frame(path, request.id, body), *self._finish(request)]

    def _request_end(self, request: _Request) -> list[Outgoing]:
        """The request's end of audio is flushed: every phrase of it has been sent."""
        end_ms = request.end_ms if request.end_ms is not None else self._ms(self.fed_frames)
        duration = max(0, end_ms - request.base_ms)
        out = [frame("speech.endDetected", request.id, {"Offset": results.ticks(duration)})]
        path = self._phrase_path
        if request.single_shot and not request.phrases:
            out.append(frame(path, request.id, results.no_match(0, duration)))
        else:
            out.append(frame(path, request.id, results.end_of_dictation(duration)))
        self.acked_frames = max(self.acked_frames, self._frames(end_ms))
        return out + self._finish(request)

    def _finish(self, request: _Request) -> list[Outgoing]:
        request.ended = True
        if self.request is request:
            self._step(Input.SERVICE_END)
        return [frame("turn.end", request.id, {})]

    def _session_end(self, event: SessionEnded) -> list[Outgoing]:
        request = self._open()
        between = self._between_requests
        out: list[Outgoing] = []
        if request is not None:
            out += self._finish(request)
        self.state = State.CLOSED
        if event.reason is EndReason.TERMINATED or between:
            return [*out, Close(NORMAL)]
        reason = f"Session ended: {event.reason}"
        return [*out, Close(CONNECTION_FAILURE, reason)]

    def error(self, exc: ProtocolError) -> list[Outgoing]:
        """The close that ends a session badly; its reason is what `canceled` shows."""
        if self.state is State.CLOSED:
            return []
        between = self._between_requests
        self.state = State.CLOSED
        if between and exc.kind in (ErrorKind.TIMEOUT, ErrorKind.EXPIRED):
            return [Close(NORMAL, close_reason(exc.reason))]  # nothing to cancel: a quiet close
        code = close_code_of(exc) or CLOSE_CODES.get(exc.kind, CONNECTION_FAILURE)
        return [Close(code, close_reason(exc.reason))]

    @property
    def _between_requests(self) -> bool:
        """No request in progress: the SDK holds the socket open for its next recognition.
        A close now is not an error to the application; the SDK reconnects when it needs to."""
        return self.state is State.IDLE and (self.active is None or self.active.ended)

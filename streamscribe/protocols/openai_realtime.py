"""OpenAI Realtime transcription session (`/v1/realtime?intent=transcription`), sans-I/O.

Theory of operation. Every frame is text JSON; audio arrives base64 inside
`input_audio_buffer.append` as 16-bit PCM at 24 kHz (the session loop resamples it), or as G.711
(`audio/pcmu`, `audio/pcma`, 8 kHz) once a `session.update` has named it: the dialect then
answers `AudioFormatSettled` and the loop decodes what follows that way. The format is settled
before the first append; an update that would change it afterwards is refused (an `error`
event, nothing applied, the session goes on), as audio already buffered cannot change its
format. The session configures itself after connecting (`session.update`, or the beta
`transcription_session.update`; see `openai_realtime_session.py`), so its settings reach the
engine as `UpdateConfig` commands.

Items. Each user utterance is an item (`item_...`). With server VAD an item opens at the engine's
`SpeechStarted` (`input_audio_buffer.speech_started`) and is committed when the engine ends the turn
(`speech_stopped`, `committed`). With `turn_detection: null` only the client commits:
`input_audio_buffer.commit` becomes `ForceEndpoint(marker)`, and the item completes when the engine
answers `Flushed(marker)`, i.e. once every word before the commit is final. `clear` ends the turn
the same way but discards it. Each item ends with
`conversation.item.input_audio_transcription.completed`, carrying the turn's final, cased and
punctuated transcript (the engine's formatted turn).

Deltas only ever add text. `...transcription.delta` carries the words the engine has marked final
since the last delta (never tentative words, which may still change), so a client that appends
deltas never has to take anything back. They come while the speaker is still talking, before the
item is committed. As in the cloud, the deltas of an item add up to exactly its `completed`
transcript: a sentence starts with a capital, and when the engine's formatted turn ends with
`.`, `?` or `!`, that mark is one last delta. Words the final decode changed after they went out
as deltas stay as they were sent (a delta is never taken back).

Answers to client messages (`session.updated`, `cleared`, `committed` after a commit, `error`)
are not sent at once: `take_replies()` hands them to the session loop, which queues them with the
engine's events, and `render` turns them into frames in that order. So item bookkeeping happens in
one place, in the order the client will read it. Mistakes in a client message are answered with
an `error` event (OpenAI's shape, echoing the client's `event_id`) and the session goes on; only a
flood of messages or a server-side failure ends it (an `error` event, then a close).

Reference: shared/protocols/openai-transcription.md §3.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from streamscribe.errors import ProtocolError, ServerRefusal
from streamscribe.events import (
    AudioFormat,
    AudioFormatSettled,
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
    SpeechStarted,
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
    loads_json,
    shown,
)
from streamscribe.protocols.openai_common import OpenAIError, spoken_text, word_logprobs
from streamscribe.protocols.openai_realtime_session import (
    SAMPLE_RATE,
    RealtimeSettings,
    beta_session,
    engine_turn,
    ga_session,
    is_ga_layout,
    parse_session,
)

MIN_COMMIT_MS = 100  # a shorter buffer cannot be committed (the cloud's rule)
SENTENCE_END = (".", "?", "!")
CHUNK_MS = 100  # long appends reach the engine in pieces of this size
# Audio comes in text frames too, so the limit counts every frame: 50 ms appends are 20 a second.
MESSAGE_RATE = 200.0
MESSAGE_BURST = 400

NORMAL = 1000
GOING_AWAY = 1001
POLICY = 1008
SERVER_FAULT = 1011
TRY_AGAIN_LATER = 1013
CLOSE_CODES = {
    ErrorKind.AUTH: POLICY,
    ErrorKind.BAD_REQUEST: POLICY,
    ErrorKind.BAD_AUDIO: POLICY,
    ErrorKind.RATE: POLICY,
    ErrorKind.LIMIT: POLICY,
    ErrorKind.QUOTA: POLICY,  # the error event before it says insufficient_quota
    ErrorKind.TIMEOUT: NORMAL,  # the error event says why; the SDK's iterator ends cleanly
    ErrorKind.EXPIRED: NORMAL,
    ErrorKind.BUSY: TRY_AGAIN_LATER,
    ErrorKind.INTERNAL: SERVER_FAULT,
}

# What this dialect accepts but does not do exactly as the cloud does (listed by /v1/info)
APPROXIMATED = {
    "noise_reduction": "accepted, not applied (the session object says null)",
    "transcription.model": "a served model's name picks it; others mean the default model",
}

CONVERSATION_EVENTS = (
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.delete",
    "conversation.item.truncate",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
)


class State(Enum):
    OPEN = "open"
    CLOSED = "closed"  # an error close or the end was rendered: nothing more goes out


# What each state allows (see `common.Machine`). After CLOSED the loop may still hand over a
# frame it read before it noticed the close (an engine failure closes the dialect while the loop
# waits for the next frame), and `error()` may come once more (the sender was cancelled between
# rendering the close and sending it); both do nothing. Rendering after CLOSED is our bug.
TRANSITIONS: Transitions[State] = {
    State.OPEN: {
        Step.RECEIVE: State.OPEN,
        Step.RENDER: State.OPEN,
        Step.END: State.CLOSED,
        Step.FAIL: State.CLOSED,
    },
    State.CLOSED: {Step.RECEIVE: IGNORED, Step.FAIL: IGNORED},
}


def new_id(prefix: str) -> str:
    """An id in the cloud's style: `event_...`, `item_...`, `sess_...`."""
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass(frozen=True)
class Handshake:
    """What the upgrade request says: dialect, a browser's key, the subprotocol to select."""

    beta: bool
    api_key: str | None  # from `openai-insecure-api-key.<KEY>` (browsers cannot set headers)
    subprotocol: str | None  # "realtime" when the client offered it


def parse_handshake(headers: Mapping[str, str], subprotocols: Sequence[str]) -> Handshake:
    """Read the dialect (beta: `OpenAI-Beta: realtime=v1` or its subprotocol) and any key."""
    beta_header = headers.get("openai-beta", "") or ""
    beta = "realtime=v1" in beta_header.replace(" ", "").lower()
    api_key = None
    for proto in subprotocols:
        if proto == "openai-beta.realtime-v1":
            beta = True
        elif proto.startswith("openai-insecure-api-key."):
            api_key = proto.split(".", 1)[1] or None
    return Handshake(beta, api_key, "realtime" if "realtime" in subprotocols else None)


def session_config(query: Mapping[str, str]) -> SessionConfig:
    """The session's starting configuration; refuses a conversation (non-transcription) session."""
    intent = (query.get("intent") or "").strip()
    if intent != "transcription":
        raise OpenAIError(
            "This server runs Realtime transcription sessions only: connect with "
            "?intent=transcription (client.realtime.connect(extra_query={'intent': "
            "'transcription'}))",
            param="intent",
            code="unsupported_intent",
        )
    settings = RealtimeSettings()
    return SessionConfig(
        audio=AudioFormat("pcm_s16le", SAMPLE_RATE, 1),
        turn={**engine_turn(settings), "format_turns": True},
        model=(query.get("model") or None),
    )


# ---------------------------------------------------------------- notes (answers, in order)


@dataclass(frozen=True)
class _Reply:
    """An answer to a client message, queued by the session loop and rendered in order."""

    kind: str  # "error" | "updated" | "commit" | "clear"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Item:
    """One user utterance: what has been said about it so far."""

    id: str
    marker: str | None = None  # the commit/clear marker it waits for
    discard: bool = False  # cleared: nothing more is said about it
    started: bool = False  # speech_started sent
    committed: bool = False
    text: str = ""  # the deltas sent so far, joined: what `completed` will say
    words: list[Word] = field(default_factory=list)  # final words sent as deltas
    turn: int | None = None  # engine turn being streamed
    sent: int = 0  # final words of that turn already sent
    start_ms: int | None = None
    end_ms: int = 0


class RealtimeProtocol:
    """One Realtime transcription connection's protocol state."""

    def __init__(
        self,
        config: SessionConfig,
        *,
        beta: bool = False,
        multilingual: bool = True,
        model_name: str = "the server's model",
        make_id: Callable[[str], str] = new_id,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.beta = beta
        self.multilingual = multilingual
        self.model_name = model_name
        self.settings = RealtimeSettings(model=config.model or "whisper-1")
        self._machine = Machine("OpenAI Realtime", TRANSITIONS, State.OPEN)
        self._make_id = make_id
        self._rate = RateLimit(MESSAGE_RATE, MESSAGE_BURST, clock)
        self._replies: list[_Reply] = []
        self._buffered_bytes = 0
        self._appended = False  # audio has come: the input format is fixed from now on
        self._markers = 0
        # render side: settings and items as the client has heard of them, in order
        self._rendered = self.settings
        self._manual = self.settings.manual
        self._session_id = ""
        self._expires_at = 0
        self._current: _Item | None = None
        self._awaiting: deque[_Item] = deque()
        self._last_committed: str | None = None

    @property
    def state(self) -> State:
        return self._machine.state

    # ---------------------------------------------------------------- client -> server
    def take_replies(self) -> list[_Reply]:
        """Answers to the messages received so far, for the session loop to queue in order."""
        replies, self._replies = self._replies, []
        return replies

    def receive_bytes(self, data: bytes) -> list[Command]:
        if self._machine.allows(Step.RECEIVE):
            self._refuse(
                OpenAIError(
                    "Binary frames are not part of the Realtime protocol: send audio as base64 "
                    "in input_audio_buffer.append text events",
                    code="invalid_message",
                )
            )
        return []

    def receive_text(self, text: str) -> list[Command]:
        if not self._machine.allows(Step.RECEIVE):
            return []
        if not self._rate.allow():
            raise ServerRefusal(
                ErrorKind.RATE,
                f"Message rate exceeded: more than {MESSAGE_RATE:.0f} events a second "
                "(append audio in chunks of 20 ms or more)",
            )
        try:
            message = loads_json(text)
        except ValueError:
            self._refuse(
                OpenAIError(f"Invalid JSON in client event: {shown(text, 60)}", code="invalid_json")
            )
            return []
        if not isinstance(message, dict):
            self._refuse(OpenAIError("A client event must be a JSON object", code="invalid_json"))
            return []
        event_id = message.get("event_id") if isinstance(message.get("event_id"), str) else None
        kind = message.get("type")
        try:
            return self._dispatch(kind, message, event_id)
        except OpenAIError as exc:
            self._refuse(exc, event_id)
            return []

    def _dispatch(self, kind: Any, message: dict[str, Any], event_id: str | None) -> list[Command]:
        if kind == "input_audio_buffer.append":
            return self._append(message.get("audio"))
        if kind == "input_audio_buffer.commit":
            per_ms = self._bytes_per_ms()
            if self._buffered_bytes < MIN_COMMIT_MS * per_ms:
                raise OpenAIError(
                    f"Error committing input audio buffer: buffer too small. Expected at least "
                    f"{MIN_COMMIT_MS}ms of audio, but buffer only has "
                    f"{self._buffered_bytes / per_ms:.2f}ms of audio.",
                    code="input_audio_buffer_commit_empty",
                )
            return self._force("commit", {"event_id": event_id})
        if kind == "input_audio_buffer.clear":
            return self._force("clear", {})
        if kind in ("session.update", "transcription_session.update"):
            session = message.get("session")
            updated = parse_session(
                session,
                self.settings,
                multilingual=self.multilingual,
                model_name=self.model_name,
            )
            settle: list[Command] = []
            if updated.input_format != self.settings.input_format:
                if self._appended:
                    raise OpenAIError(
                        f"The input audio format cannot change once audio has been appended "
                        f"(it is {self.settings.input_format}): open a new session for "
                        f"{updated.input_format}; nothing in this update was applied",
                        param="session.audio.input.format",
                        code="invalid_value",
                    )
                settle = [AudioFormatSettled(updated.audio)]
            self.settings = updated
            ga = is_ga_layout(session) if isinstance(session, dict) else not self.beta
            name = kind.replace(".update", ".updated")
            self._replies.append(_Reply("updated", {"type": name, "ga": ga, "settings": updated}))
            return [*settle, UpdateConfig(engine_turn(updated))]
        if kind in CONVERSATION_EVENTS:
            raise OpenAIError(
                f"{kind} is not part of a transcription session: this server transcribes "
                "input audio only (no conversation items or responses)",
                param="type",
                code="unsupported_event",
            )
        shown_kind = shown(kind, 60) if isinstance(kind, str) else "missing"
        raise OpenAIError(
            f"Invalid event type {shown_kind}: a transcription session accepts "
            "input_audio_buffer.append, input_audio_buffer.commit, input_audio_buffer.clear, "
            "session.update and transcription_session.update",
            param="type",
            code="invalid_event_type",
        )

    def _append(self, audio: Any) -> list[Command]:
        if not isinstance(audio, str):
            raise OpenAIError(
                "input_audio_buffer.append needs audio: a base64 string of 16-bit PCM at 24 kHz",
                param="audio",
                code="invalid_audio",
            )
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise OpenAIError(
                "Invalid base64 in input_audio_buffer.append audio (standard alphabet, padded)",
                param="audio",
                code="invalid_audio",
            ) from None
        if len(data) % BYTES_PER_SAMPLE[self.settings.audio.encoding]:
            raise OpenAIError(
                f"Invalid audio: {len(data)} bytes is not a whole number of 16-bit samples "
                "(audio/pcm is 16-bit little-endian mono at 24 kHz)",
                param="audio",
                code="invalid_audio",
            )
        self._buffered_bytes += len(data)
        self._appended = self._appended or bool(data)
        step = CHUNK_MS * self._bytes_per_ms()
        return [RawAudio(data[i : i + step]) for i in range(0, len(data), step)]

    def _bytes_per_ms(self) -> int:
        fmt = self.settings.audio
        return fmt.sample_rate * BYTES_PER_SAMPLE[fmt.encoding] // 1000

    def _force(self, kind: str, data: dict[str, Any]) -> list[Command]:
        self._markers += 1
        marker = f"{kind}-{self._markers}"
        self._buffered_bytes = 0
        self._replies.append(_Reply(kind, {**data, "marker": marker}))
        return [ForceEndpoint(marker=marker)]

    def _refuse(self, exc: OpenAIError, event_id: str | None = None) -> None:
        body = {**exc.body(), "event_id": event_id}
        self._replies.append(_Reply("error", body))

    # ---------------------------------------------------------------- server -> client
    def render(self, event: Event | _Reply) -> list[Outgoing]:
        self._machine.move(Step.RENDER)
        if isinstance(event, _Reply):
            return self._render_reply(event)
        if isinstance(event, SessionStarted):
            self._session_id = "sess_" + event.session_id.replace("-", "")
            self._expires_at = int(event.expires_at)
            name = "transcription_session.created" if self.beta else "session.created"
            return [self._send(name, session=self._session_object(not self.beta))]
        if isinstance(event, SpeechStarted):
            return self._speech_started(event)
        if isinstance(event, TurnUpdate):
            return self._turn(event)
        if isinstance(event, Flushed):
            return self._flushed(event.marker)
        if isinstance(event, SessionEnded):
            self._machine.move(Step.END)
            if event.reason is EndReason.SHUTDOWN:
                return [
                    self._send(
                        "error",
                        error={
                            "type": "server_error",
                            "code": "server_shutting_down",
                            "message": "Server shutting down: reconnect to start a new session",
                            "param": None,
                            "event_id": None,
                        },
                    ),
                    Close(GOING_AWAY),
                ]
            return [Close(NORMAL)]
        if isinstance(event, Error):
            return self.error(ProtocolError.of(event.kind, event.message))
        return []

    def error(self, exc: ProtocolError) -> list[Outgoing]:
        """The `error` event and the close that end a session badly."""
        if not self._machine.allows(Step.FAIL):
            return []  # already closed: nothing more to say
        self._machine.move(Step.FAIL)
        body = {**OpenAIError.from_protocol(exc).body(), "event_id": None}
        code = CLOSE_CODES.get(exc.kind, SERVER_FAULT)
        reason = "" if code == NORMAL else body["code"] or ""
        return [self._send("error", error=body), Close(code, reason)]

    def _send(self, kind: str, **fields: Any) -> SendJson:
        return SendJson({"type": kind, "event_id": self._make_id("event"), **fields})

    def _session_object(self, ga: bool) -> dict[str, Any]:
        build = ga_session if ga else beta_session
        return build(self._rendered, self._session_id, self._expires_at)

    def _render_reply(self, reply: _Reply) -> list[Outgoing]:
        data = reply.data
        if reply.kind == "error":
            return [self._send("error", error=data)]
        if reply.kind == "updated":
            self._rendered = data["settings"]
            self._manual = self._rendered.manual
            return [self._send(data["type"], session=self._session_object(data["ga"]))]
        if reply.kind == "clear":
            item = self._take_current()
            item.discard, item.marker = True, data["marker"]
            self._awaiting.append(item)
            return [self._send("input_audio_buffer.cleared")]
        # commit: the item takes everything said before it; it completes at Flushed(marker)
        item = self._take_current()
        item.marker = data["marker"]
        self._awaiting.append(item)
        return [self._committed(item)]

    def _take_current(self) -> _Item:
        item = self._current or _Item(self._make_id("item"))
        self._current = None
        return item

    def _committed(self, item: _Item) -> SendJson:
        item.committed = True
        previous, self._last_committed = self._last_committed, item.id
        return self._send(
            "input_audio_buffer.committed", item_id=item.id, previous_item_id=previous
        )

    def _target(self) -> _Item:
        """The item engine words belong to: the oldest one still waiting for its flush (its
        turn was ended by the commit or clear), else the one being spoken."""
        if self._awaiting:
            return self._awaiting[0]
        if self._current is None:
            self._current = _Item(self._make_id("item"))
        return self._current

    def _speech_started(self, event: SpeechStarted) -> list[Outgoing]:
        if self._manual:
            return []  # VAD events belong to server_vad sessions
        out: list[Outgoing] = []
        current = self._current
        if current is not None and current.started and not current.words:
            # the engine heard noise, not words: that item ends empty before the next begins
            out += self._stop_and_commit(current, event.at_ms)
            out.append(self._completed(current))
            current = self._current = None
        if current is None:
            current = self._current = _Item(self._make_id("item"))
        if not current.started:
            current.started = True
            current.start_ms = event.at_ms
            out.append(
                self._send(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=int(event.at_ms),
                    item_id=current.id,
                )
            )
        return out

    def _stop_and_commit(self, item: _Item, end_ms: int) -> list[Outgoing]:
        out: list[Outgoing] = []
        if item.started:
            out.append(
                self._send(
                    "input_audio_buffer.speech_stopped", audio_end_ms=int(end_ms), item_id=item.id
                )
            )
        if not item.committed:
            out.append(self._committed(item))
        return out

    def _turn(self, update: TurnUpdate) -> list[Outgoing]:
        item = self._target()
        if item.discard:
            return []
        if update.formatted:
            # the turn's words all went out as deltas; its closing mark (. ? !) goes out too
            out = self._closing_mark(item, spoken_text(update.words))
            item.end_ms = max(item.end_ms, update.end_ms)
            if item.marker is None and not self._manual:
                self._current = None  # server VAD ended it: it is complete
                return [*out, self._completed(item)]
            return out  # a commit's item completes at its flush; a manual item goes on
        out: list[Outgoing] = []
        if item.start_ms is None and update.words:
            item.start_ms = update.start_ms
        if update.end_of_turn and item.marker is None and not self._manual:
            out += self._stop_and_commit(item, update.end_ms)
        delta = self._delta(item, update)
        if delta is not None:
            out.append(delta)
        return out

    def _delta(self, item: _Item, update: TurnUpdate) -> SendJson | None:
        """The final words of `update` not sent yet (append-only; tentative words never)."""
        if item.turn != update.turn_order:
            item.turn, item.sent = update.turn_order, 0
        final = [w for w in update.words if w.final and w.text.strip()]
        new = final[item.sent :]
        if not new:
            return None
        item.sent = len(final)
        lead = bool(item.words)
        item.words.extend(new)
        item.end_ms = max(item.end_ms, new[-1].end_ms)
        text = spoken_text(new)
        if not item.text or item.text.endswith(SENTENCE_END):
            text = text[:1].upper() + text[1:]  # a sentence starts with a capital
        delta = (" " if item.text else "") + text
        item.text += delta
        fields: dict[str, Any] = {"item_id": item.id, "content_index": 0, "delta": delta}
        if self._rendered.logprobs:
            fields["logprobs"] = word_logprobs(new, lead=lead)
        return self._send("conversation.item.input_audio_transcription.delta", **fields)

    def _closing_mark(self, item: _Item, formatted: str) -> list[Outgoing]:
        """The delta that ends the item's text as the formatted turn ends (". ? !")."""
        mark = formatted[-1:] if formatted.endswith(SENTENCE_END) else ""
        if not mark or not item.text or item.text.endswith(SENTENCE_END):
            return []
        item.text += mark
        fields: dict[str, Any] = {"item_id": item.id, "content_index": 0, "delta": mark}
        if self._rendered.logprobs:
            fields["logprobs"] = []
        return [self._send("conversation.item.input_audio_transcription.delta", **fields)]

    def _flushed(self, marker: str) -> list[Outgoing]:
        item = next((i for i in self._awaiting if i.marker == marker), None)
        if item is None:
            return []
        self._awaiting.remove(item)
        return [] if item.discard else [self._completed(item)]

    def _completed(self, item: _Item) -> SendJson:
        start = item.start_ms if item.start_ms is not None else item.end_ms
        fields: dict[str, Any] = {
            "item_id": item.id,
            "content_index": 0,
            "transcript": item.text,  # exactly the deltas, joined
            "usage": {
                "type": "duration",
                "seconds": round(max(0, item.end_ms - start) / 1000, 3),
            },
        }
        if self._rendered.logprobs:
            fields["logprobs"] = word_logprobs(item.words)
        return self._send("conversation.item.input_audio_transcription.completed", **fields)

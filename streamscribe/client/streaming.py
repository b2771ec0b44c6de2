"""`AsyncStreamingClient`: one v3 streaming session over the `websockets` asyncio client.

Why this exists: streaming speech to text takes more care than `send` and `recv`. A reader task
must parse every server frame while audio is still being sent; the last turn arrives only after
`Terminate`, so disconnecting must wait for `Termination`; an `Error` frame and the abnormal close
that follows it are one failure, reported once, to the error handler and to whichever call is
waiting. This class owns exactly that: the socket, the reader task, handler dispatch, the inbox
for `async for`, and the optional WAV copy of the audio sent.

Message parsing and the handshake URL live in `messages.py` (sans-I/O); the blocking wrapper for
scripts without asyncio is `sync.py`; audio sources (files, microphone) are `sources.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from streamscribe.client.messages import (
    DEFAULT_SAMPLE_RATE,
    DEFAULT_URL,
    Begin,
    Message,
    SpeechStarted,
    StreamingError,
    Termination,
    Turn,
    parse_message,
    session_url,
)

log = logging.getLogger(__name__)

AudioChunk = bytes | bytearray | memoryview
Handler = Callable[[Any, Any], Any]
_END = object()
_WAV_ENCODINGS = ("pcm_s16le", "pcm_mulaw", "pcm_alaw")  # what save_audio can convert to PCM16


_NOT_TLS = ": does the server serve TLS? One started without --tls or --ssl-certfile takes ws://"


def tls_context(url: str, ca_file: Path | None) -> ssl.SSLContext | None:
    """The TLS context of a wss:// session that trusts `ca_file` as well as the system's CAs
    (None: the library's default). A CA file for a ws:// URL is a mistake worth saying."""
    if ca_file is None:
        return None
    if not url.startswith("wss://"):
        raise ValueError(
            f"a CA file ({ca_file}) only applies to a wss:// server: use wss://HOST:PORT if the "
            "server serves TLS, or leave the CA file out for ws://"
        )
    try:
        context = ssl.create_default_context()
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot use {ca_file} as a CA file: {exc}") from None
    return context


class StreamingEvents(StrEnum):
    """Names accepted by `on()` (case-insensitive strings and the message classes work too)."""

    Begin = "begin"
    Turn = "turn"
    SpeechStarted = "speech_started"
    Termination = "termination"
    Error = "error"


_EVENT_OF_TYPE: dict[type, StreamingEvents] = {
    Begin: StreamingEvents.Begin,
    Turn: StreamingEvents.Turn,
    SpeechStarted: StreamingEvents.SpeechStarted,
    Termination: StreamingEvents.Termination,
    StreamingError: StreamingEvents.Error,
}


def _event_name(event: str | type) -> StreamingEvents:
    if isinstance(event, type):
        for cls, name in _EVENT_OF_TYPE.items():
            if issubclass(event, cls):
                return name
        raise ValueError(f"cannot subscribe to {event.__name__}: use one of {_names()}")
    key = str(event).lower().replace("-", "_")
    key = {"speechstarted": "speech_started"}.get(key, key)
    try:
        return StreamingEvents(key)
    except ValueError:
        raise ValueError(f"unknown event {event!r}: use one of {_names()}") from None


def _names() -> str:
    return ", ".join(repr(e.value) for e in StreamingEvents)


class AsyncStreamingClient:
    """A v3 streaming session: connect, send audio, get turns, terminate.

    ```
    async with AsyncStreamingClient("ws://127.0.0.1:8000", format_turns=True) as client:
        client.on("turn", lambda client, turn: print(turn.transcript))
        await client.stream(FileStream("talk.mp3"))
    # leaving the block sends Terminate and waits for the last turn and Termination
    ```

    Handlers get `(client, message)`, like the official SDK's, and may be coroutine functions.
    Session parameters (`sample_rate`, `encoding`, `format_turns`, `min_turn_silence`,
    `max_turn_silence`, `end_of_turn_confidence_threshold`, `keyterms_prompt`, `speaker_labels`,
    `language_detection`, `inactivity_timeout`, ...) are keyword arguments and become the
    handshake query. `save_audio` names a WAV file that receives a copy of all audio sent.
    `ca_file` (a PEM file) is trusted besides the system's CAs for a `wss://` server, e.g. the
    `ca.pem` that `streamscribe serve --tls self-signed` makes.
    A client serves one session; make a new one to reconnect.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        token: str | None = None,
        *,
        save_audio: str | Path | None = None,
        ca_file: str | Path | None = None,
        terminate_timeout: float = 30.0,
        open_timeout: float = 10.0,
        max_queued_messages: int = 1000,
        **params: Any,
    ) -> None:
        params.setdefault("sample_rate", DEFAULT_SAMPLE_RATE)
        self.url = url
        self.params = params
        self.api_key = api_key
        self.token = token
        self.terminate_timeout = terminate_timeout
        self.open_timeout = open_timeout
        self.save_audio = Path(save_audio) if save_audio is not None else None
        self._encoding = str(params.get("encoding") or "pcm_s16le")
        if self.save_audio is not None and self._encoding not in _WAV_ENCODINGS:
            raise ValueError(
                f"save_audio needs encoding {', '.join(_WAV_ENCODINGS)}, not {self._encoding!r}"
            )
        self.session_url = session_url(url, params, token)
        self.ca_file = Path(ca_file) if ca_file is not None else None
        self._ssl = tls_context(self.session_url, self.ca_file)
        self._handlers: dict[StreamingEvents, list[Handler]] = {e: [] for e in StreamingEvents}
        self._inbox: deque[Message] = deque(maxlen=max_queued_messages)
        self._changed = asyncio.Condition()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._wav: Any = None
        self._used = False
        self._closed = False
        self._closing = False
        self._begin: Begin | None = None
        self._termination: Termination | None = None
        self._error: StreamingError | None = None
        self._error_surfaced = False

    # ------------------------------------------------------------------ public state

    @property
    def begin(self) -> Begin | None:
        """The session's `Begin` message once connected."""
        return self._begin

    @property
    def session_id(self) -> str | None:
        return self._begin.id if self._begin else None

    @property
    def termination(self) -> Termination | None:
        """The `Termination` message, once the session ended normally."""
        return self._termination

    @property
    def error(self) -> StreamingError | None:
        """The error that ended the session, if one did."""
        return self._error

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._closed

    def on(self, event: str | type, handler: Handler) -> None:
        """Call `handler(client, message)` for each "begin", "turn", "speech_started",
        "termination" or "error" (a `StreamingError`). The message classes work as names too."""
        self._handlers[_event_name(event)].append(handler)

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> Begin:
        """Open the WebSocket and wait for `Begin`; raises StreamingError if that fails."""
        if self._used:
            raise RuntimeError("this client already had a session: create a new client")
        self._used = True
        headers = {"Authorization": self.api_key} if self.api_key else None
        try:
            self._ws = await connect(
                self.session_url,
                additional_headers=headers,
                open_timeout=self.open_timeout,
                close_timeout=5,
                max_size=2**24,
                **({"ssl": self._ssl} if self._ssl is not None else {}),
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
            detail = f": {body[:300]}" if body else ""
            raise self._fail_now(
                StreamingError(status, f"WebSocket handshake rejected (HTTP {status}){detail}")
            ) from None
        except (InvalidURI, InvalidHandshake) as exc:
            hint = ""
            if self.session_url.startswith("ws://"):
                hint = "; if the server serves TLS (--tls, --ssl-certfile), use wss://"
            raise self._fail_now(
                StreamingError(None, f"cannot open {self.url}: {exc}{hint}")
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise self._fail_now(
                StreamingError(
                    None,
                    f"the TLS certificate of {self.url} is not trusted ({exc.verify_message}): "
                    "give the certificate authority that signed it as ca_file (--ca-file); "
                    "`streamscribe serve --tls self-signed` prints where its ca.pem is",
                )
            ) from None
        except ssl.SSLError as exc:
            raise self._fail_now(
                StreamingError(
                    None, f"TLS handshake with {self.url} failed ({exc.reason or exc}){_NOT_TLS}"
                )
            ) from None
        except TimeoutError:
            raise self._fail_now(
                StreamingError(None, f"timed out connecting to {self.url}: is the server up?")
            ) from None
        except OSError as exc:
            refused = isinstance(exc, ConnectionRefusedError)
            why = "connection refused" if refused else str(exc) or type(exc).__name__
            hint = "; is `streamscribe serve` running?"
            if not refused and self.session_url.startswith("wss://"):
                hint = _NOT_TLS  # a plain server drops a TLS hello
            raise self._fail_now(
                StreamingError(None, f"cannot connect to {self.url}: {why}{hint}")
            ) from None
        self._reader = asyncio.create_task(self._read_loop(), name="streamscribe-reader")
        try:
            async with asyncio.timeout(self.open_timeout):
                await self._wait_until(lambda: self._begin is not None or self._closed)
        except TimeoutError:
            await self._shutdown()
            raise self._fail_now(
                StreamingError(
                    None, f"no Begin message from {self.url} within {self.open_timeout:g} s"
                )
            ) from None
        if self._begin is None:
            await self._shutdown()
            self._raise_if_failed()
            raise StreamingError(None, "the server closed the connection before Begin")
        self._open_wav()
        return self._begin

    async def disconnect(self, terminate: bool = True, timeout: float | None = None) -> None:
        """End the session. With `terminate`, first send Terminate and wait (up to `timeout`,
        default `terminate_timeout`) for the last turns and Termination. Always closes the
        socket and the WAV file; raises a session error nobody has seen yet."""
        try:
            failed = self._error is not None
            if terminate and self.connected and self._termination is None and not failed:
                await self.terminate(timeout)
        finally:
            await self._shutdown()
        if self._error is not None and not self._error_surfaced:
            self._raise_if_failed()

    async def terminate(self, timeout: float | None = None) -> Termination:
        """Send Terminate and wait for Termination; returns it. The socket stays open until
        `disconnect()` (the server closes it by itself right after Termination)."""
        if self._termination is not None:
            return self._termination
        await self._send_json({"type": "Terminate"})
        limit = self.terminate_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                await self._wait_until(lambda: self._termination is not None or self._closed)
        except TimeoutError:
            raise self._fail_now(
                StreamingError(None, f"no Termination from the server within {limit:g} s")
            ) from None
        if self._termination is not None:
            return self._termination
        self._raise_if_failed()
        raise self._fail_now(StreamingError(None, "the server closed before Termination"))

    async def __aenter__(self) -> AsyncStreamingClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.disconnect(terminate=True)
        else:
            self._error_surfaced = True  # an exception is already on its way out
            await self.disconnect(terminate=False)

    # ------------------------------------------------------------------ sending

    async def send_audio(self, data: AudioChunk) -> None:
        """Send one binary audio frame (50-1000 ms in the session's encoding and rate)."""
        if isinstance(data, str):
            raise TypeError("send_audio takes bytes of audio, not str")
        chunk = bytes(data)
        if self._wav is not None:
            self._wav.write_pcm16(self._to_pcm16(chunk))
        await self._send(chunk)

    async def stream(self, source: Iterable[AudioChunk] | AsyncIterable[AudioChunk]) -> None:
        """Send every chunk of `source` (sync or async iterable of audio bytes) in order.

        A sync iterable is advanced in a worker thread, so a blocking source (a microphone, a
        paced file) never stalls the reader task.
        """
        if isinstance(source, AsyncIterable):
            async for chunk in source:
                await self.send_audio(chunk)
            return
        iterator = iter(source)
        while True:
            chunk = await asyncio.to_thread(next, iterator, _END)
            if chunk is _END:
                return
            await self.send_audio(chunk)

    async def force_endpoint(self) -> None:
        """End the current turn now."""
        await self._send_json({"type": "ForceEndpoint"})

    async def keep_alive(self) -> None:
        """Reset the server's inactivity timer without sending audio."""
        await self._send_json({"type": "KeepAlive"})

    async def update_configuration(self, **fields: Any) -> None:
        """Change turn settings mid-session (e.g. `max_turn_silence=1500`); None values are
        left out."""
        message = {"type": "UpdateConfiguration"}
        message.update({k: v for k, v in fields.items() if v is not None})
        await self._send_json(message)

    async def _send_json(self, message: dict[str, Any]) -> None:
        await self._send(json.dumps(message, separators=(",", ":")))

    async def _send(self, frame: str | bytes) -> None:
        self._raise_if_failed()
        if self._ws is None:
            raise RuntimeError("not connected: call connect() (or use `async with`) first")
        if self._closed:
            raise StreamingError(None, self._ended_reason())
        try:
            await self._ws.send(frame)
        except ConnectionClosed:
            # The reader may still hold the Error frame that explains the close: let it finish.
            if self._reader is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(self._reader), 5)
            self._raise_if_failed()
            raise StreamingError(self._ws.close_code, self._ended_reason()) from None

    def _ended_reason(self) -> str:
        if self._termination is not None:
            return "the session has ended: the server sent Termination"
        return "the session is closed"

    # ------------------------------------------------------------------ receiving

    async def recv(self) -> Message | None:
        """The next message in arrival order, or None once the session is over.

        Raises the session's StreamingError after the last message if it ended badly. At most
        `max_queued_messages` unread messages are kept (the oldest are dropped beyond that), so
        a client that only uses handlers never accumulates them.
        """
        await self._wait_until(lambda: bool(self._inbox) or self._closed)
        if self._inbox:
            return self._inbox.popleft()
        self._raise_if_failed()
        return None

    async def __aiter__(self) -> AsyncIterator[Message]:
        while (message := await self.recv()) is not None:
            yield message

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            async for frame in self._ws:
                if isinstance(frame, bytes):
                    continue
                try:
                    parsed = parse_message(frame)
                except ValueError as exc:
                    log.warning("%s", exc)
                    continue
                if isinstance(parsed, StreamingError):
                    await self._fail(parsed)
                elif parsed is not None:
                    await self._deliver(parsed)
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bug here must not leave waiters hanging
            log.exception("streaming reader failed")
            await self._fail(StreamingError(None, f"client reader failed: {exc!r}"))
        finally:
            code, reason = self._ws.close_code, self._ws.close_reason or ""
            if not self._closing and self._termination is None and code != 1000:
                await self._fail(StreamingError.from_close(code, reason))
            self._closed = True
            await self._notify()

    async def _deliver(self, message: Message) -> None:
        if isinstance(message, Begin):
            self._begin = message
        elif isinstance(message, Termination):
            self._termination = message
        self._inbox.append(message)
        await self._notify()
        await self._dispatch(_EVENT_OF_TYPE[type(message)], message)

    async def _fail(self, error: StreamingError) -> None:
        if self._error is not None:
            return  # the close after an Error frame is the same failure
        self._error = error
        await self._notify()
        await self._dispatch(StreamingEvents.Error, error)

    def _fail_now(self, error: StreamingError) -> StreamingError:
        """Record an error raised directly to the caller (and tell the error handlers)."""
        if self._error is None:
            self._error = error
            for handler in self._handlers[StreamingEvents.Error]:
                self._call_sync(handler, error)
        self._error_surfaced = True
        return error

    async def _dispatch(self, event: StreamingEvents, message: Any) -> None:
        for handler in self._handlers[event]:
            try:
                result = handler(self, message)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("%s handler %r raised", event.value, handler)

    def _call_sync(self, handler: Handler, message: Any) -> None:
        try:
            result = handler(self, message)
            if inspect.isawaitable(result):
                asyncio.ensure_future(result)
        except Exception:
            log.exception("error handler %r raised", handler)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            self._error_surfaced = True
            raise self._error

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(predicate)

    # ------------------------------------------------------------------ audio copy

    def _to_pcm16(self, chunk: bytes) -> bytes:
        if self._encoding == "pcm_s16le":
            return chunk
        from streamscribe.audio.codecs import decode_pcm, encode_pcm16

        return encode_pcm16(decode_pcm(chunk, self._encoding))

    def _open_wav(self) -> None:
        if self.save_audio is None or self._wav is not None:
            return
        from streamscribe.audio.wav import WavWriter

        self.save_audio.parent.mkdir(parents=True, exist_ok=True)
        self._wav = WavWriter(self.save_audio, sample_rate=int(self.params["sample_rate"]))

    async def _shutdown(self) -> None:
        self._closing = True
        try:
            if self._ws is not None:
                await self._ws.close()
            if self._reader is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
        finally:
            self._closed = True
            if self._wav is not None:
                self._wav.close()
                self._wav = None
            await self._notify()


__all__ = ["AsyncStreamingClient", "AudioChunk", "Handler", "StreamingEvents"]

"""`StreamingClient`: the blocking face of `AsyncStreamingClient`, for scripts without asyncio.

Why this exists: most speech scripts are plain loops over microphone or file chunks. This wrapper
runs one `AsyncStreamingClient` on a private event loop in a background thread and turns every
method into a blocking call, so `client.stream(FileStream(...))` simply blocks until the audio is
sent and `client.disconnect()` until the last turn and `Termination` have arrived. Handlers are
called on that background thread with `(client, message)`, where `client` is this wrapper; they
must not call blocking methods of the same client (that would wait on itself), which is
detected and refused.

All protocol behaviour lives in `streaming.py`; this module only moves calls between threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from streamscribe.client.messages import DEFAULT_URL, Begin, Message, StreamingError, Termination
from streamscribe.client.streaming import AsyncStreamingClient, AudioChunk, Handler

T = TypeVar("T")


class StreamingClient:
    """A v3 streaming session with blocking methods (see `AsyncStreamingClient` for details).

    ```
    with StreamingClient("ws://127.0.0.1:8000", format_turns=True) as client:
        client.on("turn", lambda client, turn: print(turn.transcript))
        client.stream(FileStream("talk.mp3"))
    ```
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
        self._client = AsyncStreamingClient(
            url,
            api_key,
            token,
            save_audio=save_audio,
            ca_file=ca_file,
            terminate_timeout=terminate_timeout,
            open_timeout=open_timeout,
            max_queued_messages=max_queued_messages,
            **params,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ state (read-only)

    @property
    def session_url(self) -> str:
        return self._client.session_url

    @property
    def save_audio(self) -> Path | None:
        """The WAV file receiving a copy of the audio sent, if any."""
        return self._client.save_audio

    @property
    def begin(self) -> Begin | None:
        return self._client.begin

    @property
    def session_id(self) -> str | None:
        return self._client.session_id

    @property
    def termination(self) -> Termination | None:
        return self._client.termination

    @property
    def error(self) -> StreamingError | None:
        return self._client.error

    @property
    def connected(self) -> bool:
        return self._client.connected

    def on(self, event: str | type, handler: Handler) -> None:
        """Call `handler(client, message)` for "begin", "turn", "speech_started",
        "termination" or "error", on the client's background thread."""
        self._client.on(event, lambda _async_client, message: handler(self, message))

    # ------------------------------------------------------------------ lifecycle

    def connect(self) -> Begin:
        """Open the session and return its Begin message; raises StreamingError on failure."""
        self._start_loop()
        try:
            return self._run(self._client.connect())
        except BaseException:
            self._stop_loop()
            raise

    def disconnect(self, terminate: bool = True, timeout: float | None = None) -> None:
        """End the session; with `terminate`, wait for the last turns and Termination first."""
        loop = self._loop
        if loop is None:
            return
        try:
            self._run(self._client.disconnect(terminate, timeout))
        except BaseException:
            # Interrupted (Ctrl-C) while waiting: still close the socket and the WAV file.
            with contextlib.suppress(BaseException):
                asyncio.run_coroutine_threadsafe(self._client._shutdown(), loop).result(2)
            raise
        finally:
            self._stop_loop()

    def terminate(self, timeout: float | None = None) -> Termination:
        """Send Terminate and wait for Termination (the socket stays open until disconnect)."""
        return self._run(self._client.terminate(timeout))

    def __enter__(self) -> StreamingClient:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.disconnect(terminate=True)
        else:
            self._client._error_surfaced = True  # an exception is already on its way out
            self.disconnect(terminate=False)

    # ------------------------------------------------------------------ sending

    def send_audio(self, data: AudioChunk) -> None:
        """Send one audio chunk; blocks until it is handed to the socket."""
        self._run(self._client.send_audio(data))

    def stream(self, source: Iterable[AudioChunk]) -> None:
        """Send every chunk of `source`; blocks until the iterable is exhausted.

        The iterable is consumed on the calling thread, so a paced or blocking source (a
        microphone, a real-time FileStream) sets the pace, and Ctrl-C interrupts it.
        """
        for chunk in source:
            self.send_audio(chunk)

    def force_endpoint(self) -> None:
        """End the current turn now."""
        self._run(self._client.force_endpoint())

    def keep_alive(self) -> None:
        """Reset the server's inactivity timer without sending audio."""
        self._run(self._client.keep_alive())

    def update_configuration(self, **fields: Any) -> None:
        """Change turn settings mid-session (e.g. `max_turn_silence=1500`)."""
        self._run(self._client.update_configuration(**fields))

    # ------------------------------------------------------------------ receiving

    def recv(self) -> Message | None:
        """The next message, or None once the session is over (raises its error, if any)."""
        if self._loop is None:
            inbox = self._client._inbox
            if inbox:
                return inbox.popleft()
            self._client._raise_if_failed()
            return None
        return self._run(self._client.recv())

    def __iter__(self) -> Iterator[Message]:
        while (message := self.recv()) is not None:
            yield message

    # ------------------------------------------------------------------ the loop thread

    def _start_loop(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="streamscribe-client", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("not connected: call connect() (or use `with`) first")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a blocking StreamingClient method was called from one of its own handlers, "
                "which run on the client's thread; do the call from your own thread instead"
            )
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C while waiting: stop the operation too
            raise

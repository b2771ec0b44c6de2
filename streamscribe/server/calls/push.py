"""Outbound delivery for call transcription: the push socket to `transportUrl`, and callbacks.

Why this exists: here streamscribe is the client. `TranscriptPusher` keeps one WebSocket to the
customer's server for a job: `TranscriptionMetadata` first on every connection, then the frames
in order. If the socket drops it reconnects with back-off and delivers what was produced
meanwhile, in order (see Delivery below); if it stays away longer than the job's reconnect window
it reports a failure (the transcripts are in the store all along). `CallbackPoster` POSTs the
ACS CloudEvents to the callback URL in order, with a few retries, never blocking transcription.

Delivery (the ACS format has no acknowledgements, so exactly-once cannot be proven; this is the
policy): a ping follows every frame, and its pong proves the customer's WebSocket stack read the
frame. One frame is in flight at a time: the next is written only after the pong of the one
before, so a burst of finals (a call's last turns flushed together) never sits unread in the
customer's socket buffers when the connection drops (a loopback round trip costs well under a
millisecond; at 50 ms a call still gets 20 frames a second, several times what it produces).
When the connection drops, however it drops, the final in flight (written, its pong not back)
goes again on the next connection: a final is never lost, and at most that one frame can arrive
twice — when the drop fell between the customer reading it and its pong coming back; it repeats
the same participant and offset, so a consumer can tell.
Finals produced while the socket is down are queued (up to `MAX_BACKLOG`) and sent in order after
the metadata of the new connection; intermediate results are neither queued nor replayed (a later
result of the phrase replaces them). Frame rendering is `protocols.acs_transcription`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
)

log = logging.getLogger(__name__)

BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0)
OPEN_TIMEOUT_S = 5.0
MAX_BACKLOG = 10_000  # final results kept for a socket that is down (all are in the store)
CALLBACK_TRIES = 3
CALLBACK_TIMEOUT_S = 5.0


# resultInformation.subCode of a push failure (ACS leaves sub-codes service-specific)
SUB_UNREACHABLE = 8501  # never connected within the reconnect window
SUB_LOST = 8502  # connected, dropped, not back within the window
SUB_REFUSED = 8503  # answered, but refused the upgrade or is not a WebSocket server


@dataclass(frozen=True, slots=True)
class PushFailure:
    """Why the push socket is given up: an HTTP-like code, ACS status details, a message."""

    code: int
    details: str  # streamConnectionUnsuccessful | streamConnectionInterrupted | forbidden ...
    message: str
    sub_code: int = SUB_REFUSED


@dataclass
class _Frame:
    seq: int
    text: str
    final: bool
    pong: Awaitable[float] | None = None


class _Permanent(Exception):
    def __init__(self, failure: PushFailure) -> None:
        self.failure = failure


class TranscriptPusher:
    """One job's push socket. `submit()` never blocks; `close()` delivers what is pending and
    closes with 1000. `on_state(name, failure)` is called with "connected", "reconnected",
    "failed" (with a `PushFailure`) and "closed"."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        metadata: Callable[[], dict[str, Any]],
        reconnect_s: float,
        on_state: Callable[[str, PushFailure | None], Awaitable[None]],
    ) -> None:
        self.url = url
        self.headers = headers
        self.metadata = metadata
        self.reconnect_s = reconnect_s
        self.on_state = on_state
        self._pending: deque[_Frame] = deque()
        self._unacked: deque[_Frame] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self._ws: ClientConnection | None = None
        self._seq = 0
        self.connected = False
        self.failure: PushFailure | None = None
        self.delivered = 0
        self.connections = 0
        self.dropped_intermediate = 0
        self.dropped_backlog = 0

    # ------------------------------------------------------------------ interface
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"push {self.url}")

    def submit(self, message: dict[str, Any], final: bool) -> None:
        """Queue one frame (in order). Intermediate frames are skipped while disconnected."""
        if self.failure is not None or self._closing:
            return
        if not final and not self.connected:
            self.dropped_intermediate += 1
            return
        self._seq += 1
        self._pending.append(_Frame(self._seq, json.dumps(message, separators=(",", ":")), final))
        while len(self._pending) > MAX_BACKLOG:
            self._pending.popleft()
            self.dropped_backlog += 1
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._unacked)

    async def close(self, timeout: float | None = None) -> None:
        """Deliver everything pending (waiting out a reconnect if need be), then close 1000."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            return
        limit = timeout if timeout is not None else self.reconnect_s + 2 * OPEN_TIMEOUT_S + 10
        try:
            await asyncio.wait_for(asyncio.shield(self._task), limit)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def describe(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "connections": self.connections,
            "delivered": self.delivered,
            "pending": self.pending,
            "droppedIntermediate": self.dropped_intermediate,
            "droppedBacklog": self.dropped_backlog,
        }

    # ------------------------------------------------------------------ connection loop
    async def _run(self) -> None:
        down_since = time.monotonic()
        attempt = 0
        last_error = "no connection attempted"
        while True:
            if self._closing and not self._pending and not self._unacked:
                break
            try:
                ws = await self._connect()
            except _Permanent as exc:
                await self._fail(exc.failure)
                return
            except Exception as exc:  # refused, timed out, reset: try again within the window
                last_error = _describe(exc)
                waited = time.monotonic() - down_since
                if waited >= self.reconnect_s:
                    details = (
                        "streamConnectionUnsuccessful"
                        if self.connections == 0
                        else "streamConnectionInterrupted"
                    )
                    await self._fail(
                        PushFailure(
                            502 if self.connections else 400,
                            details,
                            f"cannot connect to transportUrl {self.url}: {last_error} "
                            f"(tried for {waited:.1f} s)",
                            SUB_LOST if self.connections else SUB_UNREACHABLE,
                        )
                    )
                    return
                delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                attempt += 1
                await asyncio.sleep(min(delay, max(0.05, self.reconnect_s - waited)))
                continue
            attempt = 0
            self.connections += 1
            self.connected = True
            await self.on_state("connected" if self.connections == 1 else "reconnected", None)
            try:
                finished = await self._serve(ws)
            finally:
                self.connected = False
                self._requeue()
            if finished:
                break
            down_since = time.monotonic()
            last_error = "the connection dropped"
            log.warning("push socket to %s dropped; reconnecting", self.url)
        await self.on_state("closed", None)

    async def _connect(self) -> ClientConnection:
        try:
            return await connect(
                self.url,
                additional_headers=self.headers,
                open_timeout=OPEN_TIMEOUT_S,
                close_timeout=2,
                max_size=2**20,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (408, 429) or status >= 500:
                raise  # worth trying again
            details = {401: "authenticationFailure", 403: "forbidden"}.get(
                status, "badRequest" if status >= 400 else "streamConnectionUnsuccessful"
            )
            why = (
                "it is not a WebSocket endpoint"
                if status < 400
                else "it refused the WebSocket upgrade"
            )
            raise _Permanent(
                PushFailure(
                    status if status >= 400 else 400,
                    details,
                    f"transportUrl {self.url} answered HTTP {status}: {why}",
                )
            ) from None
        except InvalidMessage:
            # the peer hung up before a whole HTTP answer (a server going down or coming up,
            # a proxy resetting): not a verdict on the URL, so worth trying again
            raise
        except InvalidURI as exc:
            raise _Permanent(
                PushFailure(400, "badRequest", f"transportUrl {self.url} is invalid: {exc}")
            ) from None
        except InvalidHandshake as exc:
            raise _Permanent(
                PushFailure(
                    400,
                    "streamConnectionUnsuccessful",
                    f"transportUrl {self.url} is not a WebSocket server: {exc}",
                )
            ) from None

    async def _serve(self, ws: ClientConnection) -> bool:
        """Send on one connection until it drops (False) or everything is delivered after
        `close()` (True)."""
        self._ws = ws
        reader = asyncio.create_task(_drain_inbound(ws))
        try:
            await ws.send(json.dumps(self.metadata(), separators=(",", ":")))
            while True:
                self._settle()
                if not self._pending:
                    if self._closing:
                        await self._await_acks(ws)
                        with contextlib.suppress(Exception):
                            await ws.close(1000, "transcription ended")
                        return True
                    self._wake.clear()
                    waiter = asyncio.create_task(self._wake.wait())
                    done, _ = await asyncio.wait(
                        {waiter, reader}, return_when=asyncio.FIRST_COMPLETED
                    )
                    waiter.cancel()
                    if reader in done:
                        return False
                    continue
                if await self._previous_unconfirmed():
                    continue  # its pong came back: look at what is pending again
                frame = self._pending.popleft()
                self._unacked.append(frame)
                await ws.send(frame.text)
                frame.pong = await ws.ping()
        except ConnectionClosed:
            return False
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            self._ws = None

    async def _previous_unconfirmed(self) -> bool:
        """Wait for the pong of the frame in flight, if any (True when there was one). A drop
        raises ConnectionClosed here; a silent peer is closed by the keepalive."""
        if not self._unacked or self._unacked[-1].pong is None:
            return False
        pong = self._unacked[-1].pong
        if pong.done():
            return False
        await asyncio.shield(pong)
        return True

    async def _await_acks(self, ws: ClientConnection) -> None:
        if self._unacked and self._unacked[-1].pong is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._unacked[-1].pong), 10)
        self._settle()

    def _settle(self) -> None:
        """Count frames whose pong came back as delivered (a pong answers earlier pings too)."""
        while self._unacked:
            pong = self._unacked[0].pong
            if pong is None or not pong.done() or pong.cancelled() or pong.exception():
                break
            self._unacked.popleft()
            self.delivered += 1

    def _requeue(self) -> None:
        """After a drop: finals written but not confirmed by their pong, then the finals not yet
        written, return to the front in order; intermediate results are dropped."""
        self._settle()
        again = [f for f in self._unacked if f.final]
        self.dropped_intermediate += len(self._unacked) - len(again)
        self._unacked.clear()
        kept = [f for f in self._pending if f.final]
        self.dropped_intermediate += len(self._pending) - len(kept)
        for f in again:
            f.pong = None
        self._pending = deque([*again, *kept])

    async def _fail(self, failure: PushFailure) -> None:
        self.failure = failure
        self.connected = False
        self._pending.clear()
        self._unacked.clear()
        log.warning("push to %s failed: %s", self.url, failure.message)
        await self.on_state("failed", failure)


async def _drain_inbound(ws: ClientConnection) -> None:
    """Read and ignore what the customer sends (the vendor's sample server echoes frames)."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no answer within {OPEN_TIMEOUT_S:g} s"
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, InvalidMessage):
        return "the server hung up during the WebSocket handshake"
    return str(exc) or type(exc).__name__


class CallbackPoster:
    """POSTs callback events (each a one-element CloudEvents array) in order, retrying network
    errors and 5xx a few times; failures are counted and described, never raised."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self.delivered = 0
        self.failed = 0
        self.last_error: str | None = None

    def post(self, url: str | None, event: dict[str, Any]) -> None:
        if not url:
            return
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="callbacks")
        self._queue.put_nowait((url, event))

    async def drain(self, timeout: float = 20.0) -> None:
        if self._task is None:
            return
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
        self._task = None

    def describe(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "failed": self.failed, "lastError": self.last_error}

    async def _run(self) -> None:
        while (item := await self._queue.get()) is not None:
            url, event = item
            error = await self._send(url, event)
            if error is None:
                self.delivered += 1
            else:
                self.failed += 1
                self.last_error = error
                log.warning("callback %s to %s failed: %s", event.get("type"), url, error)

    async def _send(self, url: str, event: dict[str, Any]) -> str | None:
        error = None
        for attempt in range(CALLBACK_TRIES):
            try:
                response = await self.client.post(url, json=[event], timeout=CALLBACK_TIMEOUT_S)
            except httpx.HTTPError as exc:
                error = f"POST {url}: {type(exc).__name__}: {exc or 'no answer'}"
            else:
                if response.status_code < 300:
                    return None
                error = f"POST {url} answered HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    return error  # the receiver refuses it: sending again will not help
            await asyncio.sleep(0.25 * 2**attempt)
        return error

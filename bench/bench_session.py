"""One streamed v3 session of the benchmark: paced sending, and what the replies tell us.

Why this exists: every figure of `stream_bench.py` (first-partial, word-finality and end-of-turn
latency, streaming WER) comes from the wall time at which each Turn message arrived, set against
the audio clock of the session. That derivation lives here and is fed online, message by message,
so a 30-minute soak keeps only finished turns, never every message. The analyser also checks the
ordering and type rules of the v3 protocol (protocol doc §3-4) and counts every breach, because a
benchmark is often the first place such a breach shows. What to stream and how to summarise many
sessions lives in `stream_bench.py`; the server process and resource polling in `bench_server.py`.

Clock: chunk k (100 ms) is sent at t_send0 + k * 0.1 s, i.e. at the moment its last sample would
have been recorded by a microphone started at t_audio0 = t_send0 - 0.1 s. Audio time `a` (ms, as in
a word's start/end) therefore happened at wall time t_audio0 + a / 1000, and every latency below
includes the 100 ms chunking delay that a live client has too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

CHUNK_S = 0.1
CHUNK_BYTES = 3200  # 100 ms of 16 kHz pcm_s16le mono
# Small client-side buffers, so that a server that stops reading (its back-pressure) shows up as
# a late send within a second or two instead of vanishing into megabytes of socket buffer.
SNDBUF_BYTES = 16 * 1024
WRITE_LIMIT = 8 * 1024
# Words of a final that share one start time are a sign of text the model repeated or invented
# past the audio (the timestamps get clamped to the window's end).
STACKED = 3
BEGIN_TIMEOUT_S = 10.0
TERMINATION_TIMEOUT_S = 90.0


@dataclass
class TurnResult:
    """One ended turn, as the client saw it. Latencies in ms; None where undefined."""

    turn_order: int
    received: float  # monotonic time the unformatted end-of-turn message arrived
    start_ms: int  # stream time of the first word (the turn's speech onset)
    end_ms: int  # stream time of the last word
    first_partial_ms: float | None
    word_final_ms: list[float]
    end_of_turn_ms: float | None
    messages: int  # unformatted Turn messages of this turn, end-of-turn included
    partial_before_end: bool  # some message with words came before the end-of-turn one
    after_terminate: bool  # the end-of-turn arrived after we sent Terminate
    transcript: str
    formatted: str | None = None
    words: list[tuple[str, int]] = field(default_factory=list)  # (text, start_ms), formatted


@dataclass
class _OpenTurn:
    first_words_at: float | None = None
    final_at: list[float] = field(default_factory=list)  # per word index: first time final
    final_text: list[str] = field(default_factory=list)
    transcript: str = ""
    messages: int = 0


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_TURN_TYPES = {
    "turn_order": _is_int,
    "turn_is_formatted": lambda v: isinstance(v, bool),
    "end_of_turn": lambda v: isinstance(v, bool),
    "transcript": lambda v: isinstance(v, str),
    "end_of_turn_confidence": _is_num,
    "words": lambda v: isinstance(v, list),
}
_WORD_TYPES = {
    "start": _is_int,
    "end": _is_int,
    "text": lambda v: isinstance(v, str),
    "confidence": _is_num,
    "word_is_final": lambda v: isinstance(v, bool),
}


class SessionAnalyzer:
    """Consumes the server's messages of one session in arrival order.

    Produces a `TurnResult` per ended turn and counts protocol anomalies by kind (with the first
    example of each), so a run can say "3 formatted re-sends missing" rather than crash.
    """

    def __init__(self, label: str, format_turns: bool = True) -> None:
        self.label = label
        self.format_turns = format_turns
        self.t_audio0: float | None = None
        self.terminate_sent_at: float | None = None
        self.begin: dict | None = None
        self.termination: dict | None = None
        self.error: dict | None = None
        self.turns: list[TurnResult] = []
        self.anomalies: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.other_types: Counter[str] = Counter()
        self._open: dict[int, _OpenTurn] = {}
        self._next_order = 0
        self._awaiting_formatted: int | None = None
        self._messages = 0

    # ------------------------------------------------------------------ bookkeeping
    def anomaly(self, kind: str, example: str) -> None:
        self.anomalies[kind] += 1
        self.examples.setdefault(kind, f"{self.label}: {example}"[:300])

    def feed(self, t: float, msg: Any) -> None:
        """Take one decoded text message received at monotonic time t."""
        self._messages += 1
        if not isinstance(msg, dict):
            self.anomaly("non-object message", repr(msg)[:80])
            return
        kind = msg.get("type")
        if self._messages == 1 and kind != "Begin":
            self.anomaly("first message is not Begin", str(kind))
        if self.termination is not None:
            self.anomaly("message after Termination", str(kind))
        if kind != "Turn" and self._awaiting_formatted is not None:
            awaited = self._awaiting_formatted
            self.anomaly("formatted re-send missing", f"turn {awaited}, got {kind}")
            self._awaiting_formatted = None
        if kind == "Begin":
            self.begin = msg
            if not isinstance(msg.get("id"), str) or not _is_int(msg.get("expires_at")):
                self.anomaly("Begin field types", json.dumps(msg)[:120])
        elif kind == "Turn":
            self._turn(t, msg)
        elif kind == "Termination":
            self.termination = msg
            for key in ("audio_duration_seconds", "session_duration_seconds"):
                if not _is_int(msg.get(key)):
                    self.anomaly("Termination field types", json.dumps(msg)[:120])
            if self._open:
                self.anomaly("turn never ended", f"open turns {sorted(self._open)} at Termination")
        elif kind == "Error":
            self.error = msg
        else:
            self.other_types[str(kind)] += 1

    # ------------------------------------------------------------------ turns
    def _turn(self, t: float, msg: dict) -> None:
        if not self._types_ok(msg):
            return
        order = msg["turn_order"]
        words = msg["words"]
        if msg["turn_is_formatted"]:
            self._formatted(order, msg)
            return
        if self._awaiting_formatted is not None:
            self.anomaly("formatted re-send missing", f"turn {self._awaiting_formatted}")
            self._awaiting_formatted = None
        if order < self._next_order:
            self.anomaly("message for an ended turn", f"turn {order} after it ended")
            return
        if order > self._next_order:
            self.anomaly("turn_order skipped", f"expected {self._next_order}, got {order}")
            self._next_order = order
        if not 0 <= msg["end_of_turn_confidence"] <= 1:
            self.anomaly("end_of_turn_confidence out of range", str(msg["end_of_turn_confidence"]))
        turn = self._open.setdefault(order, _OpenTurn())
        turn.messages += 1
        if words and turn.first_words_at is None:
            turn.first_words_at = t
        self._check_words(order, turn, msg, t)
        if msg["end_of_turn"]:
            self._end_turn(order, turn, msg, t)

    def _types_ok(self, msg: dict) -> bool:
        for key, ok in _TURN_TYPES.items():
            if key not in msg or not ok(msg[key]):
                self.anomaly("Turn field types", f"{key}={msg.get(key)!r}")
                return False
        for w in msg["words"]:
            for key, ok in _WORD_TYPES.items():
                if not isinstance(w, dict) or key not in w or not ok(w[key]):
                    self.anomaly("Word field types", f"{key} in {w!r}"[:120])
                    return False
        return True

    def _check_words(self, order: int, turn: _OpenTurn, msg: dict, t: float) -> None:
        words = msg["words"]
        final_flags = [w["word_is_final"] for w in words]
        if any(f and not prev for prev, f in zip(final_flags, final_flags[1:], strict=False)):
            self.anomaly("final word after a tentative one", f"turn {order}")
        prev_start = -1
        for w in words:
            if w["start"] > w["end"] or w["start"] < prev_start:
                self.anomaly("word times out of order", f"turn {order}: {w!r}"[:120])
                break
            prev_start = w["start"]
        if len(words) < len(turn.final_at):
            self.anomaly(
                "final words dropped", f"turn {order}: {len(turn.final_at)} -> {len(words)}"
            )
        for i, w in enumerate(words):
            if i < len(turn.final_at):
                if not w["word_is_final"] or w["text"] != turn.final_text[i]:
                    self.anomaly(
                        "final word changed",
                        f"turn {order} word {i}: {turn.final_text[i]!r} -> {w['text']!r}"
                        f" (final={w['word_is_final']})",
                    )
            elif w["word_is_final"]:
                turn.final_at.append(t)
                turn.final_text.append(w["text"])
        expected = " ".join(w["text"] for w in words if w["word_is_final"])
        if msg["transcript"] != expected:
            self.anomaly(
                "transcript is not the final words",
                f"turn {order}: {msg['transcript']!r} vs {expected!r}"[:200],
            )
        if not msg["transcript"].startswith(turn.transcript):
            self.anomaly(
                "transcript shrank or changed",
                f"turn {order}: {turn.transcript!r} -> {msg['transcript']!r}"[:200],
            )
        turn.transcript = msg["transcript"]

    def _end_turn(self, order: int, turn: _OpenTurn, msg: dict, t: float) -> None:
        del self._open[order]
        starts = [w["start"] for w in msg["words"]]
        if any(len(set(starts[i : i + STACKED])) == 1 for i in range(len(starts) - STACKED + 1)):
            self.anomaly(
                f"{STACKED}+ words stacked at one start time",
                f"turn {order}: {msg['transcript']!r}"[:200],
            )
        self._next_order = order + 1
        if self.format_turns:
            self._awaiting_formatted = order
        words = msg["words"]
        if not words:
            self.anomaly("empty end-of-turn", f"turn {order}")
            return
        t0 = self.t_audio0 if self.t_audio0 is not None else t
        first_at = turn.first_words_at if turn.first_words_at is not None else t
        self.turns.append(
            TurnResult(
                turn_order=order,
                received=t,
                start_ms=words[0]["start"],
                end_ms=words[-1]["end"],
                first_partial_ms=(first_at - (t0 + words[0]["start"] / 1000)) * 1000,
                word_final_ms=[
                    (at - (t0 + w["end"] / 1000)) * 1000
                    for at, w in zip(turn.final_at, words, strict=False)
                ],
                end_of_turn_ms=(t - (t0 + words[-1]["end"] / 1000)) * 1000,
                messages=turn.messages,
                partial_before_end=first_at < t,
                after_terminate=self.terminate_sent_at is not None and t >= self.terminate_sent_at,
                transcript=msg["transcript"],
                words=[(w["text"], w["start"]) for w in words],
            )
        )

    def _formatted(self, order: int, msg: dict) -> None:
        if self._awaiting_formatted != order:
            self.anomaly("formatted re-send out of place", f"turn {order}")
        self._awaiting_formatted = None
        if not msg["end_of_turn"]:
            self.anomaly("formatted turn without end_of_turn", f"turn {order}")
        for result in reversed(self.turns):
            if result.turn_order == order:
                result.formatted = msg["transcript"]
                result.words = [(w["text"], w["start"]) for w in msg["words"]]
                return
        self.anomaly("formatted turn without its final", f"turn {order}")

    def hypothesis(self) -> str:
        """The session's transcript: formatted end-of-turn texts (unformatted where missing)."""
        ordered = sorted(self.turns, key=lambda r: r.turn_order)
        return " ".join(r.formatted if r.formatted is not None else r.transcript for r in ordered)


@dataclass
class SessionOutcome:
    """How one session went, beyond its turns."""

    analyzer: SessionAnalyzer
    audio_s: float = 0.0  # audio sent, silence included
    connect_ms: float | None = None  # opening handshake to Begin received
    max_send_late_s: float = 0.0  # worst lateness of a chunk against its schedule
    close_code: int | None = None
    error: str | None = None


def shrink_send_buffer(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        sock = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)


async def send_paced(
    ws: ClientConnection, chunks: Iterable[bytes], t_send0: float, outcome: SessionOutcome
) -> None:
    """Send chunk k at t_send0 + k * CHUNK_S (absolute schedule, so no drift accumulates)."""
    for k, chunk in enumerate(chunks):
        target = t_send0 + k * CHUNK_S
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        outcome.max_send_late_s = max(outcome.max_send_late_s, time.monotonic() - target)
        await ws.send(chunk)
        outcome.audio_s += len(chunk) / (CHUNK_BYTES / CHUNK_S)


async def _read(ws: ClientConnection, analyzer: SessionAnalyzer) -> None:
    async for raw in ws:
        t = time.monotonic()
        if isinstance(raw, bytes):
            analyzer.anomaly("binary frame from server", f"{len(raw)} bytes")
            continue
        try:
            msg = json.loads(raw)
        except ValueError:
            analyzer.anomaly("non-JSON text frame", raw[:80])
            continue
        analyzer.feed(t, msg)


async def stream_session(
    url: str,
    chunks: Iterable[bytes],
    analyzer: SessionAnalyzer,
    phase_s: float = 0.0,
    headers: dict[str, str] | None = None,
) -> SessionOutcome:
    """Open `url`, stream `chunks` in real time, Terminate, and read until the server closes.

    Never raises for a server or connection failure: the outcome carries the error instead, so
    one bad session does not end a benchmark run.
    """
    outcome = SessionOutcome(analyzer)
    t_open = time.monotonic()
    reader: asyncio.Task | None = None
    try:
        async with connect(
            url,
            max_size=None,
            write_limit=WRITE_LIMIT,
            open_timeout=BEGIN_TIMEOUT_S,
            additional_headers=headers,
        ) as ws:
            shrink_send_buffer(ws)
            first = await asyncio.wait_for(ws.recv(), BEGIN_TIMEOUT_S)
            t_begin = time.monotonic()
            outcome.connect_ms = (t_begin - t_open) * 1000
            analyzer.feed(t_begin, json.loads(first))
            t_send0 = time.monotonic() + phase_s
            analyzer.t_audio0 = t_send0 - CHUNK_S
            reader = asyncio.create_task(_read(ws, analyzer))
            await send_paced(ws, chunks, t_send0, outcome)
            analyzer.terminate_sent_at = time.monotonic()
            await ws.send(json.dumps({"type": "Terminate"}))
            await asyncio.wait_for(reader, TERMINATION_TIMEOUT_S)
        outcome.close_code = ws.close_code
        if ws.close_code != 1000:
            outcome.error = f"closed with {ws.close_code} {ws.close_reason!r}"
    except ConnectionClosed as exc:
        outcome.close_code = exc.rcvd.code if exc.rcvd else None
        outcome.error = f"connection closed early: {exc}"
    except TimeoutError:
        outcome.error = "timed out waiting for the server (Begin or Termination)"
    except (WebSocketException, OSError, ValueError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        if reader is not None and not reader.done():
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
    if analyzer.error is not None and outcome.error is None:
        outcome.error = f"server Error message: {analyzer.error}"
    if outcome.error is None and analyzer.termination is None:
        outcome.error = "no Termination before close"
    return outcome

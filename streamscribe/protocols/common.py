"""Helpers every dialect shares: outgoing frames, query-string parsing, chunk-size checks, and
the transition tables that every live dialect's states are checked against (`Machine`).

Pure functions and small value types only; no sockets, no awaits (sans-I/O). Everything here
reads text a client controls, so each helper either returns a checked value or raises
`ProtocolError`; never any other exception, whatever the input (deep JSON nesting, numbers past
Python's limits, NaN, lone surrogates). `tests/unit/test_parsers_property.py` holds them to that.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Generic, TypeVar

from streamscribe.errors import LocalProtocolError, PeerError, ProtocolError, ServerRefusal
from streamscribe.events import ErrorKind

BYTES_PER_SAMPLE = {"pcm_s16le": 2, "pcm_mulaw": 1, "pcm_alaw": 1}


@dataclass(frozen=True, slots=True)
class SendText:
    text: str


@dataclass(frozen=True, slots=True)
class SendJson:
    data: dict[str, Any]

    @property
    def text(self) -> str:
        return json.dumps(self.data, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str = ""


Outgoing = SendText | SendJson | Close


# ---------------------------------------------------------------- states as tables
#
# Theory of operation. A live dialect is a small state machine driven by the session loop:
#
# * Its states are an Enum; its transitions are a table `{state: {step: next state}}` written
#   out in the dialect's module, so what may happen when is read in one place.
# * A step the table does not list for the current state is a bug of ours (the server drove the
#   dialect wrongly): `Machine` raises `LocalProtocolError` naming the step and the state. The
#   peer's mistakes never show up here; they are `PeerError`s raised while parsing.
# * A step listed as `IGNORED` is legal and does nothing: the dialect returns no commands and no
#   messages and stays where it is (frames that arrive after the client's own end of stream, or
#   after an engine failure closed the dialect while the loop was reading the next frame).


class Step(Enum):
    """What the session loop (or the dialect itself, on a client message) asks of a dialect."""

    RECEIVE = "receive a client frame"
    SETTLE = "learn the audio format"  # Deepgram: the first WAV header
    TERMINATE = "take the client's end of stream"
    RENDER = "render an event"
    END = "render the end of the session"
    FAIL = "end the session with an error"


class _Ignored:
    def __repr__(self) -> str:
        return "IGNORED"


IGNORED: Final = _Ignored()  # a legal step that changes nothing and produces nothing

S = TypeVar("S", bound=Enum)
Transitions = Mapping[S, Mapping[Step, "S | _Ignored"]]


class Machine(Generic[S]):
    """A dialect's current state, moved only along its transition table."""

    def __init__(self, dialect: str, table: Transitions[S], initial: S) -> None:
        self.dialect = dialect
        self.table = table
        self.state = initial

    def _target(self, step: Step) -> S | _Ignored:
        target = self.table[self.state].get(step)
        if target is None:
            raise LocalProtocolError(self.dialect, step.value, self.state.name)
        return target

    def allows(self, step: Step) -> bool:
        """True: go ahead (then `move`, or stay); False: a documented no-op, do nothing;
        `LocalProtocolError`: the table does not allow `step` in this state."""
        return self._target(step) is not IGNORED

    def move(self, step: Step) -> S:
        """Take `step`: the table's next state becomes the current one."""
        target = self._target(step)
        if not isinstance(target, _Ignored):
            self.state = target
        return self.state


def close_reason(text: str, limit: int = 123) -> str:
    """WebSocket close reasons are at most 123 bytes of valid UTF-8 (lone surrogates escaped)."""
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= limit:
        return data.decode("utf-8")
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


def shown(text: str, limit: int) -> str:
    """At most `limit` characters of client text, fit for a reason: unprintable characters
    (controls, lone surrogates) are escaped, so the reason is always valid, visible UTF-8."""
    part = text[:limit]
    if part.isprintable():
        return part
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in part)


def quoted(value: str, limit: int = 40) -> str:
    """A client value quoted as Python would (`'abc'`), cut to `limit` characters."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_json(text: str) -> Any:
    """Strict `json.loads` for client text: anything that is not JSON raises ValueError.

    That includes what the standard library lets through or fails on differently: NaN and
    Infinity literals (not JSON), nesting too deep for the parser (RecursionError), integers
    beyond Python's digit limit (already a ValueError).
    """
    try:
        return json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def finite_number(value: Any) -> bool:
    """A JSON number that means something: int or finite float, not a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not isinstance(value, float) or math.isfinite(value)


class RateLimit:
    """A token bucket: `burst` events at once, `rate` a second sustained.

    The clock is injected (a function returning seconds), so a dialect stays sans-I/O and its
    tests can drive time by hand.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = burst
        self._at = clock()

    def allow(self) -> bool:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class CodedPeerError(PeerError):
    """A peer's mistake that one dialect found, with the close code that dialect sends for it.
    Only the dialect that raised it reads `close_code`; the kind still decides everything else."""

    def __init__(self, kind: ErrorKind, reason: str, close_code: int | None = None) -> None:
        super().__init__(kind, reason)
        self.close_code = close_code


class CodedRefusal(ServerRefusal):
    """A limit one dialect enforces (a message flood, too many participants), with the close
    code that dialect sends for it."""

    def __init__(self, kind: ErrorKind, reason: str, close_code: int | None = None) -> None:
        super().__init__(kind, reason)
        self.close_code = close_code


def coded(kind: ErrorKind, reason: str, close_code: int | None) -> ProtocolError:
    """The dialect's own error for `kind`, carrying the close code it sends for this mistake."""
    if kind in PeerError.kinds:
        return CodedPeerError(kind, reason, close_code)
    return CodedRefusal(kind, reason, close_code)


def close_code_of(exc: ProtocolError) -> int | None:
    """The close code a dialect attached when it raised `exc` (None: map the kind)."""
    if isinstance(exc, CodedPeerError | CodedRefusal):
        return exc.close_code
    return None


# Language codes Whisper models know (faster-whisper's tokenizer list). An unknown code must
# stop at the edge: inside a decode batch it would fail every session sharing that batch.
_LANGUAGE_LIST = (
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw "
    "he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt "
    "my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl "
    "tr tt uk ur uz vi yi yo zh yue"
)
WHISPER_LANGUAGES = frozenset(_LANGUAGE_LIST.split())

# A number as a query value: ASCII only (Python's int()/float() also take "1_000", Arabic-Indic
# digits, "infinity"), and short (a 10^5-digit value is no setting anyone means).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?", re.ASCII)
_MAX_NUMBER_CHARS = 32


class QueryReader:
    """Typed access to query parameters; every failure names the parameter and what is accepted.

    `code` is the close code the dialect sends for a bad parameter (`CodedPeerError.close_code`).
    """

    def __init__(self, query: Mapping[str, str], code: int | None = None) -> None:
        self.query = query
        self.code = code

    def _fail(self, name: str, expected: str) -> ProtocolError:
        value = quoted(str(self.query.get(name)))
        return coded(
            ErrorKind.BAD_REQUEST, f"Invalid {name}={value}: expected {expected}", self.code
        )

    def _number(self, name: str) -> float | int | None:
        """The value as an int or a finite float; None when it is not a plain decimal number."""
        raw = self.query[name].strip()
        if len(raw) > _MAX_NUMBER_CHARS or not _NUMBER.fullmatch(raw):
            return None
        if raw.lstrip("+-").isdigit():
            return int(raw)
        value = float(raw)
        return value if math.isfinite(value) else None

    def has(self, name: str) -> bool:
        return name in self.query and self.query[name] != ""

    def int(
        self, name: str, default: int | None = None, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        if not self.has(name):
            return default
        number = self._number(name)  # "16000.0" is an integer too
        if number is None or (isinstance(number, float) and not number.is_integer()):
            raise self._fail(name, _range("an integer", lo, hi))
        value = int(number)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self._fail(name, _range("an integer", lo, hi))
        return value

    def float(
        self,
        name: str,
        default: float | None = None,
        lo: float | None = None,
        hi: float | None = None,
    ) -> float | None:
        if not self.has(name):
            return default
        number = self._number(name)
        if number is None:
            raise self._fail(name, _range("a number", lo, hi))
        value = float(number)
        if (
            not math.isfinite(value)
            or (lo is not None and value < lo)
            or (hi is not None and value > hi)
        ):
            raise self._fail(name, _range("a number", lo, hi))
        return value

    def bool(self, name: str, default: bool = False) -> bool:
        if not self.has(name):
            return default
        raw = self.query[name].strip().lower()
        if raw in ("true", "1", "yes", "on"):
            return True
        if raw in ("false", "0", "no", "off"):
            return False
        raise self._fail(name, "true or false")

    def choice(self, name: str, options: tuple[str, ...], default: str) -> str:
        if not self.has(name):
            return default
        value = self.query[name].strip()
        if value not in options:
            raise self._fail(name, "one of " + ", ".join(options))
        return value

    def string_list(
        self, name: str, max_items: int | None = None, max_chars: int | None = None
    ) -> tuple[str, ...]:
        """A JSON array of strings (as SDKs send lists), or a single plain string.

        Blank items are dropped; `max_items` and `max_chars` (per item) bound what is kept.
        """
        if not self.has(name):
            return ()
        raw = self.query[name]
        shape = 'a JSON array of strings, e.g. ["word", "two words"]'
        if raw.lstrip().startswith("["):
            try:
                value = loads_json(raw)
            except ValueError:
                raise self._fail(name, shape) from None
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self._fail(name, shape)
            items = tuple(v.strip() for v in value if v.strip())
        else:
            items = (raw.strip(),) if raw.strip() else ()
        problem = list_problem(items, max_items, max_chars)
        if problem:
            raise coded(ErrorKind.BAD_REQUEST, f"Invalid {name}: {problem}", self.code)
        return items


def list_problem(
    items: tuple[str, ...], max_items: int | None, max_chars: int | None
) -> str | None:
    """What is wrong with a list of strings against its limits (None: nothing)."""
    if max_items is not None and len(items) > max_items:
        return f"{len(items)} items, at most {max_items} are accepted"
    if max_chars is not None:
        for item in items:
            if len(item) > max_chars:
                return f"{quoted(item, 20)} is longer than {max_chars} characters"
    return None


def _range(kind: str, lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f"{kind} between {lo} and {hi}"
    if lo is not None:
        return f"{kind} of at least {lo}"
    if hi is not None:
        return f"{kind} of at most {hi}"
    return kind


def chunk_ms(n_bytes: int, encoding: str, sample_rate: int, channels: int = 1) -> float:
    return n_bytes / (BYTES_PER_SAMPLE[encoding] * channels) / sample_rate * 1000

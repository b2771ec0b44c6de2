"""Helpers every dialect shares: outgoing frames, query-string parsing, chunk-size checks.

Pure functions and small value types only; no sockets, no awaits (sans-I/O).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamscribe.errors import ProtocolError
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


def close_reason(text: str, limit: int = 123) -> str:
    """WebSocket close reasons are at most 123 bytes of UTF-8."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


class QueryReader:
    """Typed access to query parameters; every failure names the parameter and what is accepted."""

    def __init__(self, query: Mapping[str, str], code: int | None = None) -> None:
        self.query = query
        self.code = code

    def _fail(self, name: str, expected: str) -> ProtocolError:
        value = self.query.get(name)
        return ProtocolError(
            ErrorKind.BAD_REQUEST, f"Invalid {name}={value!r}: expected {expected}", self.code
        )

    def has(self, name: str) -> bool:
        return name in self.query and self.query[name] != ""

    def int(
        self, name: str, default: int | None = None, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        if not self.has(name):
            return default
        raw = self.query[name].strip()
        try:
            value = int(raw)
        except ValueError:
            try:  # "16000.0" is an integer too
                as_float = float(raw)
            except ValueError:
                as_float = float("nan")
            if not as_float.is_integer():
                raise self._fail(name, _range("an integer", lo, hi)) from None
            value = int(as_float)
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
        try:
            value = float(self.query[name])
        except ValueError:
            raise self._fail(name, _range("a number", lo, hi)) from None
        if value != value or (lo is not None and value < lo) or (hi is not None and value > hi):
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

    def string_list(self, name: str) -> tuple[str, ...]:
        """A JSON array of strings (as SDKs send lists), or a single plain string."""
        if not self.has(name):
            return ()
        raw = self.query[name]
        if raw.lstrip().startswith("["):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                raise self._fail(
                    name, 'a JSON array of strings, e.g. ["word", "two words"]'
                ) from None
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise self._fail(name, 'a JSON array of strings, e.g. ["word", "two words"]')
            return tuple(v.strip() for v in value if v.strip())
        return (raw.strip(),)


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

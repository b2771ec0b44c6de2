"""The USP frame codec of the Azure Speech SDK: header blocks, binary audio frames, WAV headers.

USP ("universal speech protocol") is what every Azure Speech SDK speaks over its WebSocket.
A text frame is an HTTP-style header block (`Name:value` lines joined by CRLF), an empty line,
then a body (JSON for everything we read or write). A binary frame is a 2-byte big-endian header
length, that many bytes of the same header block, then the payload: for `Path:audio` the first
frame of a request carries a RIFF/WAV header (sizes zero, the stream has no end yet) and the
following ones raw samples; an audio frame with no payload ends the request's audio.

Everything here is pure and reads bytes a client controls, so each parser returns a checked
value or raises `ProtocolError` (close 1007, which the SDK reports as `BadRequest` without
reconnecting); never any other exception. The state machine that uses these frames is
`azure_usp.py`; the JSON bodies we send are built in `azure_usp_results.py`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamscribe.errors import ProtocolError
from streamscribe.events import AudioFormat, ErrorKind
from streamscribe.protocols.common import SendText, coded, loads_json, shown

BAD_REQUEST_CLOSE = 1007  # the SDK: CancellationErrorCode.BadRequest, no reconnect
MAX_TEXT_CHARS = 256 * 1024  # speech.context with phrase lists stays far below this
MAX_HEADER_BYTES = 8 * 1024
MAX_HEADERS = 64

# WAVE format tags the engine decodes at the edge (audio/): PCM, A-law, mu-law
_WAVE_TAGS = {1: "pcm_s16le", 6: "pcm_alaw", 7: "pcm_mulaw"}
_WAVE_BITS = {"pcm_s16le": 16, "pcm_alaw": 8, "pcm_mulaw": 8}
MIN_RATE, MAX_RATE = 8000, 48000
MAX_CHANNELS = 8


def bad(reason: str) -> ProtocolError:
    return coded(ErrorKind.BAD_REQUEST, reason, BAD_REQUEST_CLOSE)


@dataclass(frozen=True, slots=True)
class UspMessage:
    """One client frame: its path (lower case), its headers (names lower case) and body."""

    path: str
    headers: dict[str, str]
    body: str | bytes

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-requestid") or None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (an empty body is an empty object)."""
        text = self.body if isinstance(self.body, str) else ""
        if not text.strip():
            return {}
        try:
            value = loads_json(text)
        except ValueError:
            raise bad(
                f"Invalid {self.path} message: the body is not JSON ({shown(text, 40)})"
            ) from None
        if not isinstance(value, dict):
            raise bad(f"Invalid {self.path} message: the body must be a JSON object")
        return value


def parse_headers(block: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    lines = [line for line in block.split("\r\n") if line]
    if len(lines) > MAX_HEADERS:
        raise bad(f"Invalid USP frame: {len(lines)} header lines, at most {MAX_HEADERS}")
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise bad(f"Invalid USP header line {shown(line, 40)!r}: expected Name:value")
        headers[name.strip().lower()] = value.strip()
    return headers


def _path(headers: dict[str, str]) -> str:
    path = headers.get("path")
    if not path:
        raise bad("Invalid USP frame: no Path header (expected speech.config, speech.context, …)")
    return path.lower()


def parse_text(text: str) -> UspMessage:
    """A text frame: headers, an empty line, a body."""
    if len(text) > MAX_TEXT_CHARS:
        raise bad(f"Invalid USP frame: a text frame of {len(text)} characters")
    block, sep, body = text.partition("\r\n\r\n")
    if not sep:
        block, body = text, ""
    if len(block) > MAX_HEADER_BYTES:
        raise bad(f"Invalid USP frame: a header block over {MAX_HEADER_BYTES} bytes")
    headers = parse_headers(block)
    return UspMessage(_path(headers), headers, body)


def parse_binary(data: bytes) -> UspMessage:
    """A binary frame: 2-byte big-endian header length, the header block, the payload."""
    if len(data) < 2:
        raise bad("Invalid USP binary frame: shorter than its 2-byte header length")
    (size,) = struct.unpack(">H", data[:2])
    if size > MAX_HEADER_BYTES or len(data) < 2 + size:
        raise bad(f"Invalid USP binary frame: header length {size} of a {len(data)}-byte frame")
    try:
        block = data[2 : 2 + size].decode("ascii")
    except UnicodeDecodeError:
        raise bad("Invalid USP binary frame: the header block is not ASCII") from None
    headers = parse_headers(block)
    return UspMessage(_path(headers), headers, data[2 + size :])


def encode_binary(path: str, request_id: str, payload: bytes, **extra: str) -> bytes:
    """A binary frame as the SDK writes one (for tests and tools; the server only reads them)."""
    lines = {"X-Timestamp": _timestamp(), "Path": path, **extra, "X-RequestId": request_id}
    block = "".join(f"{k}:{v}\r\n" for k, v in lines.items()).encode("ascii")
    return struct.pack(">H", len(block)) + block + payload


def encode_text(path: str, request_id: str, body: Any, timestamp: str | None = None) -> str:
    """A text frame with a JSON body (None: no body)."""
    head = (
        f"X-RequestId:{request_id}\r\nPath:{path}\r\n"
        "Content-Type:application/json; charset=utf-8\r\n"
        f"X-Timestamp:{timestamp or _timestamp()}\r\n\r\n"
    )
    if body is None:
        return head
    return head + json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def frame(path: str, request_id: str, body: Any) -> SendText:
    return SendText(encode_text(path, request_id, body))


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------ the WAV header


@dataclass(frozen=True, slots=True)
class WaveHeader:
    audio: AudioFormat
    data_offset: int  # where the samples start in the frame's payload


def parse_wave_header(payload: bytes) -> WaveHeader:
    """The RIFF header of a request's first audio frame (sizes may be zero: a live stream).

    Accepted: 16-bit PCM, 8-bit A-law or mu-law, 8–48 kHz, 1–8 channels. The SDK decodes
    compressed input (MP3, Opus, …) itself before sending, so nothing else reaches us from it.
    """
    if len(payload) < 12 or payload[:4] != b"RIFF" or payload[8:12] != b"WAVE":
        raise bad(
            "Invalid audio: the first audio frame of a request must start with a RIFF/WAVE "
            "header (Content-Type: audio/x-wav)"
        )
    pos = 12
    fmt: AudioFormat | None = None
    while pos + 8 <= len(payload):
        chunk, size = payload[pos : pos + 4], struct.unpack("<I", payload[pos + 4 : pos + 8])[0]
        body_at = pos + 8
        if chunk == b"fmt ":
            if size < 16 or body_at + 16 > len(payload):
                raise bad("Invalid audio: a WAVE fmt chunk shorter than 16 bytes")
            tag, channels, rate, _, _, bits = struct.unpack(
                "<HHIIHH", payload[body_at : body_at + 16]
            )
            fmt = _format(tag, channels, rate, bits)
        elif chunk == b"data":
            if fmt is None:
                raise bad("Invalid audio: a WAVE data chunk before its fmt chunk")
            return WaveHeader(fmt, body_at)
        if size > len(payload):  # a chunk longer than the frame: only data may be open-ended
            break
        pos = body_at + size + (size & 1)
    raise bad("Invalid audio: the WAVE header has no fmt and data chunks in its first frame")


def _format(tag: int, channels: int, rate: int, bits: int) -> AudioFormat:
    encoding = _WAVE_TAGS.get(tag)
    if encoding is None or bits != _WAVE_BITS[encoding]:
        raise bad(
            f"Unsupported audio format (WAVE tag {tag}, {bits} bits): send 16-bit PCM, "
            "8-bit A-law or 8-bit mu-law (AudioStreamFormat), or a compressed format the SDK "
            "decodes itself"
        )
    if not MIN_RATE <= rate <= MAX_RATE:
        raise bad(f"Unsupported sample rate {rate} Hz: expected {MIN_RATE}-{MAX_RATE} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        raise bad(f"Unsupported channel count {channels}: expected 1-{MAX_CHANNELS}")
    return AudioFormat(encoding=encoding, sample_rate=rate, channels=channels)

"""ACS media streaming frames in: `AudioMetadata`, then `AudioData` packets (sans-I/O).

Why this exists: a call's audio reaches streamscribe the way Azure Communication Services
streams it to a customer's socket (JSON text frames, base64 PCM, one stream per participant in
unmixed mode), or from a telephony bridge speaking the same frames with G.711 payloads. This
module parses those frames into plain values and places each participant's packets on the
call's clock; the socket, the engine and the store live in `server/calls_media.py`.

Theory of operation:

* `AcsMediaReader` is a two-state machine: AWAITING_METADATA until an `AudioMetadata` frame
  fixes the format, then STREAMING. `AudioData` first, a second `AudioMetadata`, a binary frame,
  bad JSON, bad base64 or a payload that is not whole samples raise `ProtocolError` carrying the
  close code (`close_for`): 1003 (unsupported data), 1007 (invalid payload), 1008 (out of order /
  limits, and any error this module did not raise itself).
* `DtmfData` frames (ACS sends them when DTMF is enabled) are accepted and ignored.
* Encodings: ACS's `PCM` (16-bit LE) at 16 or 24 kHz, and for telephony bridges G.711 mu-law
  (`PCMU`, `mulaw`) and A-law (`PCMA`, `alaw`), typically 8 kHz in 20 ms packets.
* A `silent` packet becomes that many bytes of the codec's own silence, so silence and speech
  take the same path and the stream's clock stays right.
* `CallClock` puts packets on the call clock (ms from the call's first packet) by their
  `timestamp`: a participant's stream starts where its first packet belongs; a jump forward past
  the jitter tolerance is a gap (lost packets) filled with silence; a packet stamped earlier than
  that participant's previous one is out of order and dropped (its slot has passed). Clock drift
  never drops audio: a stream running ahead of its timestamps just goes on.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from streamscribe.errors import LocalProtocolError, ProtocolError
from streamscribe.events import ErrorKind
from streamscribe.protocols.common import close_code_of, coded, loads_json, quoted, shown

CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID = 1007
CLOSE_POLICY = 1008

ENCODINGS = {
    "pcm": "pcm_s16le",
    "pcm16": "pcm_s16le",
    "pcm_s16le": "pcm_s16le",
    "pcmu": "pcm_mulaw",
    "mulaw": "pcm_mulaw",
    "ulaw": "pcm_mulaw",
    "g711_ulaw": "pcm_mulaw",
    "pcm_mulaw": "pcm_mulaw",
    "pcma": "pcm_alaw",
    "alaw": "pcm_alaw",
    "g711_alaw": "pcm_alaw",
    "pcm_alaw": "pcm_alaw",
}
SAMPLE_RATES = (8000, 16000, 24000, 32000, 48000)
_BYTES_PER_SAMPLE = {"pcm_s16le": 2, "pcm_mulaw": 1, "pcm_alaw": 1}
_SILENCE_BYTE = {"pcm_s16le": b"\x00", "pcm_mulaw": b"\xff", "pcm_alaw": b"\xd5"}
MAX_PACKET_MS = 2000
MAX_PARTICIPANTS = 16
MAX_RAW_ID_CHARS = 256
DEFAULT_PACKET_MS = 20


class MediaState(Enum):
    AWAITING_METADATA = "awaiting AudioMetadata"
    STREAMING = "streaming"


# Which frame kinds each state accepts and where each leads (DtmfData is accepted anywhere and
# ignored). A kind out of its order is the peer's mistake: refused 1008 with the reason below.
TRANSITIONS: dict[MediaState, dict[str, MediaState]] = {
    MediaState.AWAITING_METADATA: {"AudioMetadata": MediaState.STREAMING},
    MediaState.STREAMING: {"AudioData": MediaState.STREAMING},
}
OUT_OF_ORDER = {
    (MediaState.AWAITING_METADATA, "AudioData"): (
        "AudioData before AudioMetadata: send AudioMetadata (encoding, sampleRate) first"
    ),
    (MediaState.STREAMING, "AudioMetadata"): (
        "AudioMetadata sent twice: the format is fixed by the first one"
    ),
}


@dataclass(frozen=True, slots=True)
class MediaFormat:
    """What the `AudioMetadata` frame announced, in the converter's terms."""

    encoding: str  # pcm_s16le | pcm_mulaw | pcm_alaw
    sample_rate: int
    channels: int = 1
    packet_bytes: int | None = None
    subscription_id: str | None = None

    @property
    def bytes_per_ms(self) -> float:
        return _BYTES_PER_SAMPLE[self.encoding] * self.sample_rate / 1000

    def duration_ms(self, n_bytes: int) -> float:
        return n_bytes / self.bytes_per_ms


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One `AudioData` packet: its audio bytes (codec silence for a silent packet)."""

    participant: str | None  # participantRawID (unmixed); None in mixed mode
    data: bytes
    silent: bool
    timestamp_ms: int | None  # epoch milliseconds, when the packet had a timestamp


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a packet's audio goes on the call clock."""

    start_ms: float  # call-clock time at which this packet's audio begins (after any gap)
    gap_ms: float = 0.0  # silence to insert before it (lost packets)
    first: bool = False  # the participant's first packet
    dropped: bool = False  # out of order: ignore it


def _fail(code: int, reason: str, kind: ErrorKind = ErrorKind.BAD_REQUEST) -> ProtocolError:
    return coded(kind, reason, code)


def close_for(exc: ProtocolError) -> tuple[int, str]:
    """The close code and reason that end a media stream on `exc`: the code this module chose
    when it raised the error, 1007 for audio that cannot be decoded, 1008 otherwise."""
    code = close_code_of(exc)
    if code is None:
        code = CLOSE_INVALID if exc.kind is ErrorKind.BAD_AUDIO else CLOSE_POLICY
    return code, exc.reason


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_timestamp(value: object) -> int:
    """ISO-8601 (`2024-11-15T19:16:12.925Z`, up to 7 fraction digits) to epoch milliseconds."""
    if not isinstance(value, str) or len(value) > 40:
        raise _fail(CLOSE_INVALID, "AudioData.timestamp must be an ISO-8601 string")
    text = _FRACTION.sub(lambda m: m.group(1), value.strip(), count=1)
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            return round(moment.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise _fail(
            CLOSE_INVALID,
            f"AudioData.timestamp {quoted(value)} is not ISO-8601 (e.g. 2024-11-15T19:16:12.925Z)",
        ) from None
    raise _fail(
        CLOSE_INVALID, f"AudioData.timestamp {quoted(value)} has no time zone (end it with Z)"
    )


def silence(encoding: str, n_bytes: int) -> bytes:
    """`n_bytes` of the codec's silence (0x00 PCM, 0xFF mu-law, 0xD5 A-law)."""
    return _SILENCE_BYTE[encoding] * n_bytes


class AcsMediaReader:
    """Parses one media connection's frames; `receive_text` returns formats and packets."""

    def __init__(self) -> None:
        self.state = MediaState.AWAITING_METADATA
        self.format: MediaFormat | None = None
        self.participants: set[str] = set()
        self.packets = 0

    def receive_bytes(self, data: bytes) -> list[MediaFormat | MediaPacket]:
        raise _fail(
            CLOSE_UNSUPPORTED,
            "Binary frames are not accepted: send ACS media frames as JSON text "
            '({"kind": "AudioMetadata", ...} then {"kind": "AudioData", ...})',
        )

    def receive_text(self, text: str) -> list[MediaFormat | MediaPacket]:
        try:
            frame = loads_json(text)
        except ValueError:
            raise _fail(CLOSE_INVALID, f"Frame is not JSON: {shown(text, 60)!r}") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("kind"), str):
            raise _fail(
                CLOSE_INVALID,
                'Frame must be a JSON object with a "kind" (AudioMetadata, AudioData)',
            )
        kind = frame["kind"]
        if kind == "DtmfData":
            return []
        if kind == "AudioMetadata":
            payload = _payload(frame, "audioMetadata")
            self._check_order(kind)
            return [self._metadata(payload)]
        if kind == "AudioData":
            payload = _payload(frame, "audioData")
            self._check_order(kind)
            return [self._audio(payload)]
        raise _fail(
            CLOSE_POLICY,
            f"Unknown frame kind {quoted(kind)}: accepted are AudioMetadata, AudioData, DtmfData",
        )

    def _check_order(self, kind: str) -> None:
        """Refuse a frame kind the current state does not accept (the table above)."""
        if kind not in TRANSITIONS[self.state]:
            raise _fail(CLOSE_POLICY, OUT_OF_ORDER[(self.state, kind)])

    def _metadata(self, meta: dict) -> MediaFormat:
        raw = meta.get("encoding", "PCM")
        encoding = ENCODINGS.get(raw.strip().lower()) if isinstance(raw, str) else None
        if encoding is None:
            raise _fail(
                CLOSE_UNSUPPORTED,
                f"AudioMetadata.encoding {quoted(str(raw))} is not supported: use PCM "
                "(16-bit LE), PCMU (mu-law) or PCMA (A-law)",
            )
        rate = meta.get("sampleRate")
        if isinstance(rate, bool) or rate not in SAMPLE_RATES:
            raise _fail(
                CLOSE_UNSUPPORTED,
                f"AudioMetadata.sampleRate {quoted(str(rate))} is not supported: use one of "
                + ", ".join(map(str, SAMPLE_RATES)),
            )
        channels = meta.get("channels", 1)
        if channels != 1 or isinstance(channels, bool):
            raise _fail(
                CLOSE_UNSUPPORTED,
                f"AudioMetadata.channels {quoted(str(channels))} is not supported: ACS streams "
                "are mono (one stream per participant in unmixed mode)",
            )
        length = meta.get("length")
        if length is not None and (not isinstance(length, int) or isinstance(length, bool)):
            raise _fail(CLOSE_INVALID, "AudioMetadata.length must be an integer number of bytes")
        fmt = MediaFormat(
            encoding,
            int(rate),
            1,
            length if length and length > 0 else None,
            str(meta["subscriptionId"]) if meta.get("subscriptionId") is not None else None,
        )
        if fmt.packet_bytes is not None and fmt.duration_ms(fmt.packet_bytes) > MAX_PACKET_MS:
            raise _fail(
                CLOSE_POLICY,
                f"AudioMetadata.length {length} is over {MAX_PACKET_MS} ms of audio per packet",
            )
        self.format = fmt
        self.state = TRANSITIONS[self.state]["AudioMetadata"]
        return fmt

    def _audio(self, audio: dict) -> MediaPacket:
        fmt = self.format
        if fmt is None:  # STREAMING (the table) means AudioMetadata set the format
            raise LocalProtocolError("ACS media", "read AudioData", self.state.name)
        participant = audio.get("participantRawID")
        if participant is not None:
            if not isinstance(participant, str) or not 0 < len(participant) <= MAX_RAW_ID_CHARS:
                raise _fail(
                    CLOSE_INVALID,
                    "AudioData.participantRawID must be a non-empty string of at most "
                    f"{MAX_RAW_ID_CHARS} characters",
                )
            if participant not in self.participants:
                if len(self.participants) >= MAX_PARTICIPANTS:
                    raise _fail(
                        CLOSE_POLICY,
                        f"More than {MAX_PARTICIPANTS} participants in one call",
                        ErrorKind.LIMIT,
                    )
                self.participants.add(participant)
        silent = audio.get("silent", False)
        if not isinstance(silent, bool):
            raise _fail(CLOSE_INVALID, "AudioData.silent must be true or false")
        data = self._data(audio.get("data"), silent, fmt)
        timestamp = audio.get("timestamp")
        self.packets += 1
        return MediaPacket(
            participant,
            data,
            silent,
            parse_timestamp(timestamp) if timestamp is not None else None,
        )

    def _data(self, value: object, silent: bool, fmt: MediaFormat) -> bytes:
        if value is None or value == "":
            if not silent:
                raise _fail(CLOSE_INVALID, "AudioData.data is missing (base64 audio)")
            n = fmt.packet_bytes or round(fmt.bytes_per_ms * DEFAULT_PACKET_MS)
            return silence(fmt.encoding, n)
        if not isinstance(value, str):
            raise _fail(CLOSE_INVALID, "AudioData.data must be a base64 string")
        if len(value) > fmt.bytes_per_ms * MAX_PACKET_MS * 4 / 3 + 4:
            raise _fail(
                CLOSE_POLICY, f"AudioData packet holds more than {MAX_PACKET_MS} ms of audio"
            )
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _fail(
                CLOSE_INVALID,
                f"AudioData.data is not valid base64 (packet {self.packets + 1})",
                ErrorKind.BAD_AUDIO,
            ) from None
        size = _BYTES_PER_SAMPLE[fmt.encoding]
        if len(data) % size:
            raise _fail(
                CLOSE_INVALID,
                f"AudioData.data holds {len(data)} bytes: not whole 16-bit samples",
                ErrorKind.BAD_AUDIO,
            )
        return silence(fmt.encoding, len(data)) if silent else data


def _payload(frame: dict, key: str) -> dict:
    payload = frame.get(key)
    if not isinstance(payload, dict):
        raise _fail(
            CLOSE_INVALID, f'A {frame["kind"]} frame needs its payload object under "{key}"'
        )
    return payload


class CallClock:
    """Places every participant's packets on one call clock (ms from the call's first packet).

    `tolerance_ms` is the jitter allowed before a forward jump counts as a gap; gaps are filled
    with silence up to `max_gap_ms` (a longer hold is shortened to that)."""

    def __init__(self, tolerance_ms: float = 100.0, max_gap_ms: float = 60_000.0) -> None:
        self.tolerance_ms = tolerance_ms
        self.max_gap_ms = max_gap_ms
        self.origin_ms: int | None = None
        self.positions: dict[str, float] = {}  # where each participant's next audio goes
        self._last_stamp: dict[str, int] = {}
        self.gaps = 0
        self.gap_ms = 0.0
        self.dropped = 0

    @property
    def now_ms(self) -> float:
        """How far the call has got: the furthest any participant's audio reaches."""
        return max(self.positions.values(), default=0.0)

    def place(self, participant: str, timestamp_ms: int | None, duration_ms: float) -> Placement:
        if self.origin_ms is None and timestamp_ms is not None:
            self.origin_ms = timestamp_ms
        at = None if timestamp_ms is None else timestamp_ms - (self.origin_ms or 0)
        if participant not in self.positions:
            start = max(0.0, float(at)) if at is not None else self.now_ms
            self.positions[participant] = start + duration_ms
            if timestamp_ms is not None:
                self._last_stamp[participant] = timestamp_ms
            return Placement(start, first=True)
        last = self._last_stamp.get(participant)
        if timestamp_ms is not None and last is not None and timestamp_ms < last:
            self.dropped += 1
            return Placement(self.positions[participant], dropped=True)
        if timestamp_ms is not None:
            self._last_stamp[participant] = timestamp_ms
        expected = self.positions[participant]
        gap = 0.0
        if at is not None and at - expected > self.tolerance_ms:
            gap = min(at - expected, self.max_gap_ms)
            self.gaps += 1
            self.gap_ms += gap
        start = expected + gap
        self.positions[participant] = start + duration_ms
        return Placement(start, gap_ms=gap)

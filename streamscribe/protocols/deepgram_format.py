"""Deepgram live streams sent without `encoding=`: the audio format comes from the stream itself.

Why this exists: the cloud accepts a containerized stream on `/v1/listen` with no `encoding=`
and reads its format from the first bytes. This server reads WAV only (16-bit PCM, mu-law,
A-law; what a phone bridge or `ffmpeg -f wav` sends). Until the first binary frame arrives the
connection waits for the format (`DeepgramProtocol`'s AWAITING_FORMAT state); this module holds
the pure parts of that wait, so the protocol module keeps only the state and the messages:

* `wav_format` reads a RIFF/WAVE header (the first binary frame must hold all of it, up to the
  `data` chunk) into an `AudioFormat` and the header's length;
* `stream_format` adds the refusals of a live stream: not WAV at all, or several channels
  without `multichannel=true` (mixing down is not supported live);
* `FormatWait` holds the control messages that come before the first audio frame: KeepAlive goes
  through at once, Finalize is held (at most `MAX_HELD_MESSAGES`), and any other message ends the
  wait with the query's own format (as does an empty binary frame, the legacy close).

Pure functions and a small value holder; no sockets (sans-I/O). The reasons are the ones the
route used to send, so clients see the same close (1008 `DATA-0000`) and text.
"""

from __future__ import annotations

import struct

from streamscribe.errors import PeerError
from streamscribe.events import AudioFormat, ErrorKind
from streamscribe.protocols.common import loads_json
from streamscribe.protocols.deepgram_options import MAX_CHANNELS

MAX_HELD_MESSAGES = 64  # control messages held before a WAV stream's first audio frame
MAX_WAV_HEADER = 64 * 1024

_WAV_CODECS = {1: "pcm_s16le", 6: "pcm_alaw", 7: "pcm_mulaw"}
_EXTENSIBLE = 0xFFFE


def wav_format(data: bytes) -> tuple[AudioFormat, int] | None:
    """The format of a WAV stream's first bytes and the header's length (audio starts there).

    None when `data` is not a RIFF/WAVE header at all; PeerError (BAD_AUDIO) when it is one
    this server cannot stream (another codec, a rate out of range, a header cut short).
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos = 12
    fmt: AudioFormat | None = None
    while pos + 8 <= min(len(data), MAX_WAV_HEADER):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk == b"fmt ":
            if body + 16 > len(data):
                break
            codec, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if codec == _EXTENSIBLE and size >= 40 and body + 26 <= len(data):
                codec = struct.unpack_from("<H", data, body + 24)[0]
            encoding = _WAV_CODECS.get(codec)
            if encoding is None or (encoding == "pcm_s16le" and bits != 16):
                raise _bad_audio(
                    f"Unsupported WAV audio (format {codec}, {bits}-bit): stream 16-bit PCM, "
                    "mu-law or A-law WAV, or raw audio with encoding= and sample_rate="
                )
            if not 8000 <= rate <= 48000 or not 1 <= channels <= MAX_CHANNELS:
                raise _bad_audio(
                    f"Unsupported WAV audio ({rate} Hz, {channels} channels): 8000-48000 Hz "
                    f"and 1-{MAX_CHANNELS} channels are accepted"
                )
            fmt = AudioFormat(encoding, rate, channels)
        elif chunk == b"data":
            if fmt is None:
                break
            return fmt, body
        pos = body + size + (size & 1)
    raise _bad_audio(
        "Incomplete WAV header: the first binary frame must hold the whole header up to the "
        "data chunk"
    )


def stream_format(data: bytes, multichannel: bool) -> tuple[AudioFormat, int]:
    """The format of a live stream's first binary frame and its header's length, or the
    PeerError (BAD_AUDIO) that ends the stream: not WAV, or mixed channels not asked for."""
    sniffed = wav_format(data)
    if sniffed is None:
        raise _bad_audio(
            "Unknown audio format: for raw audio add encoding=linear16 (or mulaw, alaw) and "
            "sample_rate=; without encoding only WAV streams are read (not WebM/Ogg/MP3)"
        )
    channels = sniffed[0].channels
    if channels > 1 and not multichannel:
        raise _bad_audio(
            f"A {channels}-channel WAV stream without multichannel=true: mixing channels down "
            "is not supported live; add multichannel=true or send mono"
        )
    return sniffed


def _bad_audio(reason: str) -> PeerError:
    return PeerError(ErrorKind.BAD_AUDIO, reason)


def control_type(text: str) -> str | None:
    """The `type` of a control message, None when the text is not a JSON object."""
    try:
        message = loads_json(text)
    except ValueError:
        return None
    kind = message.get("type") if isinstance(message, dict) else None
    return kind if isinstance(kind, str) else None


class FormatWait:
    """The text messages held while a stream waits for its first audio frame."""

    def __init__(self) -> None:
        self.held: list[str] = []

    def hold(self, text: str) -> bool:
        """Hold `text`; True while the wait goes on, False when this message ends it (anything
        but Finalize, or one message too many): then every held message is handed on."""
        self.held.append(text)
        return control_type(text) == "Finalize" and len(self.held) < MAX_HELD_MESSAGES

    def release(self) -> list[str]:
        held, self.held = self.held, []
        return held

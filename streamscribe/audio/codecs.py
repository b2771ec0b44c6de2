"""Raw sample codecs: the byte formats clients stream over the wire.

Why this exists: every wire protocol we speak carries headerless audio in one of three encodings
(16-bit little-endian PCM, G.711 mu-law, G.711 A-law), often with several channels interleaved.
This module turns those bytes into float32 samples in [-1, 1] and back, with nothing but numpy:
the stdlib `audioop` module is gone in Python 3.13, so the G.711 tables are built here from the
ITU-T G.711 formulas (as in the classic Sun reference `g711.c`).

Whole raw bodies (Deepgram pre-recorded with `encoding=`) are decoded and resampled by
`decode_raw_body`. Resampling lives in `resample.py`, container files (WAV, MP3, MP4, ...) in
`files.py`.
"""

from __future__ import annotations

import numpy as np

from streamscribe.audio.resample import TARGET_RATE, resample
from streamscribe.errors import AudioDecodeError

ENCODINGS = ("pcm_s16le", "pcm_mulaw", "pcm_alaw")

_BYTES_PER_SAMPLE = {"pcm_s16le": 2, "pcm_mulaw": 1, "pcm_alaw": 1}
_SCALE = 32768.0  # int16 full scale: sample / 32768 lies in [-1, 1)


def bytes_per_sample(encoding: str) -> int:
    """Bytes one sample of one channel takes in `encoding` (2 for pcm_s16le, 1 for G.711)."""
    try:
        return _BYTES_PER_SAMPLE[encoding]
    except KeyError:
        raise ValueError(_unknown_encoding(encoding)) from None


def _unknown_encoding(encoding: str) -> str:
    return f"unsupported encoding {encoding!r}; accepted: {', '.join(ENCODINGS)}"


# --- G.711 tables --------------------------------------------------------------------------------
# Decoding: one 256-entry table per law, code byte -> int16 value (the middle of the code's
# quantisation interval). Encoding: one 65536-entry table per law, indexed by the int16 sample
# reinterpreted as uint16, so encoding an array is a single fancy-index.

_MULAW_BIAS = 0x84  # added to the 16-bit magnitude; 0x21 on the 14-bit scale
_MULAW_CLIP = 8159  # largest 14-bit magnitude mu-law represents


def _build_mulaw_decode() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _build_alaw_decode() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    # In A-law the sign bit set means positive.
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def _all_int16() -> np.ndarray:
    """Every int16 value, ordered so that index == value viewed as uint16."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _build_mulaw_encode() -> np.ndarray:
    pcm = _all_int16() >> 2  # mu-law quantises 14-bit samples
    mask = np.where(pcm >= 0, 0xFF, 0x7F)
    magnitude = np.minimum(np.where(pcm >= 0, pcm, -pcm), _MULAW_CLIP) + (_MULAW_BIAS >> 2)
    segment_ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    segment = np.searchsorted(segment_ends, magnitude, side="left")  # 8 means clipped
    value = np.where(
        segment >= 8,
        0x7F,
        (segment << 4) | ((magnitude >> np.minimum(segment + 1, 8)) & 0x0F),
    )
    return ((value ^ mask) & 0xFF).astype(np.uint8)


def _build_alaw_encode() -> np.ndarray:
    pcm = _all_int16() >> 3  # A-law quantises 13-bit samples
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    pcm = np.where(pcm >= 0, pcm, -pcm - 1)  # in [0, 4095]
    segment_ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    segment = np.searchsorted(segment_ends, pcm, side="left")  # in [0, 7]
    shift = np.where(segment < 2, 1, segment)
    value = (segment << 4) | ((pcm >> shift) & 0x0F)
    return ((value ^ mask) & 0xFF).astype(np.uint8)


_MULAW_DECODE = _build_mulaw_decode()
_ALAW_DECODE = _build_alaw_decode()
_MULAW_ENCODE = _build_mulaw_encode()
_ALAW_ENCODE = _build_alaw_encode()
_MULAW_DECODE_F32 = (_MULAW_DECODE / _SCALE).astype(np.float32)
_ALAW_DECODE_F32 = (_ALAW_DECODE / _SCALE).astype(np.float32)


# --- public API ----------------------------------------------------------------------------------


def decode_pcm(data: bytes, encoding: str) -> np.ndarray:
    """Decode headerless samples to float32 in [-1, 1] (channels stay interleaved).

    Raises ValueError for an unknown encoding or a pcm_s16le buffer of odd length.
    """
    if encoding == "pcm_s16le":
        if len(data) % 2:
            raise ValueError(
                f"pcm_s16le audio must have an even number of bytes (2 per sample); got "
                f"{len(data)} bytes: send whole samples"
            )
        return (np.frombuffer(data, dtype="<i2") / np.float32(_SCALE)).astype(np.float32)
    if encoding == "pcm_mulaw":
        return _MULAW_DECODE_F32[np.frombuffer(data, dtype=np.uint8)]
    if encoding == "pcm_alaw":
        return _ALAW_DECODE_F32[np.frombuffer(data, dtype=np.uint8)]
    raise ValueError(_unknown_encoding(encoding))


def _to_int16(samples: np.ndarray) -> np.ndarray:
    scaled = np.round(np.asarray(samples, dtype=np.float32).ravel() * np.float32(_SCALE))
    return np.clip(scaled, -32768, 32767).astype("<i2")


def encode_pcm16(samples: np.ndarray) -> bytes:
    """Float samples (nominally [-1, 1]; clipped outside) to 16-bit little-endian PCM bytes."""
    return _to_int16(samples).tobytes()


def encode_mulaw(samples: np.ndarray) -> bytes:
    """Float samples to G.711 mu-law bytes, one byte per sample."""
    return _MULAW_ENCODE[_to_int16(samples).view(np.uint16)].tobytes()


def encode_alaw(samples: np.ndarray) -> bytes:
    """Float samples to G.711 A-law bytes, one byte per sample."""
    return _ALAW_ENCODE[_to_int16(samples).view(np.uint16)].tobytes()


def deinterleave(samples: np.ndarray, channels: int) -> np.ndarray:
    """Split interleaved samples (L R L R ...) into an array of shape (channels, n).

    Raises ValueError when the length is not a whole number of frames: a partial frame means
    the sender split audio mid-frame, and silently dropping it would shift every channel.
    """
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    flat = np.asarray(samples)
    if flat.ndim != 1:
        raise ValueError(f"expected interleaved 1-D samples, got shape {flat.shape}")
    if len(flat) % channels:
        raise ValueError(
            f"{len(flat)} samples is not a whole number of {channels}-channel frames; "
            f"send audio in multiples of {channels} samples"
        )
    return np.ascontiguousarray(flat.reshape(-1, channels).T)


def decode_raw_body(
    data: bytes, encoding: str, channels: int, sample_rate: int, keep_channels: bool
) -> list[np.ndarray]:
    """A whole body of raw interleaved audio as float32 16 kHz arrays: one per channel when
    `keep_channels`, else one mean mix. A trailing partial frame is dropped; a body shorter than
    one frame raises AudioDecodeError."""
    frame = bytes_per_sample(encoding) * channels
    data = data[: len(data) - len(data) % frame]
    if not data:
        raise AudioDecodeError(f"shorter than one {channels}-channel sample")
    samples = deinterleave(decode_pcm(data, encoding), channels)
    if not keep_channels:
        samples = samples.mean(axis=0, keepdims=True, dtype=np.float32)
    return [resample(channel, sample_rate, TARGET_RATE) for channel in samples]

"""Sample-rate conversion to the 16 kHz the speech models expect.

Why this exists: clients send anything from 8 kHz telephone audio to 48 kHz browser audio, and a
stream arrives in small chunks. `StreamResampler` keeps the filter state between chunks (soxr's
streaming API), so chunked output matches a one-shot conversion of the whole signal with no
clicks at chunk edges; `resample` is the one-shot form for audio already in memory. Both use
soxr "HQ" quality. Byte decoding lives in `codecs.py`, container files in `files.py`.
"""

from __future__ import annotations

import numpy as np
import soxr

TARGET_RATE = 16000
_QUALITY = "HQ"


def _check_rate(name: str, rate: int) -> None:
    if rate <= 0:
        raise ValueError(f"{name} must be a positive sample rate in Hz, got {rate}")


class StreamResampler:
    """Resample one stream chunk by chunk, keeping filter state between chunks.

    `channels` > 1 takes and returns arrays of shape (channels, n); with one channel, 1-D arrays.
    Pass `last=True` with the final chunk (it may be empty) to flush the filter's tail; the
    resampler must not be used after that.
    """

    def __init__(self, in_rate: int, out_rate: int = TARGET_RATE, channels: int = 1) -> None:
        _check_rate("in_rate", in_rate)
        _check_rate("out_rate", out_rate)
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.channels = channels
        self._stream: soxr.ResampleStream | None = None
        if in_rate != out_rate:
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, channels, dtype="float32", quality=_QUALITY
            )

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next chunk; returns float32 (possibly empty while the filter fills)."""
        x = np.asarray(samples, dtype=np.float32)
        expected = (self.channels,) if self.channels > 1 else ()
        if x.shape[:-1] != expected or x.ndim != len(expected) + 1:
            want = f"({self.channels}, n)" if self.channels > 1 else "(n,)"
            raise ValueError(f"expected samples of shape {want}, got {x.shape}")
        if self._stream is None:
            return x.copy()
        if self.channels == 1:
            return self._stream.resample_chunk(np.ascontiguousarray(x), last=last)
        out = self._stream.resample_chunk(np.ascontiguousarray(x.T), last=last)
        return np.ascontiguousarray(out.T)


def resample(samples: np.ndarray, in_rate: int, out_rate: int = TARGET_RATE) -> np.ndarray:
    """Resample a whole signal at once: shape (n,) or (channels, n); returns float32."""
    _check_rate("in_rate", in_rate)
    _check_rate("out_rate", out_rate)
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"expected samples of shape (n,) or (channels, n), got {x.shape}")
    if in_rate == out_rate:
        return x.copy()
    if x.ndim == 1:
        return soxr.resample(x, in_rate, out_rate, quality=_QUALITY)
    out = soxr.resample(np.ascontiguousarray(x.T), in_rate, out_rate, quality=_QUALITY)
    return np.ascontiguousarray(out.T)

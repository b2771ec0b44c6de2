"""Settles a live stream's audio format at the edge: wire bytes in, float32 16 kHz per channel out.

Every dialect negotiates an encoding, a sample rate and a channel count; this turns each binary
frame into one float32 16 kHz mono array per channel, keeping resampler state across frames so
chunk boundaries leave no clicks. The engine never sees any other format.
"""

from __future__ import annotations

import numpy as np

from streamscribe.audio.codecs import bytes_per_sample, decode_pcm, deinterleave
from streamscribe.audio.resample import TARGET_RATE, StreamResampler


class PcmConverter:
    def __init__(self, encoding: str, sample_rate: int, channels: int = 1) -> None:
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.channels = channels
        self.frame_bytes = bytes_per_sample(encoding) * channels
        self._resamplers = [StreamResampler(sample_rate, TARGET_RATE) for _ in range(channels)]
        self.frames_in = 0

    def convert(self, data: bytes, last: bool = False) -> list[np.ndarray]:
        """One float32 16 kHz array per channel for `data` (whole frames only)."""
        samples = decode_pcm(data, self.encoding)
        self.frames_in += len(samples) // self.channels
        per_channel = (
            deinterleave(samples, self.channels) if self.channels > 1 else samples[None, :]
        )
        return [
            r.process(ch, last=last) for r, ch in zip(self._resamplers, per_channel, strict=True)
        ]

    @property
    def audio_ms(self) -> int:
        """Milliseconds of audio received so far (per channel)."""
        return self.frames_in * 1000 // self.sample_rate

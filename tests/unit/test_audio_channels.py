"""The live converter with telephony codecs and interleaved channels (what Deepgram clients send).

Two different tones, one per channel, are encoded as a client would (8 kHz A-law or mu-law,
interleaved), cut into frames at awkward places, and must come out as two separate 16 kHz
channels, each with its own tone, continuous across frame boundaries.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamscribe.audio.codecs import encode_alaw, encode_mulaw, encode_pcm16
from streamscribe.audio.converter import PcmConverter

ENCODERS = {"pcm_alaw": encode_alaw, "pcm_mulaw": encode_mulaw, "pcm_s16le": encode_pcm16}


def tone(hz: float, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def interleaved(encoding: str, rate: int, *channels: np.ndarray) -> bytes:
    frames = np.stack(channels, axis=1).ravel()
    return ENCODERS[encoding](frames)


@pytest.mark.parametrize("encoding", ["pcm_alaw", "pcm_mulaw", "pcm_s16le"])
def test_two_telephony_channels_come_out_apart_at_16_khz(encoding):
    left, right = tone(440, 8000, 1.0), tone(1000, 8000, 1.0)
    data = interleaved(encoding, 8000, left, right)
    conv = PcmConverter(encoding, 8000, 2)
    frame = conv.frame_bytes
    cuts = [0, 7 * frame, 333 * frame, 4000 * frame, len(data)]  # uneven frames
    outs = [conv.convert(data[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    outs.append(conv.convert(b"", last=True))
    ch0 = np.concatenate([o[0] for o in outs])
    ch1 = np.concatenate([o[1] for o in outs])
    assert abs(len(ch0) - 16000) <= 32 and len(ch0) == len(ch1)
    assert ch0.dtype == np.float32
    assert abs(peak_hz(ch0, 16000) - 440) <= 5
    assert abs(peak_hz(ch1, 16000) - 1000) <= 5
    # the other channel's tone does not leak in
    spectrum = np.abs(np.fft.rfft(ch0 * np.hanning(len(ch0))))
    freqs = np.fft.rfftfreq(len(ch0), 1 / 16000)
    assert spectrum[np.argmin(abs(freqs - 1000))] < 0.01 * spectrum.max()
    assert conv.audio_ms == 1000


def test_frame_boundaries_leave_no_clicks():
    x = tone(300, 8000, 0.5)
    data = encode_alaw(x)
    whole = PcmConverter("pcm_alaw", 8000).convert(data, last=True)[0]
    conv = PcmConverter("pcm_alaw", 8000)
    parts = [conv.convert(data[i : i + 160])[0] for i in range(0, len(data), 160)]
    parts.append(conv.convert(b"", last=True)[0])
    chunked = np.concatenate(parts)
    assert len(chunked) == len(whole)
    assert np.max(np.abs(chunked - whole)) < 1e-3


def test_a_partial_multichannel_frame_is_refused():
    conv = PcmConverter("pcm_mulaw", 8000, 2)
    with pytest.raises(ValueError, match="2-channel frames"):
        conv.convert(b"\xff\xff\xff")

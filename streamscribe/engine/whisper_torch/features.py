"""Batched Whisper log-mel features in PyTorch, equal to faster-whisper's NumPy extractor.

The CTranslate2 backend computes each request's features on its own clip (with 160 samples of
silence after it), normalises by that clip's own maximum, and fills the rest of the encoder
window with silence. Doing the same here keeps the two backends' inputs identical; doing it for the
whole batch in one STFT keeps it off the CPU when the model runs on a GPU.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["HOP", "N_FFT", "SAMPLE_RATE", "log_mel_batch", "mel_filters"]

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160


@cache
def mel_filters(n_mels: int, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-scale, area-normalised triangular filters (librosa's defaults), (n_mels, bins)."""
    f_sp = 200.0 / 3  # linear part: 66.7 Hz per mel below 1 kHz
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0

    def hz_to_mel(f: float) -> float:
        return f / f_sp if f < min_log_hz else min_log_mel + math.log(f / min_log_hz) / logstep

    mels = np.linspace(0.0, hz_to_mel(sr / 2), n_mels + 2)
    hz = np.where(
        mels < min_log_mel, mels * f_sp, min_log_hz * np.exp(logstep * (mels - min_log_mel))
    )
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    lo, center, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (bins[None, :] - lo) / (center - lo)
    falling = (hi - bins[None, :]) / (hi - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (hz[2:] - hz[:-2]))[:, None]
    return weights.astype(np.float32)


def log_mel_batch(
    clips: list[np.ndarray], frames: int, n_mels: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(B, n_mels, frames) float32 features of `clips` (float32 16 kHz, each at most `frames`
    hops long): per clip as faster-whisper computes them with padding=160, frames past a clip's
    own set to that clip's silence level."""
    device = torch.device(device)
    pad = N_FFT // 2
    counts = [(len(c) + HOP) // HOP for c in clips]  # frames the extractor keeps per clip
    longest = max(len(c) for c in clips) + HOP + 2 * pad
    signals = np.zeros((len(clips), longest), np.float32)
    for i, clip in enumerate(clips):
        padded = np.concatenate([clip.astype(np.float32, copy=False), np.zeros(HOP, np.float32)])
        signals[i, : len(padded) + 2 * pad] = np.pad(padded, pad, mode="reflect")
    x = torch.from_numpy(signals).to(device)
    window = torch.hann_window(N_FFT, periodic=True, device=device)
    spec = torch.stft(x, N_FFT, HOP, window=window, center=False, return_complex=True)
    power = spec.abs() ** 2  # (B, bins, n)
    filters = torch.from_numpy(mel_filters(n_mels)).to(device)
    mel = filters @ power
    logs = torch.clamp(mel, min=1e-10).log10()
    n = logs.shape[-1]
    idx = torch.arange(n, device=device)[None, :]
    valid = idx < torch.tensor(counts, device=device)[:, None]  # (B, n)
    peak = torch.where(valid[:, None, :], logs, torch.full_like(logs, -math.inf))
    peak = peak.amax(dim=(1, 2), keepdim=True)
    logs = (torch.maximum(logs, peak - 8.0) + 4.0) / 4.0
    if n < frames:
        logs = F.pad(logs, (0, frames - n))
        valid = F.pad(valid, (0, frames - n))
    # past its clip, each item hears digital silence (the floor of its own dynamic range), as
    # if the audio had been zero-padded before the transform
    silence = ((peak - 8.0) + 4.0) / 4.0
    logs = torch.where(valid[:, None, : logs.shape[-1]], logs, silence)
    return logs[..., :frames].contiguous()

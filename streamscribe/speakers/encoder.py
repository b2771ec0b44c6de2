"""Speaker embeddings from resemblyzer's pretrained voice encoder (the optional `speakers` extra).

Why not `resemblyzer.VoiceEncoder` itself: importing the `resemblyzer` package imports its audio
helpers, which import `webrtcvad` (whose module needs `pkg_resources`, gone from setuptools 81+)
and librosa (numba JIT: tens of seconds on the first call). The network is small (3-layer LSTM,
40 mel bands in, 256-d L2-normalised embedding out), so it is rebuilt here with torch and loaded
with the weights file that ships inside resemblyzer's wheel (`strict=True`: the same layers, the
same names), and the front end is `mel.py`. Nothing of resemblyzer is imported.

Inputs follow resemblyzer's preprocessing: volume raised (never lowered) to -30 dBFS, then
1.6 s partial windows (the length the model was trained on) whose embeddings are averaged and
re-normalised. Long silences should be cut before (the tracker keeps only the words' spans).

torch is imported on first use, never at import time. One model per device is shared by every
session; inference mutates nothing, so calls from several worker threads are safe.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamscribe.errors import SpeakerModelUnavailableError
from streamscribe.speakers.mel import HOP, N_MELS, RATE, mel_spectrogram

EMBEDDING_SIZE = 256
WINDOW_S = 1.6  # the encoder's training partial (160 frames)
HOP_S = 0.5
TARGET_DBFS = -30.0
INSTALL_HINT = "pip install 'streamscribe[speakers]'"

_lock = threading.Lock()
_shared: dict[tuple[str, int | None], SpeakerEncoder] = {}


def weights_path() -> Path:
    """The pretrained weights inside the installed resemblyzer wheel (the package not imported)."""
    try:
        spec = importlib.util.find_spec("resemblyzer")
    except (ImportError, ValueError):  # an import hook or a broken install refused it
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SpeakerModelUnavailableError(
            "speaker labels need the resemblyzer voice encoder, which is not installed; "
            f"fix: {INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        version = importlib.metadata.version("resemblyzer")
        raise SpeakerModelUnavailableError(
            f"resemblyzer {version} has no pretrained.pt at {path}; fix: reinstall it "
            f"({INSTALL_HINT} --force-reinstall)"
        )
    return path


def is_available() -> bool:
    """Whether torch and the resemblyzer weights are installed (cheap: imports nothing)."""
    try:
        weights_path()
        return importlib.util.find_spec("torch") is not None
    except (SpeakerModelUnavailableError, ImportError, ValueError):
        return False


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise SpeakerModelUnavailableError(
            f"speaker labels need torch, which is not installed ({e}); fix: {INSTALL_HINT}"
        ) from e
    return torch


def normalize_volume(audio: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Raise quiet audio to `target_dbfs` RMS; loud audio is left alone (as resemblyzer does)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if len(audio) else 0.0
    if rms <= 1e-9:
        return audio
    gain_db = target_dbfs - 20.0 * np.log10(rms)
    return audio if gain_db <= 0 else (audio * np.float32(10.0 ** (gain_db / 20.0)))


@dataclass(frozen=True)
class WindowEmbeddings:
    """Sliding-window embeddings of one stretch of audio.

    `spans` holds each window's (start, end) in samples of the audio given; `vectors` the
    (n, 256) L2-normalised embeddings in the same order. Audio shorter than one window gives one
    window covering all of it.
    """

    spans: np.ndarray  # (n, 2) int64 sample offsets
    vectors: np.ndarray  # (n, 256) float32, rows of norm 1

    def mean(self) -> np.ndarray:
        """The utterance embedding: the normalised mean of the windows (resemblyzer's rule)."""
        return unit(self.vectors.mean(axis=0))


def unit(v: np.ndarray) -> np.ndarray:
    """`v` scaled to norm 1 (float32); a zero vector stays zero."""
    v = np.asarray(v, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def window_starts(n_frames: int, window: int, hop: int) -> list[int]:
    """Frame offsets of the windows: every `hop`, plus one flush with the end if a tail is left."""
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, hop))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return starts


class SpeakerEncoder:
    """resemblyzer's voice encoder: 16 kHz float32 mono audio in, unit-norm 256-d vectors out.

    `device` is a torch device string ("cpu", "cuda", "cuda:1"). `threads`, when set, is passed
    to `torch.set_num_threads` at load: that setting is process-wide (the torch Whisper backend
    sets it too), so the default leaves it alone; the bench uses 1. The model loads on first use.
    """

    def __init__(self, device: str = "cpu", threads: int | None = None) -> None:
        self.device = device
        self.threads = threads
        self._model: Any = None
        self._torch: Any = None
        self._load_lock = threading.Lock()

    def load(self) -> SpeakerEncoder:
        """Load the weights now (idempotent); raises SpeakerModelUnavailableError naming the fix."""
        with self._load_lock:
            if self._model is None:
                path = weights_path()
                torch = _import_torch()
                if self.threads is not None:
                    torch.set_num_threads(self.threads)
                model = _build_network(torch)
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
                state = {
                    k: v
                    for k, v in checkpoint["model_state"].items()
                    if k.startswith(("lstm.", "linear."))
                }
                model.load_state_dict(state, strict=True)
                self._model = model.to(self.device).eval()
                self._torch = torch
        return self

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """One unit-norm embedding for the whole of `audio` (speech only, ideally)."""
        return self.embed_windows(audio, hop_s=WINDOW_S * 0.5).mean()

    def embed_windows(
        self, audio: np.ndarray, window_s: float = WINDOW_S, hop_s: float = HOP_S
    ) -> WindowEmbeddings:
        """Embeddings of `window_s` windows every `hop_s` over `audio` (for change detection)."""
        self.load()
        audio = normalize_volume(np.asarray(audio, dtype=np.float32))
        if len(audio) == 0:
            raise ValueError("cannot embed empty audio")
        mel = mel_spectrogram(audio)
        window = max(1, round(window_s * RATE / HOP))
        hop = max(1, round(hop_s * RATE / HOP))
        starts = window_starts(len(mel), window, hop)
        length = min(window, len(mel))
        batch = np.stack([mel[s : s + length] for s in starts])
        torch = self._torch
        with torch.inference_mode():
            vectors = self._model(torch.from_numpy(batch).to(self.device)).cpu().numpy()
        spans = np.array(
            [(s * HOP, min(len(audio), (s + length) * HOP)) for s in starts], dtype=np.int64
        )
        return WindowEmbeddings(spans, vectors.astype(np.float32))


def _build_network(torch: Any) -> Any:
    nn = torch.nn

    class VoiceEncoderNet(nn.Module):
        """resemblyzer's VoiceEncoder layers: LSTM(40, 256, 3) -> Linear(256, 256) -> ReLU -> L2."""

        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, EMBEDDING_SIZE)
            self.relu = nn.ReLU()

        def forward(self, mels: Any) -> Any:
            _, (hidden, _) = self.lstm(mels)
            raw = self.relu(self.linear(hidden[-1]))
            return raw / torch.norm(raw, dim=1, keepdim=True).clamp_min(1e-12)

    return VoiceEncoderNet()


def shared_encoder(device: str = "cpu", threads: int | None = None) -> SpeakerEncoder:
    """The process-wide encoder for `device` (one model in memory, however many sessions)."""
    with _lock:
        key = (device, threads)
        if key not in _shared:
            _shared[key] = SpeakerEncoder(device, threads)
        return _shared[key]

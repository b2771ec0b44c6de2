"""Streaming voice activity detection with the silero model that ships inside faster-whisper.

The model is run one 32 ms frame at a time with its recurrent state carried across calls, so a
stream of any length costs the same per second and nothing is buffered beyond one frame.
`VadTracker` turns the frame probabilities into speech/silence with hysteresis.

What lives elsewhere: deciding when a turn starts and ends (pre-roll, trailing silence, sentence
ends) is the session's policy (`session.py`); offline files are cut with faster-whisper's own
batch VAD (`offline.py`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

FRAME = 512  # samples at 16 kHz (32 ms)
FRAME_MS = 32
CONTEXT = 64  # samples of the previous frame silero sees before each frame (its v5 input)
STATE_SIZE = 128  # silero's recurrent state width
# hysteresis: once in speech, frames stay speech down to this much below the onset threshold
# (breaths and soft word endings dip below it without ending the speech) ...
OFF_THRESHOLD_GAP = 0.15
OFF_THRESHOLD_FLOOR = 0.05  # ... but never below this, or silence would never end speech

_model_lock = threading.Lock()
_session = None


def _onnx_session():
    """One shared onnxruntime session (the model is stateless; state is passed per call)."""
    global _session
    with _model_lock:
        if _session is None:
            from faster_whisper.vad import get_vad_model

            _session = get_vad_model().session
    return _session


class SileroStream:
    """Frame probabilities for one audio stream."""

    def __init__(self) -> None:
        self._session = _onnx_session()
        self._h = np.zeros((1, 1, STATE_SIZE), dtype=np.float32)
        self._c = np.zeros((1, 1, STATE_SIZE), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def process(self, samples: np.ndarray) -> list[float]:
        """Speech probability of every complete 32 ms frame in `samples` (plus leftovers)."""
        data = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        n = len(data) // FRAME
        probs: list[float] = []
        for i in range(n):
            frame = data[i * FRAME : (i + 1) * FRAME]
            x = np.concatenate([self._context, frame])[None, :]
            out, self._h, self._c = self._session.run(
                None, {"input": x, "h": self._h, "c": self._c}
            )
            self._context = frame[-CONTEXT:]
            probs.append(float(np.asarray(out).reshape(-1)[0]))
        self._pending = data[n * FRAME :].copy()
        return probs


@dataclass
class VadState:
    in_speech: bool = False
    speech_start_ms: int = 0
    speech_end_ms: int = 0  # end of the last speech frame seen
    max_prob: float = 0.0


class VadTracker:
    """Speech/silence decisions with hysteresis over frame probabilities (pure; no model)."""

    def __init__(self, threshold: float = 0.5, min_speech_ms: int = 64, min_silence_ms: int = 96):
        self.set_threshold(threshold)
        self.min_speech_frames = max(1, min_speech_ms // FRAME_MS)
        self.min_silence_frames = max(1, min_silence_ms // FRAME_MS)
        self.state = VadState()
        self._run = 0
        self._pos_ms = 0

    def set_threshold(self, threshold: float) -> None:
        """Speech starts at `threshold`; it ends below the lower, hysteresis threshold."""
        self.threshold = threshold
        self.off_threshold = max(OFF_THRESHOLD_FLOOR, threshold - OFF_THRESHOLD_GAP)

    def update(self, prob: float) -> str | None:
        """Feed one frame; return "start" or "end" when speech starts or ends at this frame."""
        st = self.state
        frame_start = self._pos_ms
        self._pos_ms += FRAME_MS
        st.max_prob = max(st.max_prob, prob)
        if not st.in_speech:
            self._run = self._run + 1 if prob >= self.threshold else 0
            if self._run >= self.min_speech_frames:
                st.in_speech = True
                st.speech_start_ms = frame_start - (self._run - 1) * FRAME_MS
                st.speech_end_ms = self._pos_ms
                self._run = 0
                return "start"
            return None
        if prob >= self.off_threshold:
            st.speech_end_ms = self._pos_ms
            self._run = 0
            return None
        self._run += 1
        if self._run >= self.min_silence_frames:
            st.in_speech = False
            self._run = 0
            return "end"
        return None

"""What the engine holds per session for speaker labels: the shared encoder plus its own tracker.

The engine calls `label_turn` once per final turn, from a worker thread, with the turn's audio
and its words' times relative to that audio; it gets one label per word. Creating this object is
where a missing `speakers` extra is reported (`SpeakerModelUnavailableError`, naming the fix), so
a session that asks for speaker labels can be refused at connect time.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

import numpy as np

from streamscribe.speakers.clustering import SpeakerSettings, SpeakerTracker, dominant_label
from streamscribe.speakers.encoder import SpeakerEncoder, shared_encoder
from streamscribe.speakers.turns import WordSpan, embed_turn


class SessionSpeakers:
    """Speaker labels for one session's final turns (labels "A", "B", ...; never relabelled)."""

    def __init__(
        self,
        max_speakers: int | None = None,
        settings: SpeakerSettings | None = None,
        encoder: SpeakerEncoder | None = None,
        device: str = "cpu",
    ) -> None:
        settings = settings or SpeakerSettings()
        if max_speakers is not None:
            settings = dataclasses.replace(settings, max_speakers=max_speakers)
        self.encoder = (encoder or shared_encoder(device)).load()
        self.tracker = SpeakerTracker(settings)
        self._lock = threading.Lock()

    def label_turn(self, audio: np.ndarray, words: Sequence[WordSpan]) -> list[str]:
        """Labels for the words of one final turn: float32 16 kHz mono `audio`, word
        (start_ms, end_ms) relative to its first sample. Turns must come in order."""
        s = self.tracker.settings
        turn = embed_turn(
            self.encoder, audio, words, s.word_pad_ms, s.merge_gap_ms, s.window_s, s.hop_s
        )
        with self._lock:
            return self.tracker.label_turn(turn, words)

    @staticmethod
    def turn_label(labels: Sequence[str], words: Sequence[WordSpan]) -> str | None:
        """The turn's own `speaker`: the label holding most of its word time."""
        return dominant_label(labels, words)

    @property
    def speakers(self) -> list[str]:
        return self.tracker.labels

"""The stateless decode contract between streaming sessions and model backends.

A `DecodeRequest` carries everything a model replica needs (the audio window, the text prompt,
the search settings); a `DecodeResult` carries the words with times relative to the window.
Because nothing else is shared, any replica can serve any request: in-process today, a pool of
remote replicas tomorrow. `Transcriber` is the interface every backend implements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# The shortest encoder window that decodes as well as Whisper's own 30 s one, at half its cost
# (tiny.en, 48 dev utterances replayed by bench/replay_bench.py: 10.4% WER with 16 s or 20 s,
# 10.5% with 10 s, 10.7% with 30 s, 12.2-12.5% with windows padded only to the next 2 s)
ACCURATE_WINDOW_S = 16.0
BUCKET_S = 2.0  # encoder windows are padded to a multiple of this
MIN_WINDOW_S = 2.0
MAX_WINDOW_S = 30.0  # Whisper's own window
TAIL_S = 1.0  # silence after the audio, so the last word is not cut off


def window_seconds(audio_s: float, min_window_s: float = 0.0) -> float:
    """Encoder window for `audio_s` of audio (every backend): a little silence after it,
    rounded to a bucket, at least `min_window_s`."""
    padded = max(MIN_WINDOW_S, min_window_s, audio_s + TAIL_S)
    return min(MAX_WINDOW_S, math.ceil(padded / BUCKET_S) * BUCKET_S)


@dataclass(frozen=True, slots=True)
class DecodeRequest:
    audio: np.ndarray  # float32 mono 16 kHz
    prompt: str = ""
    beam_size: int = 1
    language: str | None = None  # None: detect (multilingual models) or English
    task: str = "transcribe"
    final: bool = False  # finals are scheduled before partials
    # with language None: keep `language_hint` unless another language is detected with at
    # least `switch_confidence` (a session's language does not flip on a short, unclear turn)
    language_hint: str | None = None
    switch_confidence: float = 0.0
    # encode at least this many seconds (the audio padded with silence): Whisper was trained on
    # 30 s windows and makes more errors in short ones; longer costs more (finals use it)
    min_window_s: float = 0.0
    # queue order among non-final requests: 1 = a turn's first partial or its end-of-speech
    # decode (what first-partial and end-of-turn latency wait on), 2 = a routine partial
    urgency: int = 2
    # a guess at the output: the token ids of the session's previous partial over the same
    # window start and prompt (`DecodeResult.tokens`). A backend may verify it in one decoder
    # pass and keep the prefix it would have written itself (the torch backend, greedy); the
    # output never depends on it, only the cost does. Empty: no guess; any backend may ignore it.
    draft: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RawWord:
    """A word as the model wrote it (cased, punctuated), times in seconds from window start."""

    text: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True, slots=True)
class DecodeResult:
    words: tuple[RawWord, ...]
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 1.0
    language: str | None = None
    language_probability: float | None = None
    rejected: str | None = None  # why the hypothesis was dropped (hallucination guards)
    decode_ms: float = 0.0
    meta: dict = field(default_factory=dict)
    # the text token ids the model wrote (before the guards), for the next request's `draft`;
    # empty where a backend does not report them
    tokens: tuple[int, ...] = ()


class Transcriber(Protocol):
    """A model backend: decodes a batch of independent requests."""

    sample_rate: int
    multilingual: bool

    def transcribe_batch(self, requests: list[DecodeRequest]) -> list[DecodeResult]: ...

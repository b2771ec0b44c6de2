"""Word start times after silence, with the real model on speech whose onsets are exact.

eSpeak NG speaks two sentences into digital silence, so where each begins is known to the
sample. Whisper's alignment starts the first word after silence in the silence (at the window's
pre-roll when streaming, at the region's padding offline); the engine starts it where the VAD
heard speech begin (`engine/word_timing.py`). Both paths are held to the true onset here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from speech import spoken_or_skip

from streamscribe.engine.model_files import resolve_model
from streamscribe.engine.offline import transcribe_audio
from streamscribe.engine.session import StreamingSession, TurnSettings
from streamscribe.engine.whisper_ct2 import WhisperCT2Transcriber
from streamscribe.errors import ModelNotFoundError
from streamscribe.events import TurnUpdate, Word

RATE = 16000
TOLERANCE_MS = 120  # a VAD frame is 32 ms; eSpeak's first phone may be quiet


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> WhisperCT2Transcriber:
    try:
        path = resolve_model("tiny.en", tmp_path_factory.mktemp("models"))
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))
    return WhisperCT2Transcriber(str(Path(path)), compute_type="int8", cpu_threads=2)


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, list[int]]:
    """1.2 s of silence, a sentence, 1.5 s of silence, a sentence, 1.5 s of silence; and the
    onset (ms) of each sentence."""
    parts, onsets, n = [], [], 0
    for text in ("The weather today is sunny.", "We will meet at the station tomorrow."):
        silence = np.zeros(int((1.2 if not parts else 1.5) * RATE), np.float32)
        said = spoken_or_skip(text)
        lead = int(np.argmax(np.abs(said) > 0.01))  # eSpeak's own quiet start
        onsets.append((n + len(silence) + lead) * 1000 // RATE)
        parts += [silence, said]
        n += len(silence) + len(said)
    parts.append(np.zeros(int(1.5 * RATE), np.float32))
    return np.concatenate(parts), onsets


def first_word_after(words: list[Word], onset_ms: int) -> Word:
    return next(w for w in words if w.end_ms > onset_ms)


def stream(model: WhisperCT2Transcriber, audio: np.ndarray) -> list[TurnUpdate]:
    """The audio through one session in 100 ms chunks, each decode answered at once."""
    session = StreamingSession(settings=TurnSettings())
    ends: list[TurnUpdate] = []

    def serve(events: list) -> None:
        ends.extend(e for e in events if isinstance(e, TurnUpdate) and e.end_of_turn)
        while (ticket := session.next_request()) is not None:
            result = model.transcribe_batch([ticket.request])[0]
            serve(session.apply(ticket, result))

    for i in range(0, len(audio), RATE // 10):
        serve(session.feed(audio[i : i + RATE // 10]))
    serve(session.force_endpoint())
    return ends


def test_streamed_words_start_where_the_speech_does(model, speech):
    audio, onsets = speech
    words = [w for t in stream(model, audio) for w in t.words]
    assert len(words) >= 8, words
    for onset in onsets:
        first = first_word_after(words, onset)
        assert abs(first.start_ms - onset) <= TOLERANCE_MS, (onset, first)


def test_offline_words_start_where_the_speech_does(model, speech):
    audio, onsets = speech
    words = [w for t in transcribe_audio(audio, model) for w in t.words]
    assert len(words) >= 8, words
    for onset in onsets:
        first = first_word_after(words, onset)
        assert abs(first.start_ms - onset) <= TOLERANCE_MS, (onset, first)

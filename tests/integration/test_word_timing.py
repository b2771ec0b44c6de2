"""Word start times after silence, with the real model on speech whose onsets are exact.

eSpeak NG speaks two sentences into digital silence, so where each begins is known to the
sample. Whisper's alignment starts the first word after silence in the silence (at the window's
pre-roll when streaming, at the region's padding offline); the engine starts it where the VAD
heard speech begin (`engine/word_timing.py`). Both paths are held to the true onset here, and
the last word of each sentence to its true end.
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
# ends are Whisper's own (20 ms alignment frames; a fading last vowel): measured 44-125 ms off
END_TOLERANCE_MS = 200


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> WhisperCT2Transcriber:
    try:
        path = resolve_model("tiny.en", tmp_path_factory.mktemp("models"))
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))
    return WhisperCT2Transcriber(str(Path(path)), compute_type="int8", cpu_threads=2)


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """1.2 s of silence, a sentence, 1.5 s of silence, a sentence, 1.5 s of silence; and the
    onset and offset (ms) of each sentence."""
    parts, spans, n = [], [], 0
    for text in ("The weather today is sunny.", "We will meet at the station tomorrow."):
        silence = np.zeros(int((1.2 if not parts else 1.5) * RATE), np.float32)
        said = spoken_or_skip(text)
        loud = np.nonzero(np.abs(said) > 0.01)[0]  # eSpeak's own quiet start and end
        at = n + len(silence)
        spans.append(((at + loud[0]) * 1000 // RATE, (at + loud[-1]) * 1000 // RATE))
        parts += [silence, said]
        n += len(silence) + len(said)
    parts.append(np.zeros(int(1.5 * RATE), np.float32))
    return np.concatenate(parts), spans


def assert_words_span_the_speech(words: list[Word], spans: list[tuple[int, int]]) -> None:
    """Each sentence's first word starts at its onset and its last word ends at its offset."""
    assert len(words) >= 8, words
    for onset, offset in spans:
        first = next(w for w in words if w.end_ms > onset)
        assert abs(first.start_ms - onset) <= TOLERANCE_MS, (onset, first)
        last = max((w for w in words if w.start_ms < offset), key=lambda w: w.start_ms)
        assert abs(last.end_ms - offset) <= END_TOLERANCE_MS, (offset, last)


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


def test_streamed_words_start_and_end_where_the_speech_does(model, speech):
    audio, spans = speech
    assert_words_span_the_speech([w for t in stream(model, audio) for w in t.words], spans)


def test_offline_words_start_and_end_where_the_speech_does(model, speech):
    audio, spans = speech
    words = [w for t in transcribe_audio(audio, model) for w in t.words]
    assert_words_span_the_speech(words, spans)

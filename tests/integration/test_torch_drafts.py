"""Draft-verified partials on the torch backend, with tiny.en and real speech: lossless.

A partial carries the session's previous tokens as a draft; the backend verifies it in one
teacher-forced pass and continues greedily from the first disagreement. That must change what
a partial costs and nothing it says: every window below is decoded with its draft and without,
and the two must agree token for token, word for word, time for time. The windows are real
ones: a `StreamingSession` (silero VAD, the real cadence) replays dev-set utterances (eSpeak NG
sentences where ../shared/eval is absent; a clean skip where neither is), and a batch of
streams whose windows grow by 0.5 s verifies rows of different draft lengths in one pass.

The cheaper encoder that keeps the text: CTranslate2's float32 encoder feeding the torch decoder
(`encoder="ct2"`) must give the same tokens and word times on the same growing windows.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs PyTorch")

from speech import speech_or_skip  # noqa: E402

from streamscribe.engine.decoding import DecodeRequest, DecodeResult  # noqa: E402
from streamscribe.engine.model_files import resolve_model  # noqa: E402
from streamscribe.engine.session import StreamingSession, TurnSettings  # noqa: E402
from streamscribe.engine.whisper_torch.transcriber import WhisperTorchTranscriber  # noqa: E402
from streamscribe.errors import ModelNotFoundError  # noqa: E402

RATE = 16000
CHUNK = RATE // 10


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return Path(resolve_model("tiny.en", tmp_path_factory.mktemp("models")))
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def model(model_dir: Path) -> WhisperTorchTranscriber:
    return WhisperTorchTranscriber(model_dir, device="cpu", cpu_threads=1, encoder="torch")


def assert_same(plain: DecodeResult, drafted: DecodeResult, context: str) -> None:
    assert drafted.tokens == plain.tokens, context
    assert drafted.text == plain.text, context
    assert [(w.text, w.start, w.end) for w in drafted.words] == [
        (w.text, w.start, w.end) for w in plain.words
    ], context
    assert drafted.avg_logprob == pytest.approx(plain.avg_logprob, abs=1e-4), context
    assert drafted.no_speech_prob == pytest.approx(plain.no_speech_prob, abs=1e-4), context
    assert drafted.rejected == plain.rejected, context


def test_session_partials_decode_the_same_with_their_drafts(model) -> None:
    """Each utterance streamed through a real session in 100 ms chunks; every decode it asks
    for is served with its draft and checked against the same request without one."""
    drafted = accepted = partials = 0
    for utt in speech_or_skip(3):
        session = StreamingSession(settings=TurnSettings())
        audio = np.concatenate([utt.audio, np.zeros(RATE, np.float32)])
        for i in range(0, len(audio), CHUNK):
            session.feed(audio[i : i + CHUNK])
            while (ticket := session.next_request()) is not None:
                request = ticket.request
                (got,) = model.transcribe_batch([request])
                if request.draft:
                    (want,) = model.transcribe_batch([dataclasses.replace(request, draft=())])
                    assert_same(want, got, f"{utt.source} {ticket.kind} {ticket.window_end_ms}")
                    partials += 1
                    drafted += got.meta["draft"]
                    accepted += got.meta["accepted"]
                else:
                    assert got.meta["draft"] == 0
                session.apply(ticket, got)
    assert partials >= 6, "the session drafted too few partials to prove anything"
    assert accepted >= 0.5 * drafted, (accepted, drafted)  # most of a draft is right


def test_a_batch_of_streams_verifies_drafts_of_different_lengths_in_one_pass(model) -> None:
    """Three streams whose windows grow by 0.5 s, decoded as one batch per step with drafts
    (rows accept different lengths and continue at their own positions) and without."""
    utts = speech_or_skip(3)
    drafts: list[tuple[int, ...]] = [() for _ in utts]
    longest = max(len(u.audio) for u in utts)
    steps = mixed = 0
    for end in range(RATE, longest + RATE // 2, RATE // 2):
        audio = [u.audio[: min(end, len(u.audio))] for u in utts]
        plain = model.transcribe_batch([DecodeRequest(a) for a in audio])
        got = model.transcribe_batch(
            [DecodeRequest(a, draft=d) for a, d in zip(audio, drafts, strict=True)]
        )
        for k, (want, res) in enumerate(zip(plain, got, strict=True)):
            assert_same(want, res, f"stream {k} at {end / RATE:.1f} s")
        accepted = {r.meta["accepted"] for r in got}
        mixed += len(accepted) > 1
        steps += 1
        drafts = [r.tokens for r in got]
    assert steps >= 6 and mixed >= 2


def test_the_ct2_float32_encoder_feeding_the_torch_decoder_keeps_every_word(
    model, model_dir: Path
) -> None:
    pytest.importorskip("ctranslate2")
    ct2 = WhisperTorchTranscriber(model_dir, device="cpu", cpu_threads=1, encoder="ct2")
    utts = speech_or_skip(3)
    windows = 0
    for end in range(RATE, max(len(u.audio) for u in utts) + RATE // 2, RATE):
        requests = [DecodeRequest(u.audio[: min(end, len(u.audio))]) for u in utts]
        for k, (want, got) in enumerate(
            zip(model.transcribe_batch(requests), ct2.transcribe_batch(requests), strict=True)
        ):
            assert_same(want, got, f"stream {k} at {end / RATE:.1f} s")
            windows += 1
    assert windows >= 12

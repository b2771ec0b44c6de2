"""Speaker labels with the real resemblyzer encoder on real speech.

Two LibriSpeech speakers of ../shared/eval/dev when it is there, else two clearly different
eSpeak NG voices. Tests that need the model skip when torch or resemblyzer is missing (CI installs
the `speakers` extra, so there they run); the missing-extra error is checked either way.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from speech import SHARED_EVAL

from streamscribe.audio.files import decode_file
from streamscribe.speakers import SessionSpeakers, is_available
from streamscribe.speakers.encoder import SpeakerEncoder
from streamscribe.speakers.mel import mel_spectrogram

RATE = 16000
LIBRI = ("ls-1688", "ls-2033")  # a man and a woman reading different books
ESPEAK = (["-v", "en-us"], ["-v", "en-us+f4", "-p", "90"])  # resemblyzer tells these apart
SENTENCES = (
    "Please call Stella and ask her to bring these things with her from the store.",
    "The weather today is sunny with a light breeze from the west.",
)

needs_model = pytest.mark.skipif(
    not is_available(), reason="torch/resemblyzer missing: pip install 'streamscribe[speakers]'"
)


@dataclass(frozen=True)
class Utterance:
    speaker: str
    audio: np.ndarray
    text: str

    def words(self, offset_ms: float = 0.0) -> list[tuple[int, int]]:
        """Word times from a split of the duration by characters (no aligner needed)."""
        tokens = self.text.split()
        total = sum(len(t) + 1 for t in tokens) - 1
        per_char = 1000.0 * len(self.audio) / RATE / total
        out, pos = [], 0
        for tok in tokens:
            a = offset_ms + pos * per_char
            out.append((round(a), round(a + len(tok) * per_char)))
            pos += len(tok) + 1
        return out


def _librispeech() -> list[list[Utterance]] | None:
    manifest = SHARED_EVAL / "dev" / "manifest.jsonl"
    if not manifest.is_file():
        return None
    rows = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    out = []
    for speaker in LIBRI:
        picked = [
            r
            for r in rows
            if r["kind"] == "utterance" and r["speaker"] == speaker and 4 <= r["duration"] <= 10
        ][:2]
        out.append(
            [
                Utterance(speaker, decode_file(SHARED_EVAL / "dev" / r["audio"]), r["text"])
                for r in picked
            ]
        )
    return out if all(len(u) == 2 for u in out) else None


def _espeak() -> list[list[Utterance]] | None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    out = []
    with tempfile.TemporaryDirectory() as d:
        for i, voice in enumerate(ESPEAK):
            spoken = []
            for j, text in enumerate(SENTENCES):
                path = Path(d) / f"{i}-{j}.wav"
                subprocess.run([exe, *voice, "-s", "150", "-w", str(path), text], check=True)
                spoken.append(Utterance(" ".join(voice), decode_file(path), text))
            out.append(spoken)
    return out


@pytest.fixture(scope="module")
def two_speakers() -> list[list[Utterance]]:
    """[[x1, x2], [y1, y2]]: two utterances each of two speakers."""
    found = _librispeech() or _espeak()
    if found is None:
        pytest.skip("no speech: ../shared/eval is absent and espeak-ng is not installed")
    return found


@pytest.fixture(scope="module")
def encoder() -> SpeakerEncoder:
    return SpeakerEncoder().load()


@needs_model
def test_two_speakers_get_two_labels_and_each_keeps_its_own(two_speakers, encoder):
    (x1, x2), (y1, y2) = two_speakers
    session = SessionSpeakers(encoder=encoder)
    labels = [session.label_turn(u.audio, u.words()) for u in (x1, y1, x2, y2)]
    assert [set(lab) for lab in labels] == [{"A"}, {"B"}, {"A"}, {"B"}]
    assert session.speakers == ["A", "B"]


@needs_model
def test_a_change_of_voice_inside_one_turn_is_cut_at_the_right_word(two_speakers, encoder):
    (x1, x2), (y1, _) = two_speakers
    session = SessionSpeakers(encoder=encoder)
    session.label_turn(x1.audio, x1.words())
    gap = np.zeros(RATE // 2, dtype=np.float32)
    audio = np.concatenate([x2.audio, gap, y1.audio])
    shift = 1000.0 * (len(x2.audio) + len(gap)) / RATE
    words = x2.words() + y1.words(shift)
    labels = session.label_turn(audio, words)
    expected = ["A"] * len(x2.words()) + ["B"] * len(y1.words())
    wrong = sum(a != b for a, b in zip(labels, expected, strict=True))
    assert wrong <= 1, (labels, expected)
    assert session.speakers == ["A", "B"]


@needs_model
def test_embeddings_are_unit_vectors_and_the_same_from_several_threads(two_speakers, encoder):
    audio = two_speakers[0][0].audio
    alone = encoder.embed_windows(audio)
    assert alone.vectors.shape == (len(alone.spans), 256)
    assert np.allclose(np.linalg.norm(alone.vectors, axis=1), 1.0, atol=1e-5)
    assert alone.spans[0].tolist() == [0, 25600] and alone.spans[-1][1] == len(audio)
    assert np.isclose(np.linalg.norm(encoder.embed(audio)), 1.0, atol=1e-5)
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(encoder.embed_windows(audio).vectors)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(np.allclose(r, alone.vectors, atol=1e-5) for r in results)
    short = encoder.embed_windows(audio[:8000])  # shorter than one window: one window over all
    assert short.spans.tolist() == [[0, 8000]]


def test_mel_front_end_matches_librosa():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    for n in (400, 16000, 23457):
        y = (0.1 * rng.standard_normal(n)).astype(np.float32)
        want = librosa.feature.melspectrogram(y=y, sr=RATE, n_fft=400, hop_length=160, n_mels=40).T
        got = mel_spectrogram(y)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5 * want.max()


def test_without_the_extra_the_error_names_the_fix_and_the_package_imports_no_torch():
    code = (
        "import sys\n"
        "import streamscribe.speakers as s\n"
        "assert 'torch' not in sys.modules, 'importing the package imported torch'\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "from streamscribe.errors import SpeakerModelUnavailableError\n"
        "try:\n"
        "    s.SessionSpeakers()\n"
        "except SpeakerModelUnavailableError as e:\n"
        "    print(e)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pip install 'streamscribe[speakers]'" in done.stdout

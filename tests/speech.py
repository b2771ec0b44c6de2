"""Real speech for tests: the shared evaluation set when it is there, eSpeak NG otherwise.

`../shared/eval/dev` (recorded LibriSpeech-style speech with references) is read in place, never
copied. Without it, sentences are spoken by eSpeak NG (the Debian `espeak-ng` program). Tests
that need speech skip cleanly, with the reason, when neither is available.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from streamscribe.audio.files import decode_file

ROOT = Path(__file__).resolve().parents[1]
# STREAMSCRIBE_TEST_EVAL=none runs the suite as on a machine without ../shared (eSpeak only)
SHARED_EVAL = Path(os.environ.get("STREAMSCRIBE_TEST_EVAL", ROOT.parent / "shared" / "eval"))
RATE = 16000

SENTENCES = [  # spoken at 130 words per minute, which tiny.en transcribes reliably
    "Please call Stella and ask her to bring these things with her from the store.",
    "The weather today is sunny with a light breeze from the west.",
    "We will meet at the station early tomorrow morning.",
]


@dataclass(frozen=True)
class Speech:
    audio: np.ndarray  # float32 16 kHz mono
    text: str
    source: str

    @property
    def seconds(self) -> float:
        return len(self.audio) / RATE

    def pcm16(self) -> bytes:
        return (np.clip(self.audio, -1, 1) * 32767).astype("<i2").tobytes()


def normalize(text: str) -> str:
    text = text.lower().replace("mister", "mr").replace("mr.", "mr")
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    ref, hyp = normalize(reference), normalize(hypothesis)
    return jiwer.wer(ref, hyp) if ref else float(bool(hyp))


def _dev_rows() -> list[dict]:
    manifest = SHARED_EVAL / "dev" / "manifest.jsonl"
    if not manifest.exists():
        return []
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def _espeak(text: str) -> np.ndarray | None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "s.wav"
        subprocess.run([exe, "-v", "en-us", "-s", "130", "-w", str(out), text], check=True)
        return decode_file(out)


@cache
def utterances(n: int = 3) -> tuple[Speech, ...]:
    """`n` utterances of real speech with their reference text (empty if none available)."""
    rows = [r for r in _dev_rows() if r["kind"] == "utterance" and 4.0 <= r["duration"] <= 12.0]
    if rows:
        picked = rows[:: max(1, len(rows) // n)][:n]
        return tuple(
            Speech(decode_file(SHARED_EVAL / "dev" / r["audio"]), r["text"], r["id"])
            for r in picked
        )
    out = []
    for sentence in SENTENCES[:n]:
        audio = _espeak(sentence)
        if audio is None:
            return ()
        out.append(Speech(audio, sentence, "espeak-ng"))
    return tuple(out)


def spoken_or_skip(text: str) -> np.ndarray:
    """`text` spoken by eSpeak NG (digital silence around it, so its onset is exact)."""
    import pytest

    audio = _espeak(text)
    if audio is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return audio


def joined(parts: tuple[Speech, ...], gap_s: float = 1.5) -> Speech:
    """The utterances one after another with silence between (each becomes a turn)."""
    gap = np.zeros(int(gap_s * RATE), dtype=np.float32)
    chunks = []
    for p in parts:
        chunks += [p.audio, gap]
    return Speech(
        np.concatenate(chunks), " ".join(p.text for p in parts), "+".join(p.source for p in parts)
    )


def speech_or_skip(n: int = 3) -> tuple[Speech, ...]:
    import pytest

    found = utterances(n)
    if not found:
        pytest.skip("no speech available: ../shared/eval is absent and espeak-ng is not installed")
    return found


def reference_speaker(start_s: float, end_s: float, turns: list[dict]) -> str | None:
    """The reference speaker (manifest `turns`) of most of [start_s, end_s]; None when no one
    holds two thirds of it (a phrase across a change of speaker has no one right label)."""
    held: dict[str, float] = {}
    for t in turns:
        overlap = min(end_s, t["end"]) - max(start_s, t["start"])
        if overlap > 0:
            held[t["speaker"]] = held.get(t["speaker"], 0.0) + overlap
    if not held:
        return None
    speaker, most = max(held.items(), key=lambda kv: kv[1])
    return speaker if most >= 2 / 3 * sum(held.values()) else None


def speaker_accuracy(phrases: list[tuple[float, float, str]], turns: list[dict]) -> float:
    """The share of (start_s, end_s, label) phrases with a clear reference speaker whose label
    is right, under the best one-to-one mapping of labels to reference speakers."""
    import itertools

    pairs = [(label, reference_speaker(a, b, turns)) for a, b, label in phrases]
    pairs = [(got, want) for got, want in pairs if want is not None]
    if not pairs:
        return 0.0
    labels = sorted({g for g, _ in pairs})
    wanted = sorted({w for _, w in pairs} | {t["speaker"] for t in turns})
    best = 0
    for perm in itertools.permutations(wanted, min(len(labels), len(wanted))):
        mapping = dict(zip(labels, perm, strict=False))
        best = max(best, sum(1 for g, w in pairs if mapping.get(g) == w))
    return best / len(pairs)

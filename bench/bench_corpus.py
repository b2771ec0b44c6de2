"""The evaluation audio and its scoring: manifest rows, PCM, normalised WER, the offline baseline.

Why this exists: streaming WER means little alone; the question is how much accuracy streaming
costs against the same model run offline on the same files. Both are scored here the same way
(Whisper's English normaliser on both sides, corpus WER with jiwer). The offline transcripts are
cached in bench/results/ per model and file, because they do not change between runs and take a
minute of CPU that would otherwise compete with the server.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

RATE = 16000


@dataclass(frozen=True)
class Clip:
    id: str
    kind: str
    path: Path
    text: str
    duration: float


def load_manifest(eval_dir: Path, kind: str, limit: int | None = None) -> list[Clip]:
    manifest = eval_dir / "manifest.jsonl"
    if not manifest.is_file():
        sys.exit(
            f"error: no evaluation manifest at {manifest}\n"
            "fix: pass --eval-dir pointing at the dev set (the folder holding manifest.jsonl)"
        )
    clips = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("kind") == kind:
            clips.append(
                Clip(row["id"], kind, eval_dir / row["audio"], row["text"], float(row["duration"]))
            )
    if not clips:
        sys.exit(f"error: no rows of kind {kind!r} in {manifest}")
    return clips[:limit] if limit else clips


def read_pcm(path: Path) -> bytes:
    """The raw pcm_s16le bytes of a 16 kHz mono 16-bit WAV (the dev set's only format)."""
    with wave.open(str(path), "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (RATE, 1, 2):
            sys.exit(f"error: {path} is not 16 kHz mono 16-bit PCM")
        return w.readframes(w.getnframes())


def to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


@cache
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalise(text: str) -> str:
    return " ".join(_normalizer()(text).split())


def corpus_wer(refs: list[str], hyps: list[str]) -> float | None:
    """Word error rate over all pairs together (errors / reference words), normalised."""
    import jiwer

    pairs = [(normalise(r), normalise(h)) for r, h in zip(refs, hyps, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        return None
    return jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


def model_path() -> str:
    """The model the server under test runs, resolved as the server resolves it: its settings
    (`STREAMSCRIBE_MODEL`, e.g. `base`; the bundled tiny.en by default)."""
    from streamscribe.config import Settings
    from streamscribe.engine.model_files import resolve_model

    settings = Settings()
    return resolve_model(settings.model, settings.model_cache_dir)


def offline_hypotheses(clips: list[Clip], cache_dir: Path, beam_size: int = 5) -> dict[str, str]:
    """faster-whisper's own transcript of each clip (int8, beam 5), cached per model and clip."""
    path = model_path()
    key = hashlib.sha256(f"{path}|int8|beam{beam_size}".encode()).hexdigest()[:16]
    cache_file = cache_dir / f"offline-{key}.json"
    cached: dict[str, str] = {}
    if cache_file.is_file():
        cached = json.loads(cache_file.read_text(encoding="utf-8")).get("hypotheses", {})
    todo = [c for c in clips if c.id not in cached]
    if todo:
        from faster_whisper import WhisperModel

        model = WhisperModel(path, compute_type="int8")
        t0 = time.monotonic()
        for i, clip in enumerate(todo, 1):
            segments, _ = model.transcribe(to_float(read_pcm(clip.path)), beam_size=beam_size)
            cached[clip.id] = " ".join(s.text.strip() for s in segments)
            print(f"  offline {i}/{len(todo)} {clip.id}", file=sys.stderr, flush=True)
        print(f"  offline baseline: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        payload = {"model": path, "compute_type": "int8", "beam_size": beam_size}
        payload["hypotheses"] = cached
        cache_file.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return {c.id: cached[c.id] for c in clips}

"""Filler words: what Deepgram's `filler_words=true` does to a live stream, measured end to end.

Why this exists: Whisper leaves out "um" and "uh" unless its prompt shows them, so
`filler_words=true` starts the session's prompt with a disfluent sentence
(`engine.whisper_rules.FILLER_PROMPT`). Whether that writes the fillers, and what it costs on
speech without any, only shows on a real server: this script streams each clip over
`/v1/listen` (linear16, punctuate) with the option off and on, and prints per clip the final
transcript, then the fillers written out of those spoken, and the WER of everything else.

Clips: eSpeak NG sentences with fillers (`--espeak`), and utterances of the shared dev set
(`--dev N`, read speech without fillers: every filler written there is an insertion).

Usage, against a running server (`streamscribe serve --port 8000`):
    .venv/bin/python bench/filler_words.py --url ws://127.0.0.1:8000 --dev 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import numpy as np
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from speech import normalize, wer  # noqa: E402

from streamscribe.audio.files import decode_file  # noqa: E402

FILLERS = {"um", "umm", "uh", "uhm", "hmm", "mm", "er", "erm", "ah"}
ESPEAK = [
    "Um, I think, uh, yes.",
    "Uh, so, um, we should, uh, meet at the station tomorrow.",
    "Hmm, well, um, I am not sure, uh, about that.",
    "Um, the weather is, uh, sunny today, I guess.",
    "So, uh, can you, um, call Stella and, uh, ask her to come?",
    "I, um, I don't know, uh, maybe next week.",
]


def words(text: str) -> list[str]:
    return normalize(text).split()


def fillers(text: str) -> int:
    return sum(w in FILLERS for w in words(text))


def without_fillers(text: str) -> str:
    return " ".join(w for w in words(text) if w not in FILLERS)


def espeak(text: str, folder: Path, i: int) -> np.ndarray:
    path = folder / f"f{i}.wav"
    subprocess.run(["espeak-ng", "-s", "130", "-w", str(path), text], check=True)
    return decode_file(path)


async def transcribe(url: str, audio: np.ndarray, filler_words: bool) -> str:
    query = {"encoding": "linear16", "sample_rate": "16000", "punctuate": "true"}
    if filler_words:
        query["filler_words"] = "true"
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes() + bytes(32000)
    finals: list[str] = []
    async with websockets.connect(f"{url}/v1/listen?{urllib.parse.urlencode(query)}") as ws:
        for i in range(0, len(pcm), 3200):
            await ws.send(pcm[i : i + 3200])
        await ws.send(json.dumps({"type": "CloseStream"}))
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("type") == "Results" and msg.get("is_final"):
                finals.append(msg["channel"]["alternatives"][0]["transcript"])
    return " ".join(t for t in finals if t)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000")
    parser.add_argument("--dev", type=int, default=8, help="dev-set utterances (no fillers)")
    parser.add_argument("--no-espeak", action="store_true")
    args = parser.parse_args()
    clips: list[tuple[str, str, np.ndarray]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_espeak:
            clips += [("espeak", t, espeak(t, Path(tmp), i)) for i, t in enumerate(ESPEAK)]
    manifest = ROOT.parent / "shared" / "eval" / "dev" / "manifest.jsonl"
    if args.dev and manifest.exists():
        rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r.get("kind", "utterance") == "utterance"][: args.dev]
        clips += [("dev", r["text"], decode_file(manifest.parent / r["audio"])) for r in rows]
    totals: dict[tuple[str, bool], list[float]] = {}
    for source, text, audio in clips:
        for on in (False, True):
            hyp = await transcribe(args.url, audio, on)
            t = totals.setdefault((source, on), [0, 0, 0.0, 0])
            t[0] += fillers(text)
            t[1] += fillers(hyp)
            t[2] += wer(without_fillers(text), without_fillers(hyp))
            t[3] += 1
            print(f"{source:6} filler_words={str(on).lower():5} {hyp!r}", flush=True)
    print("\nsource  filler_words  clips  fillers spoken  fillers written  WER of the other words")
    for (source, on), (spoken, written, wer_sum, n) in sorted(totals.items()):
        print(f"{source:7} {str(on).lower():12} {n:6} {spoken:15} {written:16}  {wer_sum / n:.3f}")


if __name__ == "__main__":
    asyncio.run(main())

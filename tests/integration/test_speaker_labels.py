"""Live speaker labels over /v3/ws: a real two-speaker conversation from ../shared/eval/dev
streamed with speaker_labels=true; every final turn and word carries a label, the two voices get
two labels, and the labels match who really spoke (best mapping, weighted by words)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json

import numpy as np
import pytest
import websockets
from speech import SHARED_EVAL
from websockets.exceptions import ConnectionClosed

from streamscribe.audio.files import decode_file

RATE = 16000
CHUNK = 3200


def conversation(max_s: float = 45.0) -> tuple[np.ndarray, list[dict]]:
    manifest = SHARED_EVAL / "dev" / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip("../shared/eval/dev is absent")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    row = next(r for r in rows if r["kind"] == "conversation")
    audio = decode_file(SHARED_EVAL / "dev" / row["audio"])
    turns = [t for t in row["turns"] if t["end"] <= max_s]
    return audio[: int(turns[-1]["end"] * RATE) + RATE // 2], turns


@pytest.fixture(scope="module")
def labelled(server):
    from streamscribe.speakers import is_available

    if not is_available():
        pytest.skip("the speakers extra (torch, resemblyzer) is not installed")
    audio, reference = conversation()

    async def run() -> list[dict]:
        query = "sample_rate=16000&speaker_labels=true&format_turns=true"
        messages: list[dict] = []
        async with websockets.connect(f"{server.ws}/v3/ws?{query}", open_timeout=60) as ws:

            async def read() -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for raw in ws:
                        messages.append(json.loads(raw))

            reader = asyncio.create_task(read())
            pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes() + b"\0" * RATE * 2
            for i in range(0, len(pcm), CHUNK):
                await ws.send(pcm[i : i + CHUNK].ljust(CHUNK, b"\0"))
            await ws.send(json.dumps({"type": "Terminate"}))
            await asyncio.wait_for(reader, 300)
        return messages

    return asyncio.run(run()), reference


def formatted(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m.get("type") == "Turn" and m.get("turn_is_formatted")]


def test_every_final_turn_and_word_has_a_speaker(labelled):
    messages, _ = labelled
    turns = formatted(messages)
    assert len(turns) >= 4
    for t in turns:
        assert isinstance(t["speaker_label"], str) and t["speaker_label"]
        assert all(isinstance(w["speaker"], str) for w in t["words"])
    partials = [m for m in messages if m.get("type") == "Turn" and not m["end_of_turn"]]
    assert all("speaker_label" not in p for p in partials)  # only final turns are labelled


def test_two_voices_get_two_labels_matching_who_spoke(labelled):
    messages, reference = labelled
    words = [w for t in formatted(messages) for w in t["words"]]
    labels = sorted({w["speaker"] for w in words})
    assert len(labels) == 2, labels

    def who(ms: float) -> str | None:
        s = ms / 1000
        return next(
            (r["speaker"] for r in reference if r["start"] - 0.3 <= s <= r["end"] + 0.3), None
        )

    pairs = [(w["speaker"], who((w["start"] + w["end"]) / 2)) for w in words]
    pairs = [(got, want) for got, want in pairs if want is not None]
    speakers = sorted({want for _, want in pairs})
    best = max(
        sum(1 for got, want in pairs if dict(zip(labels, perm, strict=True)).get(got) == want)
        for perm in itertools.permutations(speakers, len(labels))
    )
    assert best / len(pairs) >= 0.9, (best, len(pairs))

"""Languages end to end over /v3/ws: detection on real German/French speech with the
multilingual model (loaded when the first session needs it), a language switch between turns,
a pinned language, and the error that names the fix when no multilingual model is served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import websockets
from conftest import start_server
from speech import SHARED_EVAL
from websockets.exceptions import ConnectionClosed

from streamscribe.audio.files import decode_file

RATE = 16000
CHUNK = 3200  # 100 ms


def clip(language: str, index: int = 0) -> tuple[np.ndarray, str]:
    """A real FLEURS utterance in `language` (skips when ../shared is absent: eSpeak NG's
    German and French were tried as a fallback, and Whisper base detects them as Latin or Thai
    and transcribes them as noise, so they would test the voice, not the server)."""
    manifest = SHARED_EVAL / "multilingual" / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip("../shared/eval/multilingual is absent")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["kind"] == "utterance" and r["language"] == language]
    row = rows[index]
    return decode_file(SHARED_EVAL / "multilingual" / row["audio"]), row["text"]


def wer(reference: str, hypothesis: str) -> float:
    import jiwer
    from whisper_normalizer.basic import BasicTextNormalizer

    norm = BasicTextNormalizer()
    return jiwer.wer(norm(reference), norm(hypothesis))


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def stream(server, query: str, audio: np.ndarray) -> tuple[list[dict], int | None]:
    """Send all audio as fast as the server takes it, Terminate, read until the close."""
    async with websockets.connect(f"{server.ws}/v3/ws?{query}", open_timeout=30) as ws:
        messages: list[dict] = []

        async def read() -> None:
            try:
                async for raw in ws:
                    messages.append(json.loads(raw))
            except ConnectionClosed:
                pass

        reader = asyncio.create_task(read())
        pcm = pcm16(np.concatenate([audio, np.zeros(RATE, dtype=np.float32)]))
        try:
            for i in range(0, len(pcm), CHUNK):
                await ws.send(pcm[i : i + CHUNK].ljust(CHUNK, b"\0"))
            await ws.send(json.dumps({"type": "Terminate"}))
        except ConnectionClosed:
            pass
        await asyncio.wait_for(reader, 120)
        return messages, ws.close_code


def finals(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m.get("type") == "Turn" and m["end_of_turn"]]


async def test_german_is_detected_and_transcribed(server):
    audio, text = clip("de")
    messages, code = await stream(server, "sample_rate=16000&language_detection=true", audio)
    assert code == 1000, messages[-2:]
    turns = finals(messages)
    assert turns, messages
    assert {t["language_code"] for t in turns} == {"de"}
    assert all(isinstance(t["language_confidence"], float) for t in turns)
    assert all(0.0 < t["language_confidence"] <= 1.0 for t in turns)
    hypothesis = " ".join(t["transcript"] for t in turns)
    assert wer(text, hypothesis) <= 0.5, (text, hypothesis)
    assert httpx_models(server) >= {"tiny.en", "base"}


async def test_a_speaker_who_switches_language_gets_each_turn_in_its_language(server):
    german, _ = clip("de", 1)
    french, _ = clip("fr", 0)
    gap = np.zeros(int(2.0 * RATE), dtype=np.float32)
    messages, code = await stream(
        server, "sample_rate=16000&language_detection=true", np.concatenate([german, gap, french])
    )
    assert code == 1000
    languages = [t["language_code"] for t in finals(messages)]
    assert languages[0] == "de" and languages[-1] == "fr", languages


async def test_a_pinned_language_is_reported_without_detection(server):
    audio, text = clip("fr", 2)
    messages, code = await stream(
        server, "sample_rate=16000&language_code=fr&language_detection=true", audio
    )
    assert code == 1000
    turns = finals(messages)
    assert turns and {t["language_code"] for t in turns} == {"fr"}
    assert wer(text, " ".join(t["transcript"] for t in turns)) <= 0.7  # base on French


def httpx_models(server) -> set[str]:
    import httpx

    return set(httpx.get(server.http + "/v1/metrics", timeout=5).json()["models_loaded"])


@pytest.fixture(scope="module")
def english_only_server(tmp_path_factory):
    srv = start_server(
        Path(tmp_path_factory.mktemp("english-only")), env={"STREAMSCRIBE_MULTILINGUAL_MODEL": ""}
    )
    yield srv
    srv.process.terminate()
    srv.process.wait(10)


async def test_a_language_the_model_cannot_serve_is_refused_naming_the_fix(english_only_server):
    async with websockets.connect(
        f"{english_only_server.ws}/v3/ws?sample_rate=16000&language_code=de", open_timeout=30
    ) as ws:
        started = time.monotonic()
        messages = []
        with contextlib.suppress(ConnectionClosed):
            async for m in ws:
                messages.append(json.loads(m))
        assert time.monotonic() - started < 10
    assert messages[-1]["type"] == "Error"
    assert "--model base" in messages[-1]["error"] and "'de'" in messages[-1]["error"]
    assert ws.close_code == 3006


async def test_translate_adds_the_english_of_each_final_turn(server):
    audio, _ = clip("de", 0)  # "für die besten aussichten auf hongkong ... kowloon fahren"
    messages, code = await stream(
        server, "sample_rate=16000&language_code=de&translate=true&format_turns=true", audio
    )
    assert code == 1000
    turns = finals(messages)
    assert turns and all(isinstance(t.get("translation"), str) for t in turns)
    english = " ".join(t["translation"] for t in turns).lower()
    german = " ".join(t["transcript"] for t in turns).lower()
    assert "island" in english or "hong kong" in english, english
    assert english != german and "sollten" not in english
    partials = [m for m in messages if m.get("type") == "Turn" and not m["end_of_turn"]]
    assert all("translation" not in p for p in partials)

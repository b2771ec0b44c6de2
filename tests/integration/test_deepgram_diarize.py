"""Deepgram `diarize=true` with the official SDK: a real two-speaker conversation, pre-recorded
and live, comes back with integer `speaker` on every word matching who spoke."""

from __future__ import annotations

import itertools
import json
import threading

import numpy as np
import pytest
from deepgram import DeepgramClient
from deepgram.environment import DeepgramClientEnvironment
from speech import SHARED_EVAL
from test_deepgram_prerecorded import wav

from streamscribe.audio.files import decode_file

RATE = 16000
pytestmark = pytest.mark.timeout(240)


def client(server) -> DeepgramClient:
    environment = DeepgramClientEnvironment(
        base=server.http, production=server.ws, agent=server.ws, agent_rest=server.http
    )
    return DeepgramClient(api_key="local-key", environment=environment)


@pytest.fixture(scope="module")
def conversation():
    from streamscribe.speakers import is_available

    if not is_available():
        pytest.skip("the speakers extra (torch, resemblyzer) is not installed")
    manifest = SHARED_EVAL / "dev" / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip("../shared/eval/dev is absent")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    row = next(r for r in rows if r["kind"] == "conversation")
    turns = [t for t in row["turns"] if t["end"] <= 40.0]
    audio = decode_file(SHARED_EVAL / "dev" / row["audio"])
    return audio[: int(turns[-1]["end"] * RATE) + RATE // 2], turns


def attribution(words: list[tuple[float, float, int]], reference: list[dict]) -> float:
    """Share of words whose speaker matches the reference under the best label mapping."""

    def who(t: float) -> str | None:
        return next(
            (r["speaker"] for r in reference if r["start"] - 0.3 <= t <= r["end"] + 0.3), None
        )

    pairs = [(s, who((a + b) / 2)) for a, b, s in words]
    pairs = [(s, w) for s, w in pairs if w is not None]
    labels = sorted({s for s, _ in pairs})
    speakers = sorted({w for _, w in pairs})
    best = max(
        sum(1 for s, w in pairs if dict(zip(labels, perm, strict=False)).get(s) == w)
        for perm in itertools.permutations(speakers, min(len(labels), len(speakers)))
    )
    return best / len(pairs)


def test_prerecorded_diarize_labels_every_word_with_who_spoke(server, conversation):
    audio, reference = conversation
    result = client(server).listen.v1.media.transcribe_file(
        request=wav(audio), model="nova-3", diarize=True, punctuate=True, utterances=True
    )
    words = result.results.channels[0].alternatives[0].words
    assert words and all(isinstance(w.speaker, int) for w in words)
    assert sorted({w.speaker for w in words}) == [0, 1]
    assert attribution([(w.start, w.end, w.speaker) for w in words], reference) >= 0.9
    assert all(isinstance(u.speaker, int) for u in result.results.utterances)
    # an utterance is one speaker's: a change of speaker starts a new one
    for u in result.results.utterances:
        assert {w.speaker for w in u.words} == {u.speaker}


def test_live_diarize_labels_final_words(server, conversation):
    audio, reference = conversation
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    finals = []
    with client(server).listen.v1.connect(
        model="nova-3", encoding="linear16", sample_rate=16000, diarize=True, punctuate=True
    ) as socket:
        done = threading.Event()

        def read() -> None:
            for message in socket:
                if getattr(message, "type", "") == "Results" and message.is_final:
                    finals.append(message)
            done.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        for i in range(0, len(pcm), 3200):
            socket.send_media(pcm[i : i + 3200])
        socket.send_close_stream()
        assert done.wait(200)
    words = [w for m in finals for w in m.channel.alternatives[0].words]
    assert words and all(isinstance(w.speaker, int) for w in words)
    assert attribution([(w.start, w.end, w.speaker) for w in words], reference) >= 0.9

"""Matrix row: OpenAI `POST /v1/audio/transcriptions` (stream=true), with the official SDK."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import openai

from compat_cases import BadOutcome, Outcome
from streamscribe.audio.wav import WavWriter


def wav(audio: np.ndarray) -> bytes:
    """16 kHz float samples as the bytes of a PCM16 WAV file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        with WavWriter(path) as w:
            w.write(audio)
        return path.read_bytes()


def client(server) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-local", base_url=server.http + "/v1", max_retries=0)


class BatchCase:
    name = "openai-batch"
    first = None  # HTTP: no session messages
    last = None
    clean_close = None
    bad_code = 400

    def stream(self, server, speech) -> Outcome:
        events = list(
            client(server).audio.transcriptions.create(
                model="gpt-4o-transcribe", file=("speech.wav", wav(speech.audio)), stream=True
            )
        )
        done = [e for e in events if e.type == "transcript.text.done"]
        return Outcome(done[-1].text if done else "", [e.type for e in events])

    def bad_input(self, server) -> BadOutcome:
        """An unknown language code: 400 with OpenAI's error envelope."""
        try:
            client(server).audio.transcriptions.create(
                model="whisper-1", file=("speech.wav", wav(np.zeros(16000, np.float32))),
                language="xx",
            )  # fmt: skip
        except openai.APIStatusError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            return BadOutcome(exc.status_code, str(body.get("message", "")))
        return BadOutcome(200, "")


CASE = BatchCase()

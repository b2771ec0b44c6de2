"""OpenAI translation and model choice, and API keys, against real servers through the SDK.

A server started with `--model base` (multilingual) translates real German and Spanish speech
from ../shared/eval/multilingual into English. A keyed server that has only the English model
(no multilingual model to load) refuses translation and other languages with a 400 naming the
fix, and refuses wrong keys with OpenAI's 401 (HTTP) or an `error` event and a close (Realtime).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import openai
import pytest
from compat_cases.openai_batch import wav
from compat_cases.openai_realtime import kind
from conftest import start_server
from speech import SHARED_EVAL
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(240)

MULTILINGUAL = SHARED_EVAL / "multilingual"
GERMAN = ("er", "der", "die", "und", "das", "ein", "wasser", "dinosaurier", "griff")
ENGLISH = ("the", "a", "was", "he", "in", "to", "of", "is", "it", "this", "that")


def clip(clip_id: str) -> Path:
    path = MULTILINGUAL / "audio" / f"{clip_id}.wav"
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/eval/multilingual)")
    return path


def stop(server) -> None:
    server.process.terminate()
    try:
        server.process.wait(30)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory):
    clip("fleurs-de-001")  # skip before starting a server for nothing
    server = start_server(tmp_path_factory.mktemp("openai-base"), "--model", "base")
    yield server
    stop(server)


@pytest.fixture(scope="module")
def english_only(tmp_path_factory):
    """tiny.en with no multilingual model to fall back on, and one API key."""
    data = tmp_path_factory.mktemp("openai-english")
    made = subprocess.run(
        [sys.executable, "-m", "streamscribe", "keys", "create", "oa", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert made.returncode == 0, made.stderr
    server = start_server(data, env={"STREAMSCRIBE_MULTILINGUAL_MODEL": ""})
    yield server, made.stdout.strip()
    stop(server)


def sdk(server, key: str = "sk-local") -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=server.http + "/v1", max_retries=0)


def words(text: str) -> list[str]:
    return re.findall(r"[a-zäöüß']+", text.lower())


def test_german_speech_comes_back_in_english(multilingual):
    with clip("fleurs-de-001").open("rb") as audio:
        result = sdk(multilingual).audio.translations.create(
            model="whisper-1", file=audio, response_format="verbose_json"
        )
    said = words(result.text)
    assert result.language == "german"  # the source language, as Whisper names it
    assert result.text.isascii(), result.text
    assert {"water", "dinosaur"} & set(said), result.text  # the sentence's content words
    assert sum(w in ENGLISH for w in said) >= 3, result.text
    assert not set(said) & {"wasser", "dinosaurier", "griff", "gewachsen"}, result.text
    assert result.segments and all(s.end > s.start for s in result.segments)


def test_spanish_translates_to_english_text(multilingual):
    with clip("fleurs-es-003").open("rb") as audio:
        text = sdk(multilingual).audio.translations.create(
            model="whisper-1", file=audio, response_format="text"
        )
    assert isinstance(text, str) and text.endswith("\n")
    said = words(text)
    assert {"earth", "movement"} & set(said), text
    assert not set(said) & {"tierra", "movimiento", "esto"}, text


def test_a_realtime_session_takes_another_language_on_a_multilingual_model(multilingual):
    with sdk(multilingual).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert conn.recv().type == "session.created"
        conn.session.update(
            session={"type": "transcription", "audio": {"input": {"transcription": {
                "model": "whisper-1", "language": "de"}}}}
        )  # fmt: skip
        updated = conn.recv()
        assert updated.type == "session.updated"
        assert updated.session.audio.input.transcription.language == "de"


def test_english_only_server_names_the_fix(english_only):
    server, key = english_only
    silence = wav(np.zeros(16000, np.float32))
    with pytest.raises(openai.BadRequestError) as info:
        sdk(server, key).audio.translations.create(model="whisper-1", file=("a.wav", silence))
    body = info.value.body
    assert body["type"] == "invalid_request_error" and body["param"] == "model"
    assert "--model base" in body["message"] and "English-only" in body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        sdk(server, key).audio.transcriptions.create(
            model="whisper-1", file=("a.wav", silence), language="de"
        )
    assert info.value.body["param"] == "language" and "--model base" in info.value.body["message"]
    with sdk(server, key).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        conn.recv()
        conn.session.update(
            session={"type": "transcription", "audio": {"input": {"transcription": {
                "language": "de"}}}}
        )  # fmt: skip
        error = conn.recv()
        assert error.type == "error" and error.error.code == "model_not_multilingual"
        assert "--model base" in error.error.message


def test_keys_are_checked_with_openais_shapes(english_only):
    server, key = english_only
    silence = wav(np.zeros(16000, np.float32))
    with pytest.raises(openai.AuthenticationError) as info:
        sdk(server, "sk-wrong").audio.transcriptions.create(
            model="whisper-1", file=("a.wav", silence)
        )
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
    ok = sdk(server, key).audio.transcriptions.create(model="whisper-1", file=("a.wav", silence))
    assert ok.text == ""  # a second of silence: nothing said
    # Realtime: an error event in OpenAI's shape, then a policy close
    with connect(
        f"{server.ws}/v1/realtime?intent=transcription",
        additional_headers={"Authorization": "Bearer sk-wrong"},
    ) as ws:
        error = json.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert error["type"] == "error" and error["error"]["code"] == "invalid_api_key"
    assert ws.close_code == 1008
    # a browser passes the key as a subprotocol
    with connect(
        f"{server.ws}/v1/realtime?intent=transcription",
        subprotocols=["realtime", f"openai-insecure-api-key.{key}"],
    ) as ws:
        assert kind(json.loads(ws.recv(timeout=10))) == "session.created"

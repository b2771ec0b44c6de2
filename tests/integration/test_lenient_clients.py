"""Strict only where it protects someone: what popular clients send by default never ends a
session, over a real socket against the real server.

Voice-agent frameworks send 20 ms frames and, when they stop, the few milliseconds they still
hold just before `Terminate` (AssemblyAI v3) or `terminate_session` (v2): those are transcribed
and the session ends as usual. LiveKit's Deepgram plugin asks for `filler_words=true` by default:
accepted, and `Metadata` says it is approximate. A refused token names the token endpoint of the
dialect the client used. OpenAI Realtime takes G.711 named after connect. Garbage still gets a
clear error (see test_v3_bad_input.py, test_hostile_input.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.parse

import httpx
import pytest
import websockets
from drivers.keyed_server import keyed_server
from speech import speech_or_skip, wer
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamscribe.audio.codecs import encode_mulaw
from streamscribe.audio.resample import resample

FRAME = 640  # 20 ms of 16 kHz pcm_s16le
TAIL = b"\x01\x00" * 80  # the 5 ms a framework still holds when it stops


async def read_until_close(ws, timeout: float = 60.0) -> tuple[list[dict], int | None]:
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
            messages.append(json.loads(raw))
    except ConnectionClosed:
        pass
    return messages, ws.close_code


def speech_pcm() -> tuple[str, bytes]:
    speech = speech_or_skip(1)[0]
    return speech.text, speech.pcm16() + bytes(16000)


async def test_v3_20_ms_frames_and_a_short_last_frame_then_terminate(server):
    text, pcm = speech_pcm()
    async with websockets.connect(f"{server.ws}/v3/ws?sample_rate=16000&format_turns=true") as ws:
        assert json.loads(await ws.recv())["type"] == "Begin"
        for i in range(0, len(pcm), FRAME):
            await ws.send(pcm[i : i + FRAME])
        await ws.send(TAIL)
        await ws.send(json.dumps({"type": "Terminate"}))
        messages, code = await read_until_close(ws)
    assert code == 1000, messages[-3:]
    assert [m["type"] for m in messages][-1] == "Termination"
    assert not [m for m in messages if m["type"] == "Error"]
    finals = [m["transcript"] for m in messages if m["type"] == "Turn" and m["turn_is_formatted"]]
    assert wer(text, " ".join(finals)) <= 0.35, finals
    assert messages[-1]["audio_duration_seconds"] == round((len(pcm) + len(TAIL)) / 32000)


async def test_v2_short_frames_and_a_short_last_frame_then_terminate_session(server):
    text, pcm = speech_pcm()
    url = f"{server.ws}/v2/realtime/ws?sample_rate=16000"
    async with websockets.connect(url) as ws:
        assert json.loads(await ws.recv())["message_type"] == "SessionBegins"
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(pcm), 256)):  # 8 ms frames (a browser worklet's 128
            await ws.send(pcm[i : i + 256])  # samples), under the 10 ms minimum, in real time
            await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.008 - time.monotonic()))
        await ws.send(TAIL)
        await ws.send(json.dumps({"terminate_session": True}))
        messages, code = await read_until_close(ws)
    assert code == 1000, messages[-3:]
    assert messages[-1] == {"message_type": "SessionTerminated"}
    assert not [m for m in messages if "error" in m]
    finals = [m["text"] for m in messages if m.get("message_type") == "FinalTranscript"]
    assert wer(text, " ".join(finals)) <= 0.35, finals


async def test_livekits_default_deepgram_query_transcribes_with_filler_words(server):
    query = urllib.parse.urlencode(
        {
            "model": "nova-3", "punctuate": "true", "smart_format": "false",
            "no_delay": "true", "interim_results": "true", "encoding": "linear16",
            "vad_events": "true", "sample_rate": "16000", "channels": "1",
            "endpointing": "25", "filler_words": "true", "profanity_filter": "false",
            "numerals": "false", "mip_opt_out": "false", "language": "en-US",
        }
    )  # fmt: skip
    text, pcm = speech_pcm()
    async with websockets.connect(f"{server.ws}/v1/listen?{query}") as ws:
        for i in range(0, len(pcm), FRAME * 5):
            await ws.send(pcm[i : i + FRAME * 5])
        await ws.send(json.dumps({"type": "CloseStream"}))
        messages, code = await read_until_close(ws)
    assert code == 1000
    finals = [
        m["channel"]["alternatives"][0]["transcript"]
        for m in messages
        if m["type"] == "Results" and m["is_final"]
    ]
    assert wer(text, " ".join(finals)) <= 0.35, finals
    assert messages[-1]["type"] == "Metadata"
    assert [w["parameter"] for w in messages[-1]["warnings"]] == ["filler_words"]


async def test_openai_realtime_takes_g711_named_after_connect(server):
    speech = speech_or_skip(1)[0]
    law = encode_mulaw(resample(speech.audio, 16000, 8000)) + b"\xff" * 8000
    url = f"{server.ws}/v1/realtime?intent=transcription"
    async with websockets.connect(url) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        session = {
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}},
        }
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        for i in range(0, len(law), 800):  # 100 ms a message
            chunk = base64.b64encode(law[i : i + 800]).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events = []
        while not events or not events[-1]["type"].endswith("transcription.completed"):
            events.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
    updated = next(e for e in events if e["type"] == "session.updated")
    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert not [e for e in events if e["type"] == "error"], events
    deltas = "".join(e["delta"] for e in events if e["type"].endswith("transcription.delta"))
    assert deltas == events[-1]["transcript"]
    assert wer(speech.text, events[-1]["transcript"]) <= 0.4, events[-1]["transcript"]


# ------------------------------------------------------------------ token refusals


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    return keyed_server(tmp_path_factory.mktemp("keyed-dialects"))


async def _refusal_after_upgrade(url: str) -> str:
    async with websockets.connect(url) as ws:
        messages, _ = await read_until_close(ws, 10)
    return json.dumps(messages)


async def _refusal_before_upgrade(url: str) -> str:
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(url)
    assert info.value.response.status_code == 401
    return info.value.response.body.decode()


@pytest.mark.parametrize(
    ("path", "endpoint", "upgraded"),
    [
        ("/v3/ws?sample_rate=16000", "GET /v3/token", True),
        ("/v2/realtime/ws?sample_rate=16000", "POST /v2/realtime/token", True),
        ("/v1/listen?encoding=linear16&sample_rate=16000", "POST /v1/auth/grant", False),
    ],
)
async def test_a_refused_token_names_the_dialects_own_token_endpoint(
    keyed, path, endpoint, upgraded
):
    server, _ = keyed
    url = f"{server.ws}{path}&token=tk_not_a_real_token"
    if upgraded:
        said = await _refusal_after_upgrade(url)
    else:
        said = await _refusal_before_upgrade(url)
    assert f"mint a new one with {endpoint}" in said, said
    other = {"GET /v3/token", "POST /v2/realtime/token", "POST /v1/auth/grant"} - {endpoint}
    assert not [e for e in other if e in said]


def test_the_dialects_token_endpoints_exist(keyed):
    server, key = keyed
    auth = {"Authorization": key}
    v3 = httpx.get(f"{server.http}/v3/token?expires_in_seconds=60", headers=auth, timeout=10)
    v2 = httpx.post(f"{server.http}/v2/realtime/token", json={"expires_in": 60}, headers=auth)
    grant = httpx.post(
        f"{server.http}/v1/auth/grant",
        json={"ttl_seconds": 30},
        headers={"Authorization": f"Token {key}"},
    )
    assert v3.status_code == v2.status_code == grant.status_code == 200
    assert v3.json()["token"] and v2.json()["token"] and grant.json()["access_token"]


def test_v1_info_lists_what_each_dialect_approximates(server):
    info = httpx.get(f"{server.http}/v1/info", timeout=10).json()
    assert "filler_words" in info["approximated"]["deepgram"]
    assert "noise_reduction" in info["approximated"]["openai_realtime"]
    assert "audio frames under 50 ms" in info["approximated"]["assemblyai_v3"]

"""Bad input over a real socket: the protocol's error message, the right close code, a reason
that names the fix — and the server keeps serving everyone else."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
import websockets
from speech import speech_or_skip, wer
from websockets.exceptions import ConnectionClosed

from streamscribe.audio.codecs import encode_mulaw
from streamscribe.store import Store


async def open_session(server, query: str = "sample_rate=16000"):
    ws = await websockets.connect(f"{server.ws}/v3/ws?{query}", open_timeout=10)
    return ws


async def read_until_close(ws, timeout: float = 30.0) -> tuple[list[dict], int | None, str]:
    """All JSON messages until the server closes; then the close code and reason."""
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            raw = await asyncio.wait_for(ws.recv(), max(0.01, left))
            messages.append(json.loads(raw))
    except ConnectionClosed:
        pass
    return messages, ws.close_code, ws.close_reason


async def expect_error(server, query: str, send=None) -> tuple[list[dict], int, str]:
    ws = await open_session(server, query)
    if send is not None:
        first = json.loads(await ws.recv())
        assert first["type"] == "Begin"
        for frame in send:
            await ws.send(frame)
    messages, code, reason = await read_until_close(ws)
    errors = [m for m in messages if m.get("type") == "Error"]
    assert errors, messages
    assert errors[-1]["error_code"] == code
    return messages, code, reason


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("encoding=pcm_s16le", "sample_rate"),
        ("sample_rate=7000", "sample_rate"),
        ("sample_rate=sixteen", "sample_rate"),
        ("sample_rate=16000&encoding=opus", "encoding"),
        ("sample_rate=16000&format_turns=maybe", "format_turns"),
        ("sample_rate=16000&keyterms_prompt=%5Bnot%20json", "keyterms_prompt"),
        ("sample_rate=16000&inactivity_timeout=1", "inactivity_timeout"),
        ("sample_rate=16000&end_of_turn_confidence_threshold=2", "end_of_turn_confidence"),
    ],
)
async def test_bad_parameters_close_3006_naming_the_parameter(server, query, needle):
    messages, code, reason = await expect_error(server, query)
    assert code == 3006
    assert needle in reason, reason
    assert "expected" in reason.lower() or "add " in reason.lower(), reason
    assert messages[0]["type"] == "Error"  # no Begin for a session that cannot start


@pytest.mark.parametrize(
    ("frame", "code", "needle"),
    [
        ("not json", 3006, "Invalid JSON"),
        ("[]", 3006, "Invalid Message"),
        ('{"type": "Dance"}', 3006, "Invalid Message Type"),
        ('{"type": "UpdateConfiguration", "max_turn_silence": "long"}', 3006, "max_turn_silence"),
        (b"\x00" * 3201, 3007, "not a whole number of pcm_s16le samples"),
        (b"", 3007, "Input duration violation: 0 ms"),  # short frames are held, empty ones not
        (b"\x00" * 64000, 3007, "Input duration violation: 2000 ms"),
    ],
)
async def test_bad_frames(server, frame, code, needle):
    messages, got, reason = await expect_error(server, "sample_rate=16000", send=[frame])
    assert got == code
    assert needle in messages[-1]["error"], messages[-1]
    assert len(reason.encode()) <= 123


async def test_inactivity_timeout_closes_with_reason(server):
    t0 = time.monotonic()
    messages, code, reason = await expect_error(
        server, "sample_rate=16000&inactivity_timeout=5", send=[]
    )
    assert 4.5 <= time.monotonic() - t0 <= 12
    assert code == 4031 and "idle" in reason.lower()


async def test_keepalive_keeps_an_idle_session_open(server):
    ws = await open_session(server, "sample_rate=16000&inactivity_timeout=5")
    assert json.loads(await ws.recv())["type"] == "Begin"
    for _ in range(4):
        await asyncio.sleep(2)
        await ws.send('{"type": "KeepAlive"}')
    await ws.send('{"type": "Terminate"}')
    messages, code, _ = await read_until_close(ws)
    assert messages[-1]["type"] == "Termination" and code == 1000


def chunks(pcm: bytes, size: int):
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


async def stream(ws, frames, seconds_per_frame: float, speed: float = 4.0):
    for f in frames:
        await ws.send(f)
        await asyncio.sleep(seconds_per_frame / speed)


async def test_turns_before_an_error_are_delivered(server):
    """A session that ends badly still delivers the turn it had: flush, then Error."""
    speech = speech_or_skip(1)[0]
    ws = await open_session(server)
    assert json.loads(await ws.recv())["type"] == "Begin"
    await stream(ws, chunks(speech.pcm16(), 3200), 0.1)
    await ws.send("this is not json")
    messages, code, _ = await read_until_close(ws)
    assert code == 3006
    finals = [m for m in messages if m.get("type") == "Turn" and m["end_of_turn"]]
    assert finals and messages[-1]["type"] == "Error"
    assert wer(speech.text, " ".join(t["transcript"] for t in finals)) <= 0.4


async def test_client_vanishing_mid_turn_keeps_the_transcript(server):
    speech = speech_or_skip(1)[0]
    ws = await open_session(server)
    begin = json.loads(await ws.recv())
    await stream(ws, chunks(speech.pcm16(), 3200), 0.1)
    ws.transport.abort()  # no close frame, no Terminate
    store = await Store.open(None, server.data_dir)  # the server's own SQLite file
    try:
        deadline = time.monotonic() + 30
        detail = None
        while time.monotonic() < deadline:
            detail = await store.get_session(begin["id"])
            if detail is not None and detail.info.ended is not None:
                break
            await asyncio.sleep(0.3)
    finally:
        await store.close()
    assert detail is not None and detail.info.end_reason == "client_gone", detail
    text = " ".join(t.text for t in detail.turns)
    assert wer(speech.text, text) <= 0.4, text
    assert detail.info.recording_path and Path(detail.info.recording_path).exists()
    # and the server still serves a new session
    ws2 = await open_session(server)
    assert json.loads(await ws2.recv())["type"] == "Begin"
    await ws2.close()


async def test_mulaw_8khz_is_transcribed(server):
    from streamscribe.audio.resample import resample

    speech = speech_or_skip(1)[0]
    ulaw = encode_mulaw(resample(speech.audio, 16000, 8000))
    ws = await open_session(server, "sample_rate=8000&encoding=pcm_mulaw")
    assert json.loads(await ws.recv())["type"] == "Begin"
    await stream(ws, chunks(ulaw, 800), 0.1)
    await ws.send(json.dumps({"type": "Terminate"}))
    messages, code, _ = await read_until_close(ws)
    assert code == 1000 and messages[-1]["type"] == "Termination"
    finals = [m for m in messages if m.get("type") == "Turn" and m["end_of_turn"]]
    assert wer(speech.text, " ".join(t["transcript"] for t in finals)) <= 0.4


async def test_force_endpoint_and_update_configuration(server):
    speech = speech_or_skip(1)[0]
    ws = await open_session(server, "sample_rate=16000&min_turn_silence=5000&max_turn_silence=9000")
    assert json.loads(await ws.recv())["type"] == "Begin"
    await ws.send(json.dumps({"max_turn_silence": 8000, "type": "UpdateConfiguration"}))
    await stream(ws, chunks(speech.pcm16(), 1600), 0.05)
    silence = np.zeros(1600, dtype="<i2").tobytes()
    await stream(ws, [silence] * 10, 0.05)  # 0.5 s: far below the 5 s silence rule
    await ws.send(json.dumps({"type": "ForceEndpoint"}))
    got: list[dict] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = json.loads(await asyncio.wait_for(ws.recv(), 20))
        got.append(m)
        if m.get("type") == "Turn" and m["end_of_turn"]:
            break
    assert got[-1]["end_of_turn"], got
    await ws.send(json.dumps({"type": "Terminate"}))
    messages, code, _ = await read_until_close(ws)
    assert code == 1000 and messages[-1]["type"] == "Termination"


async def test_server_survives_a_burst_of_bad_clients(server):
    async def bad(i: int):
        try:
            ws = await open_session(server, "sample_rate=16000")
            await ws.recv()
            await ws.send(b"\x01" * (i % 7 + 1))
            await read_until_close(ws, 10)
        except Exception:
            pass

    await asyncio.gather(*(bad(i) for i in range(12)))
    ws = await open_session(server)
    assert json.loads(await ws.recv())["type"] == "Begin"
    await ws.send('{"type":"Terminate"}')
    messages, code, _ = await read_until_close(ws)
    assert code == 1000

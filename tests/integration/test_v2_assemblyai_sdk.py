"""AssemblyAI v2 realtime against the real server, driven by the unmodified official SDK 0.64.2.

The SDK's `RealtimeTranscriber` is gone from the 1.x the venv holds, so it runs in a subprocess
with SDK 0.64.2 first on the path (tests/drivers/aai_v2_realtime.py), printing every callback as
JSON. The main session is the AssemblyAI cookbook's seed scenario: real speech, then silence,
and the client closes the session itself once empty partial transcripts have come for 5 s.
Bad input is checked with the SDK where it can send it, with a raw socket where it cannot.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
import websockets
from conftest import RunningServer
from drivers.keyed_server import keyed_server
from speech import joined, speech_or_skip, wer
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / ".venv" / "sdk" / "assemblyai-0.64.2"
DRIVER = ROOT / "tests" / "drivers" / "aai_v2_realtime.py"

pytestmark = pytest.mark.skipif(
    not SDK.exists(), reason="the AssemblyAI 0.64.2 SDK is not installed (run make install)"
)


def drive(server: RunningServer, **cfg: object) -> list[dict]:
    """Run the SDK driver; every callback it saw, in order."""
    cfg = {"base_url": server.ws, "api_key": "test-key", **cfg}
    result = subprocess.run(
        [sys.executable, str(DRIVER), json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(SDK)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def of(events: list[dict], *kinds: str) -> list[dict]:
    return [e for e in events if e["event"] in kinds]


TRANSCRIPTS = ("RealtimePartialTranscript", "RealtimeFinalTranscript")


@pytest.fixture(scope="module")
def seed(server, tmp_path_factory):
    """Two utterances in real time, then silence until the cookbook's 5 s rule closes it."""
    speech = joined(speech_or_skip(2), gap_s=1.6)
    pcm = tmp_path_factory.mktemp("v2") / "speech.pcm"
    pcm.write_bytes(speech.pcm16())
    events = drive(
        server,
        pcm=str(pcm),
        token=True,
        word_boost=["Stella", "station"],
        threshold=700,
        session_info=True,
        silence_close_s=5,
        max_silence_s=15,
    )
    return speech, events


def test_transcript_matches_the_reference(seed):
    speech, events = seed
    finals = of(events, "RealtimeFinalTranscript")
    text = " ".join(f["text"] for f in finals)
    assert wer(speech.text, text) <= 0.35, (speech.text, text)
    assert len(finals) >= 2  # one per utterance: the 1.6 s pause is past the 700 ms threshold
    assert all(f["punctuated"] and f["text_formatted"] for f in finals)
    assert all(f["text"][0].isupper() and f["text"][-1] in ".?!" for f in finals)


def test_message_order_and_a_clean_close(seed):
    _, events = seed
    kinds = [e["event"] for e in events]
    assert kinds[0] == "token" and events[0]["token"]
    assert kinds[1] == "SessionBegins"
    assert "error" not in kinds, of(events, "error")  # any close but 1000 reaches on_error
    messages = [k for k in kinds if k in (*TRANSCRIPTS, "SessionInformation")]
    assert messages[-1] == "SessionInformation" and messages.count("SessionInformation") == 1
    # each utterance: partials, then exactly one final
    finals = [i for i, e in enumerate(events) if e["event"] == "RealtimeFinalTranscript"]
    for a, b in zip([1, *finals], finals, strict=False):
        between = [e for e in events[a + 1 : b] if e["event"] in TRANSCRIPTS]
        assert any(e["text"] for e in between), "an utterance without partials"
    assert events[-1]["event"] in ("done", "close")


def test_the_client_closed_the_session_after_5_s_of_empty_partials(seed, server):
    """The seed scenario: silence is noticed from empty partials, and the SDK's close() from
    inside on_data ends the session properly (SessionTerminated, end reason `terminated`)."""
    speech, events = seed
    [rule] = of(events, "silence_close")
    assert 5.0 < rule["silent_s"] < 7.5
    done = of(events, "done")[0]
    assert done["closed_by_rule"] is True
    transcripts = of(events, *TRANSCRIPTS)
    last_words = max(i for i, e in enumerate(transcripts) if e["text"])
    tail = transcripts[last_words + 1 :]
    assert len(tail) >= 9 and all(e["text"] == "" and e["words"] == [] for e in tail)
    # the empty partials come on the audio clock, about every 500 ms of audio
    steps = [b["audio_end"] - a["audio_end"] for a, b in zip(tail, tail[1:], strict=False)]
    assert all(300 <= s <= 800 for s in steps), steps
    # the server heard a terminate, not a vanished client
    session_id = of(events, "SessionBegins")[0]["session_id"]
    info = httpx.get(f"{server.http}/v1/sessions/{session_id}", timeout=10).json()
    assert info["protocol"] == "assemblyai-v2"
    assert info["end_reason"] == "terminated"
    [information] = of(events, "SessionInformation")
    assert abs(information["audio_duration_seconds"] - info["audio_seconds"]) < 0.2
    assert speech.seconds < information["audio_duration_seconds"] < speech.seconds + 10


def test_field_types_and_units(seed):
    speech, events = seed
    begins = of(events, "SessionBegins")[0]
    assert uuid.UUID(begins["session_id"]).version == 4
    expires = datetime.fromisoformat(begins["expires_at"])
    assert expires - datetime.now() > timedelta(minutes=30)  # naive UTC, as sent
    info = of(events, "SessionInformation")[0]
    assert isinstance(info["audio_duration_seconds"], float)
    heard_ms = info["audio_duration_seconds"] * 1000
    for t in of(events, *TRANSCRIPTS):
        assert isinstance(t["audio_start"], int) and isinstance(t["audio_end"], int)
        assert 0 <= t["audio_start"] <= t["audio_end"] <= heard_ms + 100
        assert 0.0 <= t["confidence"] <= 1.0
        datetime.fromisoformat(t["created"])
        assert t["text"] == " ".join(w["text"] for w in t["words"])
        for w in t["words"]:
            assert isinstance(w["start"], int) and isinstance(w["end"], int)
            assert t["audio_start"] <= w["start"] <= w["end"] <= t["audio_end"]
            assert 0.0 <= w["confidence"] <= 1.0
    # partials: lower case, no punctuation; finals close their utterance and the next starts there
    partial_words = [w for t in of(events, "RealtimePartialTranscript") for w in t["words"]]
    assert partial_words and all(w["text"] == w["text"].lower() for w in partial_words)
    starts: list[int] = []
    for t in of(events, *TRANSCRIPTS):
        if not starts or t["audio_start"] != starts[-1]:
            starts.append(t["audio_start"])
    finals = of(events, "RealtimeFinalTranscript")
    assert starts == [0, *[f["audio_end"] for f in finals]][: len(starts)]


@pytest.fixture(scope="module")
def forced(server, tmp_path_factory):
    """force_end_utterance right after one utterance (the silence rule could not have ended it:
    the threshold is 20 s), then again in silence, where there is nothing to end."""
    speech = speech_or_skip(1)[0]
    pcm = tmp_path_factory.mktemp("v2-force") / "speech.pcm"
    pcm.write_bytes(speech.pcm16())
    events = drive(
        server, pcm=str(pcm), speed=2.0, threshold=20000, force_after_speech=True, force_gap_s=1.5
    )
    return speech, events


def test_force_end_utterance_ends_the_utterance_now(forced):
    speech, events = forced
    kinds = [e["event"] for e in events]
    first_force = kinds.index("force_sent")
    second_force = len(kinds) - 1 - kinds[::-1].index("force_sent")
    finals = [i for i, k in enumerate(kinds) if k == "RealtimeFinalTranscript"]
    spoken = [i for i in finals if events[i]["text"]]
    assert spoken and all(first_force < i < second_force for i in spoken)
    text = " ".join(events[i]["text"] for i in spoken)
    assert wer(speech.text, text) <= 0.35, (speech.text, text)
    # nothing to end the second time: an empty final answers it, then the session ends cleanly
    after = [events[i] for i in finals if i > second_force]
    assert [f["text"] for f in after] == [""]
    assert "error" not in kinds


def test_a_too_long_audio_frame_closes_4033_with_the_reason_first(server):
    """Over the SDK: 3 s in one frame. on_error gets our reason, then the mapped close code."""
    events = drive(server, frames=[3 * 32000], wait_s=10)
    errors = of(events, "error")
    assert [e["code"] for e in errors][-1] == 4033
    assert any("3000 ms" in e["message"] and "too long" in e["message"] for e in errors)
    assert of(events, "close")


# ------------------------------------------------------------------ raw sockets


async def raw_session(server: RunningServer, query: str, frames: list, read_s: float = 30):
    """Messages, close code and reason of a raw v2 connection sending `frames`."""
    messages: list[dict] = []
    async with websockets.connect(f"{server.ws}/v2/realtime/ws?{query}", open_timeout=10) as ws:
        for frame in frames:
            await ws.send(frame)
        try:
            while True:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), read_s)))
        except ConnectionClosed:
            pass
    return messages, ws.close_code, ws.close_reason


@pytest.mark.parametrize(
    ("query", "code", "needle"),
    [
        ("encoding=pcm_s16le", 4000, "sample_rate"),
        ("sample_rate=-1", 4000, "sample_rate"),
        ("sample_rate=16000&word_boost=%5Bnope", 4104, "word_boost"),
        ("sample_rate=16000&encoding=opus", 1008, "encoding"),
    ],
)
async def test_bad_query_closes_with_the_v2_code_before_any_session(server, query, code, needle):
    messages, got, reason = await raw_session(server, query, [])
    assert got == code
    assert needle in reason
    assert messages == [{"error": messages[0]["error"]}] and needle in messages[0]["error"]


@pytest.mark.parametrize(
    ("frame", "code", "needle"),
    [
        ("this is not json", 4100, "Invalid JSON"),
        ('{"hello": true}', 4101, "hello"),
        ('{"audio_data": "***"}', 4101, "base64"),
        ('{"end_utterance_silence_threshold": 99999}', 4101, "end_utterance_silence_threshold"),
        (b"", 4032, "too short"),  # short frames are held; an empty one is no audio
    ],
)
async def test_bad_messages_close_with_the_v2_code(server, frame, code, needle):
    messages, got, reason = await raw_session(server, "sample_rate=16000", [frame])
    assert messages[0]["message_type"] == "SessionBegins"
    assert messages[-1] == {"error": messages[-1]["error"]}
    assert needle in messages[-1]["error"]
    assert got == code and needle in reason


async def test_base64_audio_data_is_transcribed(server):
    """The original documented form: audio as base64 in JSON text frames (browsers, old SDKs)."""
    speech = speech_or_skip(1)[0]
    pcm = speech.pcm16() + bytes(16000)
    step = 3200 * 2  # 200 ms
    frames = [
        json.dumps({"audio_data": base64.b64encode(pcm[i : i + step]).decode()})
        for i in range(0, len(pcm), step)
    ]
    frames.append(json.dumps({"terminate_session": True}))
    messages, code, _ = await raw_session(
        server, "sample_rate=16000&disable_partial_transcripts=true", frames
    )
    types = [m.get("message_type") for m in messages]
    assert types[0] == "SessionBegins" and types[-1] == "SessionTerminated"
    assert "PartialTranscript" not in types  # disable_partial_transcripts
    text = " ".join(m["text"] for m in messages if m.get("message_type") == "FinalTranscript")
    assert wer(speech.text, text) <= 0.35, (speech.text, text)
    assert code == 1000


async def test_mulaw_at_8_khz(server):
    """A telephony stream: pcm_mulaw at 8 kHz is resampled at the edge and transcribed."""
    import numpy as np
    import soxr

    from streamscribe.audio.codecs import encode_mulaw

    speech = speech_or_skip(1)[0]
    audio = soxr.resample(speech.audio, 16000, 8000).astype(np.float32)
    ulaw = encode_mulaw(np.concatenate([audio, np.zeros(4000, np.float32)]))
    frames: list = [ulaw[i : i + 1600] for i in range(0, len(ulaw), 1600)]  # 200 ms
    frames.append(json.dumps({"terminate_session": True}))
    messages, code, _ = await raw_session(server, "sample_rate=8000&encoding=pcm_mulaw", frames)
    text = " ".join(m["text"] for m in messages if m.get("message_type") == "FinalTranscript")
    assert wer(speech.text, text) <= 0.35, (speech.text, text)
    assert code == 1000


# ------------------------------------------------------------------ keys and tokens


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A server that requires keys (shared with the Fireworks tests), and its key."""
    return keyed_server(tmp_path_factory.getbasetemp() / "keyed-server")


def test_without_a_key_the_sdk_hears_4001(keyed):
    server, _ = keyed
    events = drive(server, api_key="sk_wrong", frames=[3200], wait_s=10)
    errors = of(events, "error")
    assert errors and errors[-1]["code"] == 4001
    assert any("Unauthorized" in e["message"] for e in errors)
    assert not of(events, "SessionBegins")


def test_temporary_token_through_the_sdk_is_single_use(keyed):
    server, key = keyed
    silence = {"frames": [3200] * 3, "wait_s": 3}
    events = drive(server, api_key=key, token=True, **silence)
    [token] = of(events, "token")
    assert token["token"].startswith("tk_")
    assert of(events, "SessionBegins") and not of(events, "error")
    # the same token again: refused

    async def reuse():
        url = f"{server.ws}/v2/realtime/ws?sample_rate=16000&token={token['token']}"
        async with websockets.connect(url, open_timeout=10) as ws:
            first = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return first, ws.close_code

    first, code = asyncio.run(reuse())
    assert code == 4001 and "token" in first["error"]


def test_token_endpoint_errors_in_the_v2_shape(keyed):
    server, key = keyed
    url = f"{server.http}/v2/realtime/token"
    no_key = httpx.post(url, json={"expires_in": 60}, timeout=10)
    assert no_key.status_code == 401 and "Authorization" in no_key.json()["error"]
    for body in ({}, {"expires_in": 0}, {"expires_in": "60"}, {"expires_in": 360001}, [60]):
        bad = httpx.post(url, json=body, headers={"Authorization": key}, timeout=10)
        assert bad.status_code == 400, body
        assert "expires_in" in bad.json()["error"]
    not_json = httpx.post(url, content=b"{", headers={"Authorization": key}, timeout=10)
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]
    good = httpx.post(url, json={"expires_in": 360000}, headers={"Authorization": key}, timeout=10)
    assert good.status_code == 200 and set(good.json()) == {"token"}
    # and the SDK reports the server's message as it was written
    events = drive(server, api_key="sk_wrong", token=True)
    [failed] = of(events, "token_error")
    assert failed["status"] == 401 and "API key" in failed["message"]

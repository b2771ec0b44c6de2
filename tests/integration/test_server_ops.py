"""Operations surface of a running server: health, readiness, Prometheus metrics, tokens."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import websockets
from speech import speech_or_skip


def test_health_and_readiness(server):
    assert httpx.get(server.http + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.http + "/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


async def test_prometheus_metrics_count_sessions_audio_and_decodes(server):
    speech = speech_or_skip(1)[0]
    pcm = speech.pcm16()
    async with websockets.connect(f"{server.ws}/v3/ws?sample_rate=16000") as ws:
        assert json.loads(await ws.recv())["type"] == "Begin"
        for i in range(0, len(pcm) - 3199, 3200):
            await ws.send(pcm[i : i + 3200])
            await asyncio.sleep(0.025)
        await ws.send('{"type":"Terminate"}')
        async for _ in ws:
            pass
    with contextlib.suppress(websockets.ConnectionClosed):
        async with websockets.connect(f"{server.ws}/v3/ws?sample_rate=7") as ws:
            async for _ in ws:
                pass
    text = httpx.get(server.http + "/metrics").text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values['streamscribe_sessions_total{protocol="assemblyai-v3"}'] >= 1
    assert (
        values['streamscribe_audio_seconds_total{protocol="assemblyai-v3"}'] >= speech.seconds - 1
    )
    assert values['streamscribe_decode_latency_seconds_count{kind="partial"}'] >= 1
    assert values["streamscribe_decode_batch_size_count"] >= 1
    assert "streamscribe_decode_queue_depth" in values
    assert values['streamscribe_errors_total{code="3006"}'] >= 1
    summary = httpx.get(server.http + "/v1/metrics").json()
    assert summary["decode_requests"] >= 1 and summary["sessions_active"] == 0
    assert summary["session_most_behind"] is None and summary["decode_promoted"] >= 0


def test_token_endpoint_validates_its_parameters(server):
    bad = httpx.get(server.http + "/v3/token", params={"expires_in_seconds": 0})
    assert bad.status_code == 400 and "expires_in_seconds" in bad.json()["detail"]
    missing = httpx.get(server.http + "/v3/token")
    assert missing.status_code == 400
    ok = httpx.get(server.http + "/v3/token", params={"expires_in_seconds": 60})
    assert ok.status_code == 200 and ok.json()["token"]

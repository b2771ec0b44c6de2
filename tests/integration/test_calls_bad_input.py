"""Bad input to call transcription gets a clear answer and never costs a transcript: refused
job bodies (HTTP 400 naming the field), unknown call connection ids (404, also on the media
socket), actions in the wrong state (409), a transportUrl that refuses or is not a WebSocket and
a failing callback URL (TranscriptionFailed / the job's callback errors), media frames out of
order or with bad base64 (a close code and reason; what was said before is delivered and
stored), update-locale to an unsupported language (400, the call goes on)."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import numpy as np
import pytest
import websockets
from conftest import free_port
from speech import utterances
from test_calls import (
    CallbackSink,
    Consumer,
    check_cloud_event,
    create_job,
    finals,
    iso,
    metadata_frame,
    mono_frames,
    send_frames,
    wait_status,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus

OPTIONS = {"transportUrl": "ws://127.0.0.1:9/x", "locale": "en-US"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"transcriptionOptions": {**OPTIONS, "transportUrl": "http://x/y"}}, "wss://"),
        ({"transcriptionOptions": {**OPTIONS, "transportUrl": ""}}, "transportUrl is required"),
        ({"transcriptionOptions": {**OPTIONS, "locale": "xx-XX"}}, "not supported"),
        ({"transcriptionOptions": {**OPTIONS, "locale": 5}}, "locale"),
        ({"transcriptionOptions": {"transportUrl": "ws://h/x"}}, "locale is required"),
        ({"transcriptionOptions": {**OPTIONS, "transportURL": "ws://h"}}, "'transportURL'"),
        ({"transcriptionOptions": {**OPTIONS, "enableSentimentAnalysis": True}}, "sentiment"),
        ({"transcriptionOptions": {**OPTIONS, "startTranscription": "yes"}}, "true or false"),
        ({"transcriptionOptions": {**OPTIONS, "transportType": "grpc"}}, "websocket"),
        ({"transcriptionOptions": OPTIONS, "callbackUri": "ftp://x"}, "callbackUri"),
        ({"transcriptionOptions": OPTIONS, "callConnectionId": "a/b"}, "callConnectionId"),
        ({"transcriptionOptions": OPTIONS, "transportReconnectSeconds": -1}, "Reconnect"),
        ({}, "transcriptionOptions is required"),
        ([], "JSON object"),
    ],
)
def test_a_bad_job_body_is_refused_naming_the_field(server, body, reason):
    r = httpx.post(server.http + "/v1/calls", json=body, timeout=10)
    assert r.status_code == 400, r.text
    assert reason in r.json()["detail"]


def test_a_body_that_is_not_json_is_refused(server):
    r = httpx.post(server.http + "/v1/calls", content=b"{nope", timeout=10)
    assert r.status_code == 400 and "not JSON" in r.json()["detail"]


async def test_an_unknown_call_connection_id_is_404_everywhere(server):
    unknown = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        assert (await http.get(f"/v1/calls/{unknown}")).status_code == 404
        for action in ("start", "stop", "update"):
            r = await http.post(f"/v1/calls/{unknown}:{action}Transcription", json={})
            assert r.status_code == 404 and unknown in r.json()["detail"]
    for url in (f"/v1/calls/{unknown}/media", "/v1/calls/media"):
        headers = {"x-ms-call-connection-id": unknown}
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(server.ws + url, additional_headers=headers)
        assert refused.value.response.status_code == 404
        assert b"POST /v1/calls" in refused.value.response.body


async def test_actions_in_the_wrong_state_are_409_and_a_call_id_is_not_reused(server):
    consumer = await Consumer().start()
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        job = await create_job(http, consumer.url, options={"startTranscription": False})
        call_id = job["callConnectionId"]
        assert job["status"] == "created"
        r = await http.post(f"/v1/calls/{call_id}:stopTranscription")
        assert r.status_code == 409 and "not running" in r.json()["detail"]
        again = {"callConnectionId": call_id, "transcriptionOptions": OPTIONS}
        assert (await http.post("/v1/calls", json=again)).status_code == 409
        assert (await http.post(f"/v1/calls/{call_id}:startTranscription")).status_code == 202
        r = await http.post(f"/v1/calls/{call_id}:startTranscription")
        assert r.status_code == 409 and "already running" in r.json()["detail"]
        r = await http.post(f"/v1/calls/{call_id}:updateTranscription", json={"locale": "tlh"})
        assert r.status_code == 400 and "not supported" in r.json()["detail"]
        r = await http.post(f"/v1/calls/{call_id}:updateTranscription", json={})
        assert r.status_code == 400 and "needs a locale" in r.json()["detail"]
        job = (await http.get(f"/v1/calls/{call_id}")).json()
        assert job["status"] == "active" and job["locale"] == "en-US"
        assert (await http.post(f"/v1/calls/{call_id}:stopTranscription")).status_code == 202
        await wait_status(http, call_id, "stopped")
    await consumer.stop()


async def _failed_push(server, transport_url: str) -> tuple[dict, dict]:
    sink = await CallbackSink().start()
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        job = await create_job(
            http, transport_url, callbackUri=sink.url, transportReconnectSeconds=1
        )
        event = await sink.wait_for("TranscriptionFailed", timeout=20)
        job = await wait_status(http, job["callConnectionId"], "failed")
    await sink.stop()
    check_cloud_event(event, job["callConnectionId"])
    return job, event["data"]


async def test_a_transport_url_that_refuses_fails_with_the_reason(server):
    url = f"ws://127.0.0.1:{free_port()}/nobody"
    job, data = await _failed_push(server, url)
    assert data["transcriptionUpdate"]["transcriptionStatusDetails"] == (
        "streamConnectionUnsuccessful"
    )
    info = data["resultInformation"]
    assert info["subCode"] == 8501 and url in info["message"]
    assert "refused" in info["message"]
    assert job["resultInformation"] == info


async def test_a_transport_url_that_is_not_a_websocket_fails_at_once(server):
    plain_http = await CallbackSink().start()  # answers HTTP 200 to anything
    job, data = await _failed_push(server, f"ws://127.0.0.1:{plain_http.port}/")
    await plain_http.stop()
    assert data["transcriptionUpdate"]["transcriptionStatusDetails"] == (
        "streamConnectionUnsuccessful"
    )
    assert "not a WebSocket" in data["resultInformation"]["message"], data
    assert data["resultInformation"]["subCode"] == 8503


async def test_a_failing_callback_url_is_reported_and_does_not_stop_transcription(server):
    consumer = await Consumer().start()
    failing = await CallbackSink(status=500).start()
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        job = await create_job(http, consumer.url, callbackUri=failing.url)
        for _ in range(100):
            job = (await http.get(f"/v1/calls/{job['callConnectionId']}")).json()
            if job["callbacks"]["failed"]:
                break
            await asyncio.sleep(0.1)
    await consumer.stop()
    await failing.stop()
    assert job["callbacks"]["failed"] == 1 and job["callbacks"]["delivered"] == 0
    assert "HTTP 500" in job["callbacks"]["lastError"]
    assert len(failing.bodies) == 3  # tried three times
    assert job["status"] == "active" and job["delivery"]["connected"]
    assert consumer.frames[0]["kind"] == "TranscriptionMetadata"


@pytest.mark.parametrize(
    ("frames", "code", "reason"),
    [
        ([json.dumps({"kind": "AudioData", "audioData": {"data": "AAAA"}})], 1008, "before"),
        ([metadata_frame(), metadata_frame()], 1008, "twice"),
        ([b"\x00\x01"], 1003, "Binary frames"),
        ([json.dumps({"kind": "Video"})], 1008, "Unknown frame kind"),
        ([metadata_frame("OPUS")], 1003, "encoding"),
        ([metadata_frame("PCM", 11025)], 1003, "sampleRate"),
        ("not json", 1007, "not JSON"),
    ],
)
async def test_media_frames_out_of_order_or_malformed_close_with_a_reason(
    server, frames, code, reason
):
    sink = await CallbackSink().start()
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        job = await create_job(http, f"ws://127.0.0.1:{free_port()}/", callbackUri=sink.url)
        async with websockets.connect(server.ws + job["mediaUrl"]) as ws:
            for frame in [frames] if isinstance(frames, str) else frames:
                await ws.send(frame)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == code and reason in ws.close_reason
        ended = await wait_status(http, job["callConnectionId"], "ended")
    await sink.stop()
    assert ended["resultInformation"]["subCode"] == 8510
    assert reason in ended["resultInformation"]["message"]


async def test_bad_base64_ends_the_call_after_delivering_what_was_said(server):
    speech = utterances(1)
    if not speech:
        pytest.skip("no speech available")
    audio = np.concatenate([speech[0].audio, np.zeros(8000, dtype=np.float32)])
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    consumer = await Consumer().start()
    sink = await CallbackSink().start()
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        job = await create_job(http, consumer.url, callbackUri=sink.url)
        async with websockets.connect(server.ws + job["mediaUrl"], max_queue=None) as ws:
            await ws.send(metadata_frame("PCM", 16000))
            frames = mono_frames(pcm)  # mixed audio: no participantRawID
            start = await send_frames(ws, frames, speed=4.0)
            late = {"timestamp": iso(1_750_000_000_000), "data": "AAAAAA==", "silent": False}
            await ws.send(json.dumps({"kind": "AudioData", "audioData": late}))  # out of order
            await send_frames(ws, mono_frames(b"\0" * 6400, first_packet=len(frames)), 4.0, start)
            await ws.send(json.dumps({"kind": "AudioData", "audioData": {"data": "!!not base64"}}))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 30)
        assert ws.close_code == 1007 and "base64" in ws.close_reason
        ended = await wait_status(http, job["callConnectionId"], "ended", timeout=60)
        session = (await http.get(f"/v1/sessions/{ended['sessionId']}")).json()
    await consumer.stop()
    await sink.stop()
    assert ended["media"]["packetsOutOfOrder"] == 1
    pushed = finals(consumer.frames)
    assert pushed and len(pushed) == len(session["turns"])  # delivered and stored, not lost
    assert {p["participantRawID"] for p in pushed} == {"8:acs:streamscribe_mixed"}
    failed = await sink.wait_for("TranscriptionFailed")
    assert sink.kinds() == ["TranscriptionStarted", "TranscriptionFailed"]
    assert "base64" in failed["data"]["resultInformation"]["message"]
    assert failed["data"]["transcriptionUpdate"]["transcriptionStatusDetails"] == "badRequest"

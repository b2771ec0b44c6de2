"""Upload and call jobs survive a restart of a real server (issue 18, item 5).

- SIGTERM while an upload is being transcribed: the server exits within its grace, and the next
  server on the same data dir resumes the job, which ends "done" with each turn stored once and
  its audio metered once (never a 404, never a turn twice).
- kill -9 while two uploads are being transcribed, one of whose saved upload is then lost: after
  the restart one job resumes and ends "done", the other ends "error" with a reason saying to
  upload again, and usage counts only the audio transcribed (not the lost one's recording).
- kill -9 while a call-transcription job is open: after the restart `GET /v1/calls/{id}` reports
  it "ended", with a resultInformation naming the restart.

Each test runs its own server processes on a fresh data dir; every wait is bounded.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from conftest import RunningServer, free_port, start_server
from speech import joined, speech_or_skip

from streamscribe.audio.wav import WavWriter

REPEATS = 6  # long enough that a kill lands while the upload is being transcribed


def long_speech(path: Path) -> tuple[Path, float]:
    speech = joined(speech_or_skip(3))
    audio = np.concatenate([speech.audio] * REPEATS)
    writer = WavWriter(path, 16000, 1)
    writer.write(audio)
    writer.close()
    return path, len(audio) / 16000


def upload(server: RunningServer, path: Path) -> dict:
    with path.open("rb") as f:
        r = httpx.post(
            server.http + "/v1/transcripts",
            files={"file": (path.name, f, "audio/wav")},
            timeout=60,
        )
    assert r.status_code == 202, r.text
    return r.json()


def job(server: RunningServer, job_id: str) -> dict:
    r = httpx.get(f"{server.http}/v1/transcripts/{job_id}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def wait_transcribing(server: RunningServer, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = job(server, job_id)
        if state["status"] == "transcribing":
            return state
        assert state["status"] in ("queued", "decoding"), state
        time.sleep(0.05)
    raise AssertionError(f"never transcribing: {state}")


def wait_finished(server: RunningServer, job_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = job(server, job_id)  # 200 every time: never a 404 after the restart
        if state["status"] in ("done", "error"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never finished after the restart: {state}")


def usage_total(server: RunningServer) -> float:
    r = httpx.get(server.http + "/v1/usage", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["total_audio_seconds"]


def stop(server: RunningServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(40)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)


def check_stored_once(server: RunningServer, done: dict, seconds: float) -> None:
    assert done["status"] == "done", done
    assert done["progress"] == 1.0 and abs(done["audio_seconds"] - seconds) < 0.1
    turns = done["turns"]
    assert len(turns) >= REPEATS, turns  # each repeat has speech, so turns from all of it
    keys = [(t["channel"], t["turn_order"]) for t in turns]
    assert len(keys) == len(set(keys)), keys
    assert len({t["start_ms"] for t in turns}) == len(turns), "a turn is stored twice"
    assert max(t["end_ms"] for t in turns) > (seconds - 10) * 1000  # to the end of the file
    session = httpx.get(f"{server.http}/v1/sessions/{done['id']}", timeout=10).json()
    assert session["turn_count"] == len(turns) == len(session["turns"])
    assert session["end_reason"] not in ("abnormal", "error"), session


def test_sigterm_mid_transcription_resumes_the_upload(tmp_path: Path):
    data = tmp_path / "data"
    path, seconds = long_speech(tmp_path / "long talk.wav")
    first = start_server(data)
    try:
        accepted = upload(first, path)
        wait_transcribing(first, accepted["id"])
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(40) == 0
    finally:
        stop(first)
    assert list((data / "uploads").iterdir()), "the upload was not kept for the next start"
    again = start_server(data)
    try:
        done = wait_finished(again, accepted["id"])
        check_stored_once(again, done, seconds)
        assert done["filename"] == "long talk.wav"
        assert abs(usage_total(again) - seconds) < 0.1  # metered once, when complete
        assert not list((data / "uploads").iterdir())  # the upload is gone once done
    finally:
        stop(again)


def test_kill_mid_transcription_resumes_or_fails_visibly_and_bills_only_transcribed(
    tmp_path: Path,
):
    data = tmp_path / "data"
    path, seconds = long_speech(tmp_path / "kept.wav")
    lost_path, _ = long_speech(tmp_path / "lost.wav")
    first = start_server(data)
    try:
        kept = upload(first, path)
        lost = upload(first, lost_path)
        wait_transcribing(first, kept["id"])
        wait_transcribing(first, lost["id"])
        first.process.send_signal(signal.SIGKILL)
        assert first.process.wait(10) == -signal.SIGKILL
    finally:
        stop(first)
    for saved in (data / "uploads").glob(f"{lost['id']}*"):
        saved.unlink()  # the upload of one job does not survive (a wiped temp dir, a new disk)
    again = start_server(data)
    try:
        failed = wait_finished(again, lost["id"])
        assert failed["status"] == "error", failed
        assert "restarted" in failed["error"] and "upload it again" in failed["error"]
        lost_session = httpx.get(f"{again.http}/v1/sessions/{lost['id']}", timeout=10).json()
        assert lost_session.get("turn_count", 0) == 0
        done = wait_finished(again, kept["id"])
        check_stored_once(again, done, seconds)
        # only the transcribed upload is metered, once; the lost one's recording is not billed
        assert abs(usage_total(again) - seconds) < 0.1, usage_total(again)
    finally:
        stop(again)


def test_kill_during_a_call_reports_the_call_ended_after_restart(tmp_path: Path):
    data = tmp_path / "data"
    call_id = f"call-{uuid.uuid4()}"
    body = {
        "callConnectionId": call_id,
        "transcriptionOptions": {
            "transportType": "websocket",
            "transportUrl": f"ws://127.0.0.1:{free_port()}/push",
            "locale": "en-US",
            "startTranscription": True,
            "enableIntermediateResults": False,
        },
    }
    first = start_server(data)
    try:
        created = httpx.post(first.http + "/v1/calls", json=body, timeout=30)
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "active"
        first.process.send_signal(signal.SIGKILL)
        assert first.process.wait(10) == -signal.SIGKILL
    finally:
        stop(first)
    again = start_server(data)
    try:
        r = httpx.get(f"{again.http}/v1/calls/{call_id}", timeout=10)
        assert r.status_code == 200, r.text
        call = r.json()
        assert call["status"] == "ended" and call["callConnectionId"] == call_id
        assert call["resultInformation"]["subCode"] == 8530
        assert "restarted" in call["resultInformation"]["message"]
        listed = httpx.get(f"{again.http}/v1/calls", timeout=10).json()["calls"]
        assert [c["status"] for c in listed if c["callConnectionId"] == call_id] == ["ended"]
        # the id is free again for a new job
        again_body = {**body, "transcriptionOptions": {**body["transcriptionOptions"]}}
        renewed = httpx.post(again.http + "/v1/calls", json=again_body, timeout=30)
        assert renewed.status_code == 201, renewed.text
    finally:
        stop(again)

"""File uploads transcribed by a real server: `POST /v1/transcripts`, progress, the stored session.

Real speech is written to a WAV file, uploaded as multipart form data, and the job is polled until
it is done: its progress only grows and reaches 1, the transcript matches the reference, and the
result is a stored session (protocol "upload") with its turns, exports, recording and a place in
text search. Refusals (no file, not audio, an unknown language, no key, another key's job) each
come back with a reason that names the fix.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import wave
from pathlib import Path

import httpx
import pytest
from conftest import RunningServer, start_server
from speech import Speech, joined, speech_or_skip, wer

from streamscribe.audio.wav import WavWriter


def write_wav(path: Path, speech: Speech) -> Path:
    writer = WavWriter(path, 16000, 1)
    writer.write(speech.audio)
    writer.close()
    return path


def upload(
    server: RunningServer, path: Path, headers: dict | None = None, **fields: str
) -> httpx.Response:
    with path.open("rb") as f:
        return httpx.post(
            server.http + "/v1/transcripts",
            files={"file": (path.name, f, "audio/wav")},
            data=fields,
            headers=headers or {},
            timeout=60,
        )


def poll(server: RunningServer, job_id: str, headers: dict | None = None) -> list[dict]:
    """Every distinct state the job went through, until it is done or failed."""
    seen: list[dict] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = httpx.get(f"{server.http}/v1/transcripts/{job_id}", headers=headers or {}, timeout=10)
        assert r.status_code == 200, r.text
        job = r.json()
        if not seen or (job["status"], job["progress"]) != (
            seen[-1]["status"],
            seen[-1]["progress"],
        ):
            seen.append(job)
        if job["status"] in ("done", "error"):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"upload job {job_id} never finished: {seen[-1:]}")


@pytest.fixture(scope="module")
def uploaded(server: RunningServer, tmp_path_factory: pytest.TempPathFactory):
    speech = joined(speech_or_skip(3))
    path = write_wav(tmp_path_factory.mktemp("uploads") / "meeting notes.wav", speech)
    r = upload(server, path)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "decoding") and job["filename"] == "meeting notes.wav"
    return speech, job, poll(server, job["id"])


def test_upload_is_transcribed_with_growing_progress(uploaded):
    speech, _job, states = uploaded
    final = states[-1]
    assert final["status"] == "done", final
    progress = [s["progress"] for s in states]
    assert progress == sorted(progress) and progress[-1] == 1.0, progress
    assert any(s["status"] == "transcribing" for s in states), states
    assert abs(final["audio_seconds"] - speech.seconds) < 0.1
    assert len(final["turns"]) >= 2  # the pauses between utterances split the turns
    assert wer(speech.text, final["text"]) <= 0.3, final["text"]
    starts = [t["start_ms"] for t in final["turns"]]
    assert starts == sorted(starts) and all(t["words"] for t in final["turns"])


def test_upload_is_a_stored_session_with_recording(server: RunningServer, uploaded):
    speech, job, states = uploaded
    r = httpx.get(f"{server.http}/v1/sessions/{job['id']}", timeout=10)
    assert r.status_code == 200, r.text
    session = r.json()
    assert session["protocol"] == "upload" and session["end_reason"] == "terminated"
    assert session["params"]["filename"] == "meeting notes.wav"
    assert session["has_recording"] and session["turn_count"] == len(states[-1]["turns"])
    assert abs(session["audio_seconds"] - speech.seconds) < 0.1
    wav = httpx.get(f"{server.http}/v1/sessions/{job['id']}/recording.wav", timeout=10)
    assert wav.status_code == 200
    with wave.open(io.BytesIO(wav.content)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        assert abs(w.getnframes() / 16000 - speech.seconds) < 0.05
    txt = httpx.get(f"{server.http}/v1/sessions/{job['id']}/transcript.txt", timeout=10).text
    assert wer(speech.text, txt) <= 0.3, txt


def test_upload_is_found_by_text_search(server: RunningServer, uploaded):
    _speech, job, states = uploaded
    word = max(states[-1]["turns"][0]["text"].split(), key=len).strip(".,!?;:")
    found = httpx.get(f"{server.http}/v1/sessions", params={"q": word}, timeout=10).json()
    assert job["id"] in [s["id"] for s in found["sessions"]], word
    missing = httpx.get(f"{server.http}/v1/sessions", params={"q": "zqxjv"}, timeout=10).json()
    assert job["id"] not in [s["id"] for s in missing["sessions"]]


def test_a_file_that_is_not_audio_fails_with_the_fix(server: RunningServer, tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_text("these are words, not sound\n" * 50)
    r = upload(server, path)
    assert r.status_code == 202, r.text
    final = poll(server, r.json()["id"])[-1]
    assert final["status"] == "error"
    assert "'notes.txt'" in final["error"] and "upload an audio or video file" in final["error"]
    assert str(tmp_path) not in final["error"] and "uploads" not in final["error"]
    # nothing half-done is left in History
    r = httpx.get(f"{server.http}/v1/sessions/{final['id']}", timeout=10)
    assert r.status_code == 404


def test_refusals_name_the_fix(server: RunningServer, tmp_path: Path):
    r = httpx.post(server.http + "/v1/transcripts", data={"language": "en"}, timeout=10)
    assert r.status_code == 400 and "multipart/form-data" in r.json()["detail"]
    r = httpx.post(server.http + "/v1/transcripts", files={"other": ("a.wav", b"x")}, timeout=10)
    assert r.status_code == 400 and "field named 'file'" in r.json()["detail"]
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    r = upload(server, empty)
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    r = upload(server, empty, language="klingon")
    assert r.status_code == 400 and "auto to detect" in r.json()["detail"]
    r = upload(server, empty, keyterms=",".join(["x" * 60]))
    assert r.status_code == 400 and "50 characters" in r.json()["detail"]
    r = httpx.get(f"{server.http}/v1/transcripts/nope", timeout=10)
    assert r.status_code == 404 and "/v1/sessions/nope" in r.json()["detail"]


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streamscribe", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_uploads_need_a_key_and_stay_with_it(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("uploads-keys")
    alice = _cli("keys", "create", "alice", "--data-dir", str(data))
    bob = _cli("keys", "create", "bob", "--data-dir", str(data))
    speech = speech_or_skip(1)[0]
    path = write_wav(data / "one.wav", speech)
    server = start_server(data)
    try:
        r = upload(server, path)
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        r = upload(server, path, headers={"Authorization": alice})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        r = httpx.get(
            f"{server.http}/v1/transcripts/{job_id}", headers={"Authorization": bob}, timeout=10
        )
        assert r.status_code == 404
        final = poll(server, job_id, {"Authorization": alice})[-1]
        assert final["status"] == "done" and wer(speech.text, final["text"]) <= 0.35
        mine = httpx.get(
            server.http + "/v1/sessions", headers={"Authorization": alice}, timeout=10
        ).json()
        theirs = httpx.get(
            server.http + "/v1/sessions", headers={"Authorization": bob}, timeout=10
        ).json()
        assert [s["id"] for s in mine["sessions"]] == [job_id] and theirs["sessions"] == []
        usage = httpx.get(
            server.http + "/v1/usage", headers={"Authorization": alice}, timeout=10
        ).json()
        assert abs(usage["total_audio_seconds"] - speech.seconds) < 0.1
    finally:
        server.process.terminate()
        server.process.wait(30)


def test_info_and_page_share_the_root(server: RunningServer):
    info = httpx.get(server.http + "/v1/info", timeout=10).json()
    assert info["service"] == "streamscribe" and info["auth"] == "open"
    assert info["endpoints"]["uploads"] == "/v1/transcripts" and info["model"] in info["models"]
    page = httpx.get(server.http + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    script = httpx.get(server.http + "/web/app.js", timeout=10)
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    for bad in ("/web/..%2Fserver%2Fapp.py", "/web/.hidden.js", "/web/nothing.js"):
        r = httpx.get(server.http + bad, timeout=10)
        assert r.status_code == 404, bad

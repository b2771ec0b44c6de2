"""The platform around the streaming API, against a real server that requires keys.

A key made with the CLI (`streamscribe keys create alice --max-streams 1`) before the server
starts puts it out of open mode; the admin API (STREAMSCRIBE_ADMIN_KEY) makes the others. Real
speech is streamed over /v3/ws, then read back through /v1: sessions, turns, transcripts in
four formats, the recording, usage, search, deletion; every key sees only its own sessions.
Temporary tokens (`GET /v3/token`) open exactly one session each.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import time
import wave
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import websockets
from conftest import RunningServer, start_server
from speech import Speech, joined, speech_or_skip, wer
from websockets.exceptions import ConnectionClosed

from streamscribe.store import Store

ADMIN_KEY = "admin-secret"
CHUNK = 3200  # 100 ms of 16 kHz pcm_s16le
SPEED = 4.0  # times real time
SRT_TIMING = re.compile(r"^(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})$")
VTT_TIMING = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$")


# ------------------------------------------------------------------------------ helpers


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamscribe", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": secret}


@dataclass
class Outcome:
    """What a client saw of one session: messages, close code and reason."""

    messages: list[dict] = field(default_factory=list)
    code: int | None = None
    reason: str = ""
    sent_bytes: int = 0

    @property
    def begin(self) -> dict | None:
        return next((m for m in self.messages if m.get("type") == "Begin"), None)

    @property
    def finals(self) -> list[dict]:
        return [m for m in self.messages if m.get("type") == "Turn" and m["end_of_turn"]]

    @property
    def sent_seconds(self) -> float:
        return self.sent_bytes / 32000

    def text(self) -> str:
        formatted = [m for m in self.finals if m.get("turn_is_formatted")]
        return " ".join(m["transcript"] for m in (formatted or self.finals))


async def _read_all(ws, outcome: Outcome) -> None:
    try:
        async for raw in ws:
            outcome.messages.append(json.loads(raw))
    except ConnectionClosed:
        pass
    outcome.code, outcome.reason = ws.close_code, ws.close_reason


async def session(
    server: RunningServer,
    headers: dict[str, str] | None = None,
    query: str = "sample_rate=16000",
    pcm: bytes = b"",
    speed: float = SPEED,
    terminate: bool = True,
    timeout: float = 60.0,
) -> Outcome:
    """Open a v3 session, stream `pcm` in 100 ms chunks at `speed`, Terminate, read to close."""
    outcome = Outcome()
    ws = await websockets.connect(
        f"{server.ws}/v3/ws?{query}", additional_headers=headers or {}, open_timeout=10
    )
    reader = asyncio.create_task(_read_all(ws, outcome))
    deadline = time.monotonic() + 10
    while outcome.begin is None and not reader.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    if outcome.begin is not None:
        t0 = time.monotonic()
        for k, i in enumerate(range(0, len(pcm), CHUNK)):
            chunk = pcm[i : i + CHUNK]
            chunk += b"\0" * (CHUNK - len(chunk))  # v3 takes frames of 50 ms or more
            if reader.done():
                break
            await ws.send(chunk)
            outcome.sent_bytes += len(chunk)
            delay = t0 + (k + 1) * 0.1 / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if terminate and not reader.done():
            await ws.send(json.dumps({"type": "Terminate"}))
    await asyncio.wait_for(reader, timeout)
    return outcome


async def refused(server: RunningServer, headers=None, query="sample_rate=16000") -> Outcome:
    """A session the server must refuse: an Error message, then the close."""
    outcome = await session(server, headers, query)
    assert outcome.begin is None, outcome.messages
    errors = [m for m in outcome.messages if m.get("type") == "Error"]
    assert errors and errors[-1]["error_code"] == outcome.code, outcome.messages
    assert outcome.reason, "a refusal must say why"
    return outcome


async def open_begun(server: RunningServer, headers: dict[str, str], wait_s: float = 3.0):
    """A session that got its Begin; a 3009 from the previous session still closing is retried
    (see test_sequential_sessions_within_max_streams for that server race)."""
    deadline = time.monotonic() + wait_s
    while True:
        ws = await websockets.connect(
            f"{server.ws}/v3/ws?sample_rate=16000", additional_headers=headers, open_timeout=10
        )
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        except ConnectionClosed:
            first = {}
        if first.get("type") == "Begin":
            return ws, first
        await ws.close()
        if ws.close_code != 3009 and first.get("error_code") != 3009:
            raise AssertionError(f"session refused: {first} {ws.close_code} {ws.close_reason}")
        if time.monotonic() > deadline:
            raise AssertionError(f"still refused after {wait_s} s: {first}")
        await asyncio.sleep(0.1)


async def finish(ws) -> Outcome:
    outcome = Outcome()
    reader = asyncio.create_task(_read_all(ws, outcome))
    await ws.send(json.dumps({"type": "Terminate"}))
    await asyncio.wait_for(reader, 30)
    return outcome


def wait_ended(server: RunningServer, session_id: str, headers: dict[str, str]) -> dict:
    """The session as the API shows it once the server has finished its bookkeeping."""
    deadline = time.monotonic() + 15
    while True:
        r = httpx.get(f"{server.http}/v1/sessions/{session_id}", headers=headers, timeout=10)
        if r.status_code == 200 and r.json()["ended"] is not None:
            return r.json()
        assert time.monotonic() < deadline, (r.status_code, r.text)
        time.sleep(0.1)


def usage_today(server: RunningServer, headers: dict[str, str]) -> float:
    today = datetime.now(UTC).date().isoformat()
    r = httpx.get(f"{server.http}/v1/usage", params={"since": today}, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return sum(row["audio_seconds"] for row in r.json()["usage"] if row["day"] == today)


def silence(seconds: float) -> bytes:
    return b"\0" * int(seconds * 32000)


# ------------------------------------------------------------------------------ fixtures


@dataclass
class Platform:
    server: RunningServer
    alice: str  # made with the CLI, --max-streams 1
    bob: str  # made with the admin API, no limits

    @property
    def admin(self) -> dict[str, str]:
        return auth(ADMIN_KEY)

    def get(self, path: str, secret: str | None, **params) -> httpx.Response:
        headers = auth(secret) if secret else {}
        return httpx.get(self.server.http + path, headers=headers, params=params, timeout=30)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("platform-data")
    made = cli("keys", "create", "alice", "--data-dir", str(data), "--max-streams", "1")
    assert made.returncode == 0, made.stderr
    alice = made.stdout.strip()
    assert alice.startswith("sk_") and "not stored" in made.stderr
    server = start_server(data, env={"STREAMSCRIBE_ADMIN_KEY": ADMIN_KEY})
    try:
        r = httpx.post(
            server.http + "/v1/admin/keys", json={"name": "bob"}, headers=auth(ADMIN_KEY)
        )
        assert r.status_code == 201, r.text
        yield Platform(server, alice, r.json()["key"])
    finally:
        server.process.terminate()
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()


@dataclass
class Streamed:
    speech: Speech
    outcome: Outcome
    id: str
    usage_added: float


@pytest.fixture(scope="module")
def alice_session(platform: Platform) -> Streamed:
    """Two real utterances with a pause, streamed by alice at 4x real time, then Terminate."""
    speech = joined(speech_or_skip(2))
    before = usage_today(platform.server, auth(platform.alice))
    outcome = asyncio.run(session(platform.server, auth(platform.alice), pcm=speech.pcm16()))
    assert outcome.begin is not None, outcome.messages
    session_id = outcome.begin["id"]
    wait_ended(platform.server, session_id, auth(platform.alice))
    deadline = time.monotonic() + 10
    added = 0.0
    while time.monotonic() < deadline:  # usage is written just after the session's end
        added = usage_today(platform.server, auth(platform.alice)) - before
        if added > 0:
            break
        time.sleep(0.1)
    return Streamed(speech, outcome, session_id, added)


# ------------------------------------------------------------------------------ v3 access


async def test_no_key_is_refused_with_1008(platform: Platform):
    outcome = await refused(platform.server)
    assert outcome.code == 1008
    assert "Authorization" in outcome.reason


@pytest.mark.parametrize("secret", ["sk_not-a-real-key-0123456789", "garbage", "Bearer nope"])
async def test_wrong_key_is_refused_with_1008(platform: Platform, secret: str):
    outcome = await refused(platform.server, auth(secret))
    assert outcome.code == 1008
    assert "Unauthorized" in outcome.reason


async def test_wrong_key_reason_talks_about_the_key(platform: Platform):
    outcome = await refused(platform.server, auth("sk_not-a-real-key-0123456789"))
    assert "API key" in outcome.reason, outcome.reason


async def test_valid_key_in_authorization_streams_real_speech(
    platform: Platform, alice_session: Streamed
):
    outcome = alice_session.outcome
    assert outcome.code == 1000, (outcome.code, outcome.reason)
    assert outcome.messages[0]["type"] == "Begin"
    assert outcome.messages[-1]["type"] == "Termination"
    assert len(outcome.finals) >= 1
    text = outcome.text()
    assert wer(alice_session.speech.text, text) <= 0.35, (alice_session.speech.text, text)


async def test_max_streams_refuses_a_second_concurrent_session(
    platform: Platform, alice_session: Streamed
):
    first, _ = await open_begun(platform.server, auth(platform.alice))
    try:
        second = await refused(platform.server, auth(platform.alice))
        assert second.code == 3009
        assert "concurrent" in second.reason.lower() and "1" in second.reason, second.reason
        assert "alice" in second.reason
        # another key is not affected by alice's limit
        other = await session(platform.server, auth(platform.bob))
        assert other.begin is not None and other.code == 1000, other.messages
    finally:
        end = await finish(first)
    assert end.code == 1000 and end.messages[-1]["type"] == "Termination"


async def test_sequential_sessions_within_max_streams(platform: Platform, alice_session: Streamed):
    ws, _ = await open_begun(platform.server, auth(platform.alice))
    assert (await finish(ws)).code == 1000
    for _ in range(5):
        nxt = await session(platform.server, auth(platform.alice), pcm=silence(0.2))
        assert nxt.begin is not None, (nxt.code, nxt.reason)


# ------------------------------------------------------------------------------ admin API


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/admin/keys"), ("POST", "/v1/admin/keys"), ("DELETE", "/v1/admin/keys/alice")],
)
def test_admin_api_needs_the_admin_key(platform: Platform, method: str, path: str):
    url = platform.server.http + path
    body = {"json": {"name": "mallory"}} if method == "POST" else {}
    missing = httpx.request(method, url, timeout=10, **body)
    assert missing.status_code == 401, missing.text
    assert missing.json()["detail"]
    for wrong in ("wrong-admin-key", platform.alice):  # a user key is not an admin key
        r = httpx.request(method, url, headers=auth(wrong), timeout=10, **body)
        assert r.status_code in (401, 403), r.text
        assert r.json()["detail"]
    # nothing happened
    keys = httpx.get(platform.server.http + "/v1/admin/keys", headers=platform.admin).json()
    names = {k["name"] for k in keys["keys"] if not k["revoked"]}
    assert "mallory" not in names and "alice" in names


def test_admin_refusal_names_the_fix(platform: Platform):
    r = httpx.get(platform.server.http + "/v1/admin/keys", timeout=10)
    assert "Authorization" in r.json()["detail"], r.text


async def test_admin_creates_lists_and_revokes_keys(platform: Platform):
    http = platform.server.http
    r = httpx.post(
        http + "/v1/admin/keys",
        json={"name": "carol", "max_streams": 2, "max_session_seconds": 600},
        headers=platform.admin,
    )
    assert r.status_code == 201, r.text
    created = r.json()
    carol = created["key"]
    assert carol.startswith(created["prefix"]) and created["max_streams"] == 2

    used = await session(platform.server, auth(carol), pcm=silence(0.3))
    assert used.begin is not None and used.code == 1000, used.messages
    # the key's own session cap shows in Begin.expires_at
    assert used.begin["expires_at"] - time.time() <= 600 + 5

    listing = httpx.get(http + "/v1/admin/keys", headers=platform.admin)
    assert listing.status_code == 200
    keys = {k["name"]: k for k in listing.json()["keys"]}
    assert {"alice", "bob", "carol"} <= set(keys)
    assert keys["alice"]["max_streams"] == 1 and keys["carol"]["max_session_seconds"] == 600
    for secret in (carol, platform.alice, platform.bob):
        assert secret not in listing.text  # secrets are shown once, at creation only
    assert all("key" not in k for k in keys.values())

    dup = httpx.post(http + "/v1/admin/keys", json={"name": "carol"}, headers=platform.admin)
    assert dup.status_code == 409 and "revoke" in dup.json()["detail"]
    bad = httpx.post(
        http + "/v1/admin/keys", json={"name": "x", "max_streams": 0}, headers=platform.admin
    )
    assert bad.status_code == 422

    gone = httpx.delete(http + "/v1/admin/keys/carol", headers=platform.admin)
    assert gone.status_code == 200, gone.text
    assert gone.json()["revoked"] is True and gone.json()["id"] == created["id"]

    after = await refused(platform.server, auth(carol))
    assert after.code == 1008
    assert platform.get("/v1/sessions", carol).status_code == 401

    again = httpx.delete(http + "/v1/admin/keys/carol", headers=platform.admin)
    assert again.status_code == 404
    assert "carol" in again.json()["detail"] and "GET /v1/admin/keys" in again.json()["detail"]
    unknown = httpx.delete(http + "/v1/admin/keys/nobody", headers=platform.admin)
    assert unknown.status_code == 404 and "nobody" in unknown.json()["detail"]

    listed = httpx.get(http + "/v1/admin/keys", headers=platform.admin).json()["keys"]
    assert any(k["name"] == "carol" and k["revoked"] for k in listed)
    active = httpx.get(
        http + "/v1/admin/keys", params={"include_revoked": "false"}, headers=platform.admin
    ).json()["keys"]
    assert all(k["name"] != "carol" for k in active)


# ------------------------------------------------------------------------------ read back


def test_sessions_list_and_detail(platform: Platform, alice_session: Streamed):
    r = platform.get("/v1/sessions", platform.alice)
    assert r.status_code == 200, r.text
    page = r.json()
    listed = {s["id"]: s for s in page["sessions"]}
    assert alice_session.id in listed and page["total"] >= 1
    info = listed[alice_session.id]
    assert info["end_reason"] == "terminated" and info["protocol"] == "assemblyai-v3"
    assert info["has_recording"] is True
    assert abs(info["audio_seconds"] - alice_session.outcome.sent_seconds) <= 0.3

    detail = platform.get(f"/v1/sessions/{alice_session.id}", platform.alice).json()
    assert detail["id"] == alice_session.id
    assert detail["turn_count"] == len(detail["turns"]) >= 1
    end_ms = alice_session.outcome.sent_seconds * 1000
    for turn in detail["turns"]:
        assert turn["text"] and turn["words"]
        assert 0 <= turn["start_ms"] <= turn["end_ms"] <= end_ms + 500
        for word in turn["words"]:
            assert {"text", "start", "end", "confidence"} <= set(word)
            assert turn["start_ms"] <= word["start"] <= word["end"] <= turn["end_ms"]
    text = " ".join(t["text"] for t in detail["turns"])
    assert wer(alice_session.speech.text, text) <= 0.35, text

    paged = platform.get("/v1/sessions", platform.alice, limit=1, offset=0).json()
    assert len(paged["sessions"]) == 1 and paged["limit"] == 1


def test_sessions_filter_by_date(platform: Platform, alice_session: Streamed):
    today = datetime.now(UTC).date()
    tomorrow = (today + timedelta(days=1)).isoformat()

    def ids(**params) -> set[str]:
        r = platform.get("/v1/sessions", platform.alice, **params)
        assert r.status_code == 200, r.text
        return {s["id"] for s in r.json()["sessions"]}

    assert alice_session.id in ids(since=today.isoformat())
    assert alice_session.id in ids(since=today.isoformat(), until=tomorrow)
    assert alice_session.id not in ids(since=tomorrow)
    assert alice_session.id not in ids(until=today.isoformat())
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert alice_session.id in ids(since=an_hour_ago)
    bad = platform.get("/v1/sessions", platform.alice, since="last tuesday")
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.json()["detail"]


def _cue_times(text: str, timing: re.Pattern) -> list[tuple[int, int]]:
    out = []
    for line in text.splitlines():
        m = timing.match(line)
        if m:
            h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, m.groups())
            out.append(
                (
                    ((h1 * 60 + m1) * 60 + s1) * 1000 + ms1,
                    ((h2 * 60 + m2) * 60 + s2) * 1000 + ms2,
                )
            )
    return out


def _cue_text(text: str, timing: re.Pattern) -> str:
    skip = re.compile(r"^\d+$|^WEBVTT")
    return " ".join(
        line
        for line in text.splitlines()
        if line and not timing.match(line) and not skip.match(line)
    )


def test_transcript_in_four_formats(platform: Platform, alice_session: Streamed):
    base = f"/v1/sessions/{alice_session.id}/transcript"
    reference = alice_session.speech.text
    end_ms = alice_session.outcome.sent_seconds * 1000 + 500

    txt = platform.get(base + ".txt", platform.alice)
    assert txt.status_code == 200 and txt.headers["content-type"].startswith("text/plain")
    assert wer(reference, txt.text) <= 0.35, txt.text

    for fmt, media, timing in (
        ("srt", "application/x-subrip", SRT_TIMING),
        ("vtt", "text/vtt", VTT_TIMING),
    ):
        r = platform.get(f"{base}.{fmt}", platform.alice)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith(media)
        times = _cue_times(r.text, timing)
        assert times, r.text
        assert all(0 <= a <= b <= end_ms for a, b in times), times
        assert [a for a, _ in times] == sorted(a for a, _ in times)
        assert wer(reference, _cue_text(r.text, timing)) <= 0.35, r.text
    srt = platform.get(base + ".srt", platform.alice).text
    assert srt.splitlines()[0] == "1"
    assert platform.get(base + ".vtt", platform.alice).text.startswith("WEBVTT")

    js = platform.get(base + ".json", platform.alice)
    assert js.status_code == 200 and js.headers["content-type"].startswith("application/json")
    document = js.json()
    assert document["turns"] and wer(reference, document["text"]) <= 0.35
    assert all(w["start_ms"] <= w["end_ms"] for t in document["turns"] for w in t["words"])

    unknown = platform.get(base + ".docx", platform.alice)
    assert unknown.status_code == 404 and "transcript.srt" in unknown.json()["detail"]


def test_recording_is_the_streamed_audio(platform: Platform, alice_session: Streamed):
    r = platform.get(f"/v1/sessions/{alice_session.id}/recording.wav", platform.alice)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        seconds = w.getnframes() / w.getframerate()
    assert abs(seconds - alice_session.outcome.sent_seconds) <= 0.3, seconds


def test_usage_shows_todays_streamed_seconds(platform: Platform, alice_session: Streamed):
    assert abs(alice_session.usage_added - alice_session.outcome.sent_seconds) <= 0.3
    today = datetime.now(UTC).date().isoformat()
    r = platform.get("/v1/usage", platform.alice, since=today)
    body = r.json()
    assert [row["day"] for row in body["usage"]] == [today]
    assert body["total_audio_seconds"] >= alice_session.outcome.sent_seconds - 0.3
    assert all(row["key_id"] == body["key_id"] for row in body["usage"])
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    assert platform.get("/v1/usage", platform.alice, since=tomorrow).json()["usage"] == []
    # bob's usage does not include alice's audio
    assert usage_today(platform.server, auth(platform.bob)) < alice_session.outcome.sent_seconds
    bad = platform.get("/v1/usage", platform.alice, since="yesterday")
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.json()["detail"]
    assert platform.get("/v1/usage", None).status_code == 401


def test_text_search_finds_the_session(platform: Platform, alice_session: Streamed):
    detail = platform.get(f"/v1/sessions/{alice_session.id}", platform.alice).json()
    words = re.findall(r"[A-Za-z]{4,}", " ".join(t["text"] for t in detail["turns"]))
    assert words, detail
    word = max(words, key=len)
    for q in (word, word.upper(), word.lower()[1:]):
        found = platform.get("/v1/sessions", platform.alice, q=q).json()
        assert alice_session.id in {s["id"] for s in found["sessions"]}, q
    nothing = platform.get("/v1/sessions", platform.alice, q="qzxjvk").json()
    assert nothing["sessions"] == [] and nothing["total"] == 0


def test_key_isolation(platform: Platform, alice_session: Streamed):
    sid = alice_session.id
    never = "00000000-0000-0000-0000-000000000000"
    for suffix in ("", "/transcript.txt", "/transcript.json", "/recording.wav"):
        theirs = platform.get(f"/v1/sessions/{sid}{suffix}", platform.bob)
        missing = platform.get(f"/v1/sessions/{never}{suffix}", platform.bob)
        assert theirs.status_code == 404, (suffix, theirs.text)  # never 403: no leak
        assert theirs.json()["detail"].replace(sid, "X") == missing.json()["detail"].replace(
            never, "X"
        )
    r = httpx.delete(f"{platform.server.http}/v1/sessions/{sid}", headers=auth(platform.bob))
    assert r.status_code == 404
    bobs = platform.get("/v1/sessions", platform.bob).json()["sessions"]
    alices = platform.get("/v1/sessions", platform.alice).json()["sessions"]
    assert sid not in {s["id"] for s in bobs}
    alice_id = next(s["key_id"] for s in alices if s["id"] == sid)
    assert {s["key_id"] for s in alices} == {alice_id}  # only her own
    assert alice_id not in {s["key_id"] for s in bobs}
    word = max(re.findall(r"[A-Za-z]{4,}", alice_session.outcome.text()) or ["x"], key=len)
    searched = platform.get("/v1/sessions", platform.bob, q=word).json()["sessions"]
    assert sid not in {s["id"] for s in searched}
    # still there for alice
    assert platform.get(f"/v1/sessions/{sid}", platform.alice).status_code == 200
    assert platform.get("/v1/sessions", None).status_code == 401


async def test_delete_removes_turns_and_recording(platform: Platform):
    speech = speech_or_skip(1)[0]
    outcome = await session(platform.server, auth(platform.bob), pcm=speech.pcm16())
    sid = outcome.begin["id"]
    info = wait_ended(platform.server, sid, auth(platform.bob))
    assert info["turns"] and info["has_recording"]
    path = platform.server.data_dir / "recordings" / f"{sid}.wav"
    assert path.exists()

    r = httpx.delete(f"{platform.server.http}/v1/sessions/{sid}", headers=auth(platform.bob))
    assert r.status_code == 204 and r.content == b""
    assert not path.exists()
    for suffix in ("", "/transcript.txt", "/recording.wav"):
        assert platform.get(f"/v1/sessions/{sid}{suffix}", platform.bob).status_code == 404
    listed = platform.get("/v1/sessions", platform.bob).json()["sessions"]
    assert sid not in {s["id"] for s in listed}
    again = httpx.delete(f"{platform.server.http}/v1/sessions/{sid}", headers=auth(platform.bob))
    assert again.status_code == 404

    store = await Store.open(None, platform.server.data_dir)  # the server's own database
    try:
        assert await store.get_session(sid) is None
        word = max(re.findall(r"[A-Za-z]{4,}", outcome.text()) or ["x"], key=len)
        hits, _ = await store.list_sessions(text=word)
        assert sid not in {h.id for h in hits}
    finally:
        await store.close()


async def test_a_live_session_cannot_be_deleted(platform: Platform):
    ws, begin = await open_begun(platform.server, auth(platform.bob))
    sid = begin["id"]
    try:
        await ws.send(silence(0.5))
        live = httpx.delete(f"{platform.server.http}/v1/sessions/{sid}", headers=auth(platform.bob))
        assert live.status_code == 409 and "Terminate" in live.json()["detail"], live.text
        # another key learns nothing about it
        other = httpx.delete(
            f"{platform.server.http}/v1/sessions/{sid}", headers=auth(platform.alice)
        )
        assert other.status_code == 404
        shown = platform.get(f"/v1/sessions/{sid}", platform.bob).json()
        assert shown["ended"] is None and shown["end_reason"] is None
        wav = platform.get(f"/v1/sessions/{sid}/recording.wav", platform.bob)
        assert wav.status_code == 409 and "live" in wav.json()["detail"]
    finally:
        assert (await finish(ws)).code == 1000
    wait_ended(platform.server, sid, auth(platform.bob))
    done = httpx.delete(f"{platform.server.http}/v1/sessions/{sid}", headers=auth(platform.bob))
    assert done.status_code == 204


async def test_unrecorded_session_has_no_recording(platform: Platform):
    r = httpx.post(
        platform.server.http + "/v1/admin/keys",
        json={"name": "dana", "record_audio": False},
        headers=platform.admin,
    )
    dana = r.json()["key"]
    outcome = await session(platform.server, auth(dana), pcm=silence(0.5))
    sid = outcome.begin["id"]
    info = wait_ended(platform.server, sid, auth(dana))
    assert info["has_recording"] is False
    wav = platform.get(f"/v1/sessions/{sid}/recording.wav", dana)
    assert wav.status_code == 404
    assert wav.json()["detail"] == "no recording: the session was not recorded (opted out)"
    assert not (platform.server.data_dir / "recordings" / f"{sid}.wav").exists()
    gone = httpx.delete(f"{platform.server.http}/v1/sessions/{sid}", headers=auth(dana))
    assert gone.status_code == 204


# ------------------------------------------------------------------------------ tokens


def mint(platform: Platform, secret: str | None, **params) -> httpx.Response:
    return platform.get("/v3/token", secret, **params)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({}, "expires_in_seconds is required"),
        ({"expires_in_seconds": 0}, "expires_in_seconds"),
        ({"expires_in_seconds": 601}, "expires_in_seconds"),
        ({"expires_in_seconds": "soon"}, "expires_in_seconds"),
        ({"expires_in_seconds": 60, "max_session_duration_seconds": 59}, "60 to 10800"),
        ({"expires_in_seconds": 60, "max_session_duration_seconds": 10801}, "60 to 10800"),
    ],
)
def test_token_parameters_are_validated(platform: Platform, params: dict, needle: str):
    r = mint(platform, platform.bob, **params)
    assert r.status_code == 400, r.text
    assert needle in r.json()["detail"]


def test_token_needs_a_key(platform: Platform):
    assert mint(platform, None, expires_in_seconds=60).status_code == 401
    assert mint(platform, "sk_wrong", expires_in_seconds=60).status_code == 401
    ok = mint(platform, platform.bob, expires_in_seconds=600, max_session_duration_seconds=60)
    assert ok.status_code == 200 and ok.json()["expires_in_seconds"] == 600
    token = ok.json()["token"]
    # a token is for one WebSocket session, not for the REST API
    assert platform.get("/v1/sessions", token).status_code == 401


async def test_token_in_query_opens_exactly_one_session(platform: Platform):
    token = mint(platform, platform.bob, expires_in_seconds=60).json()["token"]
    query = f"sample_rate=16000&token={token}"
    first = await session(platform.server, query=query, pcm=silence(0.3))
    assert first.begin is not None and first.code == 1000, first.messages
    again = await refused(platform.server, query=query)
    assert again.code == 1008
    assert "token" in again.reason and "/v3/token" in again.reason
    # the session belongs to the key that minted the token
    bobs = {s["id"] for s in platform.get("/v1/sessions", platform.bob).json()["sessions"]}
    assert first.begin["id"] in bobs


async def test_token_in_authorization_header_opens_one_session(platform: Platform):
    token = mint(platform, platform.bob, expires_in_seconds=60).json()["token"]
    first = await session(platform.server, auth(token), pcm=silence(0.3))
    assert first.begin is not None and first.code == 1000, first.messages
    again = await refused(platform.server, auth(token))
    assert again.code == 1008 and "token" in again.reason


def test_token_with_the_official_sdk(platform: Platform):
    """The AssemblyAI SDK sends a temporary token as the Authorization header."""
    import threading

    from assemblyai.streaming.v3 import (
        BeginEvent,
        StreamingClient,
        StreamingClientOptions,
        StreamingEvents,
        StreamingParameters,
        TerminationEvent,
    )

    token = mint(platform, platform.bob, expires_in_seconds=60).json()["token"]
    client = StreamingClient(StreamingClientOptions(token=token, api_host=platform.server.ws))
    events: list[object] = []
    done = threading.Event()
    client.on(StreamingEvents.Begin, lambda _c, e: events.append(e))
    client.on(StreamingEvents.Error, lambda _c, e: events.append(e))
    client.on(StreamingEvents.Termination, lambda _c, e: (events.append(e), done.set()))
    client.connect(StreamingParameters(sample_rate=16000))
    client.stream(iter([silence(0.1)] * 3))
    client.disconnect(terminate=True)
    assert done.wait(20), events
    assert isinstance(events[0], BeginEvent) and isinstance(events[-1], TerminationEvent)


async def test_expired_token_is_refused(platform: Platform):
    token = mint(platform, platform.bob, expires_in_seconds=1).json()["token"]
    await asyncio.sleep(1.6)
    outcome = await refused(platform.server, query=f"sample_rate=16000&token={token}")
    assert outcome.code == 1008 and "expired" in outcome.reason


async def test_revoked_keys_tokens_are_refused(platform: Platform):
    r = httpx.post(
        platform.server.http + "/v1/admin/keys", json={"name": "erin"}, headers=platform.admin
    )
    erin = r.json()["key"]
    token = mint(platform, erin, expires_in_seconds=60).json()["token"]
    httpx.delete(platform.server.http + "/v1/admin/keys/erin", headers=platform.admin)
    outcome = await refused(platform.server, query=f"sample_rate=16000&token={token}")
    assert outcome.code == 1008


async def test_token_caps_the_session_expiry(platform: Platform):
    token = mint(
        platform, platform.bob, expires_in_seconds=60, max_session_duration_seconds=60
    ).json()["token"]
    capped = await session(platform.server, query=f"sample_rate=16000&token={token}")
    assert capped.begin is not None
    assert abs(capped.begin["expires_at"] - (time.time() + 60)) <= 5, capped.begin
    plain = await session(platform.server, auth(platform.bob))
    assert plain.begin["expires_at"] - time.time() > 3600  # the key alone: server default


@pytest.mark.slow
async def test_token_session_is_closed_at_its_cap(platform: Platform):
    token = mint(
        platform, platform.bob, expires_in_seconds=60, max_session_duration_seconds=60
    ).json()["token"]
    ws = await websockets.connect(f"{platform.server.ws}/v3/ws?sample_rate=16000&token={token}")
    outcome = Outcome()
    reader = asyncio.create_task(_read_all(ws, outcome))
    t0 = time.monotonic()
    while not reader.done() and time.monotonic() - t0 < 90:
        await asyncio.sleep(5)
        if not reader.done():
            try:
                await ws.send(json.dumps({"type": "KeepAlive"}))
            except ConnectionClosed:
                break
    await asyncio.wait_for(reader, 10)
    assert 59 <= time.monotonic() - t0 <= 70
    assert outcome.code == 3008, (outcome.code, outcome.reason)
    assert "Maximum session duration" in outcome.reason


def test_recordings_live_in_the_data_dir(platform: Platform, alice_session: Streamed):
    assert Path(platform.server.data_dir, "recordings", f"{alice_session.id}.wav").is_file()

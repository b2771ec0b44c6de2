"""The server's life around its sessions: a crash, a graceful stop, and refusing to start open.

- SIGKILL mid-session: the next server on the same data dir closes the session as "abnormal",
  keeps every turn written before the crash and repairs the recording's header.
- SIGTERM mid-turn: the client still gets the final turn and a Termination, the process exits 0
  within its grace period, and the session is stored as ended by "shutdown".
- A non-loopback address without any API key refuses to start (and says how to fix it), unless
  `--insecure-no-auth` is given.

Each test runs its own server processes on a fresh data dir.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from conftest import RunningServer, free_port, start_server
from speech import Speech, speech_or_skip, wer
from websockets.exceptions import ConnectionClosed

from streamscribe.store import Store

CHUNK = 3200  # 100 ms of 16 kHz pcm_s16le
SPEED = 4.0
GRACE_S = 20


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def without_trailing_silence(audio: np.ndarray, keep_s: float = 0.05) -> np.ndarray:
    """The audio up to just after its last loud sample: it ends mid-turn, not in a pause."""
    loud = np.flatnonzero(np.abs(audio) > 0.05 * np.abs(audio).max())
    return audio[: loud[-1] + int(keep_s * 16000)] if len(loud) else audio


class Client:
    """One v3 session: sends paced audio while a task collects everything the server says."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.messages: list[dict] = []
        self.sent_bytes = 0
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, server: RunningServer, headers: dict | None = None) -> Client:
        ws = await websockets.connect(
            f"{server.ws}/v3/ws?sample_rate=16000", additional_headers=headers or {}
        )
        client = cls(ws)
        await client.wait_for(lambda m: m.get("type") == "Begin", 10)
        return client

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.messages.append(json.loads(raw))
        except ConnectionClosed:
            pass

    @property
    def begin(self) -> dict:
        return self.messages[0]

    @property
    def finals(self) -> list[dict]:
        return [m for m in self.messages if m.get("type") == "Turn" and m["end_of_turn"]]

    @property
    def sent_seconds(self) -> float:
        return self.sent_bytes / 32000

    async def wait_for(self, predicate, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages:
                if predicate(m):
                    return m
            if self.reader.done():
                break
            await asyncio.sleep(0.02)
        raise AssertionError(f"not seen within {timeout} s: {self.messages[-3:]}")

    async def send(self, pcm: bytes, speed: float = SPEED) -> None:
        t0 = time.monotonic()
        for k, i in enumerate(range(0, len(pcm), CHUNK)):
            chunk = pcm[i : i + CHUNK]
            chunk += b"\0" * (CHUNK - len(chunk))
            await self.ws.send(chunk)
            self.sent_bytes += len(chunk)
            delay = t0 + (k + 1) * 0.1 / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def closed(self, timeout: float) -> tuple[int | None, str]:
        await asyncio.wait_for(self.reader, timeout)
        return self.ws.close_code, self.ws.close_reason


def stop(server: RunningServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(GRACE_S + 10)
        except subprocess.TimeoutExpired:
            server.process.kill()


@dataclass
class Crash:
    server: RunningServer  # the server started again on the crashed one's data dir
    session_id: str
    sent_s: float  # audio the client had sent when the server was killed
    final_orders: set[int]  # turns the client had received as final
    first: Speech


async def _crash(data_dir: Path) -> tuple[str, float, set[int], Speech]:
    first_utt, second_utt = speech_or_skip(2)
    server = start_server(data_dir)
    try:
        client = await Client.open(server)
        await client.send(pcm16(first_utt.audio))
        silence = b"\0" * CHUNK
        deadline = time.monotonic() + 30
        while not client.finals and time.monotonic() < deadline:  # pause until a turn ends
            await client.send(silence)
        assert client.finals, "no final turn before the crash"
        half = pcm16(second_utt.audio[: len(second_utt.audio) // 2])
        await client.send(half)  # mid-turn in the second utterance
        await asyncio.sleep(1.0)  # the server has received (and recorded) all of it
        server.process.send_signal(signal.SIGKILL)
        assert server.process.wait(10) == -signal.SIGKILL
        await asyncio.wait_for(client.reader, 10)
        orders = {m["turn_order"] for m in client.finals}
        return client.begin["id"], client.sent_seconds, orders, first_utt
    finally:
        stop(server)


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory):
    """A session of two utterances with a pause, its server killed (SIGKILL) mid-turn in the
    second one, and a new server started on the same data dir."""
    data_dir = tmp_path_factory.mktemp("crashed")
    session_id, sent_s, orders, first = asyncio.run(_crash(data_dir))
    assert (data_dir / "recordings" / f"{session_id}.wav").exists()
    again = start_server(data_dir)
    try:
        yield Crash(again, session_id, sent_s, orders, first)
    finally:
        stop(again)


def test_sigkill_mid_session_is_recovered_as_abnormal(crashed: Crash):
    http = crashed.server.http
    r = httpx.get(f"{http}/v1/sessions/{crashed.session_id}", timeout=10)
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["end_reason"] == "abnormal" and info["ended"] is not None
    assert {t["turn_order"] for t in info["turns"]} >= crashed.final_orders
    first_turn = min(info["turns"], key=lambda t: t["start_ms"])
    assert wer(crashed.first.text, first_turn["text"]) <= 0.4, first_turn["text"]
    assert all(t["words"] for t in info["turns"])
    assert info["audio_seconds"] * 1000 >= max(t["end_ms"] for t in info["turns"]) - 1
    text = httpx.get(f"{http}/v1/sessions/{crashed.session_id}/transcript.txt", timeout=10)
    assert wer(crashed.first.text, text.text.splitlines()[0]) <= 0.4


def test_sigkill_recording_is_repaired(crashed: Crash):
    url = f"{crashed.server.http}/v1/sessions/{crashed.session_id}/recording.wav"
    wav = httpx.get(url, timeout=10)
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(wav.content)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        seconds = w.getnframes() / w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert crashed.sent_s - 1.0 <= seconds <= crashed.sent_s + 0.05, (seconds, crashed.sent_s)
    assert np.abs(audio).max() > 1000  # the speech is there, not just a header


async def test_recovered_server_serves_new_sessions(crashed: Crash):
    fresh = await Client.open(crashed.server)
    await fresh.ws.send(json.dumps({"type": "Terminate"}))
    assert (await fresh.closed(20))[0] == 1000


def test_sigkill_session_audio_is_metered(crashed: Crash):
    info = httpx.get(f"{crashed.server.http}/v1/sessions/{crashed.session_id}", timeout=10).json()
    usage = httpx.get(f"{crashed.server.http}/v1/usage", timeout=10).json()
    assert usage["total_audio_seconds"] >= info["audio_seconds"] - 0.1, usage


async def test_sigterm_mid_turn_finishes_the_turn_then_exits_0(tmp_path: Path):
    utt = speech_or_skip(1)[0]
    server = start_server(tmp_path, env={"STREAMSCRIBE_SHUTDOWN_GRACE_SECONDS": str(GRACE_S)})
    try:
        client = await Client.open(server)
        session_id = client.begin["id"]
        await client.send(pcm16(without_trailing_silence(utt.audio)))  # the turn is still open
        assert not client.finals, "the turn ended before the stop: nothing mid-turn to test"
        t0 = time.monotonic()
        server.process.send_signal(signal.SIGTERM)  # and no Terminate from the client
        code, reason = await client.closed(GRACE_S + 10)
        assert code == 1000, (code, reason)
        assert client.messages[-1]["type"] == "Termination", client.messages[-3:]
        text = " ".join(m["transcript"] for m in client.finals)
        assert wer(utt.text, text) <= 0.4, text
        assert server.process.wait(GRACE_S + 10) == 0
        assert time.monotonic() - t0 <= GRACE_S + 5
    finally:
        stop(server)
    log = server.log.read_text()
    assert "Traceback" not in log, log[-3000:]

    store = await Store.open(None, tmp_path)  # the stopped server's database
    try:
        detail = await store.get_session(session_id)
    finally:
        await store.close()
    assert detail is not None and detail.info.end_reason == "shutdown", detail
    stored = " ".join(t.text for t in detail.turns)
    assert wer(utt.text, stored) <= 0.4, stored
    assert abs(detail.info.audio_seconds - client.sent_seconds) <= 0.3


async def test_sigterm_while_idle_exits_0_at_once(tmp_path: Path):
    server = start_server(tmp_path)
    t0 = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        code = server.process.wait(15)
    finally:
        stop(server)
    assert time.monotonic() - t0 < 10
    assert code == 0


def _serve(data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "streamscribe",
            "serve",
            "--port",
            str(free_port()),
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_non_loopback_without_keys_refuses_to_start(tmp_path: Path):
    done = _serve(tmp_path, "--host", "0.0.0.0")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert "streamscribe keys create" in output, output[-2000:]
    assert "--insecure-no-auth" in output


def test_refusal_to_start_is_one_clear_message(tmp_path: Path):
    done = _serve(tmp_path, "--host", "0.0.0.0")
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output[-2000:]


async def test_non_loopback_with_insecure_no_auth_starts_open(tmp_path: Path):
    server = start_server(tmp_path, "--host", "0.0.0.0", "--insecure-no-auth")
    try:
        client = await Client.open(server)  # no key: open mode, as asked
        await client.send(b"\0" * 32000)
        await client.ws.send(json.dumps({"type": "Terminate"}))
        assert (await client.closed(20))[0] == 1000
        # open mode reads back everything, usage of all keys included
        deadline = time.monotonic() + 10
        while True:
            usage = httpx.get(f"{server.http}/v1/usage", timeout=10).json()
            if usage["total_audio_seconds"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert usage["key_id"] is None
        assert [row["key_id"] for row in usage["usage"]] == [None]
        assert abs(usage["total_audio_seconds"] - 1.0) <= 0.05
        listed = httpx.get(f"{server.http}/v1/sessions", timeout=10).json()["sessions"]
        assert client.begin["id"] in {s["id"] for s in listed}
    finally:
        stop(server)
    assert "OPEN MODE" in server.log.read_text()


async def test_non_loopback_with_a_key_starts_and_requires_it(tmp_path: Path):
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamscribe",
            "keys",
            "create",
            "ops",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    server = start_server(tmp_path, "--host", "0.0.0.0")
    try:
        ws = await websockets.connect(f"{server.ws}/v3/ws?sample_rate=16000")
        first = json.loads(await ws.recv())
        assert first["type"] == "Error" and first["error_code"] == 1008
        client = await Client.open(server, {"Authorization": secret})
        await client.ws.send(json.dumps({"type": "Terminate"}))
        assert (await client.closed(20))[0] == 1000
    finally:
        stop(server)

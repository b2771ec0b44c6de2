"""Limits that hold before any work is done for a hostile request (issue 18).

One real server on loopback that requires keys (alice made with the CLI, bob with the admin
API), with a few limits lowered through their STREAMSCRIBE_* settings so each test is quick:
request heads (size, line, header count, deadline), uploads bounded by decoded duration and
sample rate, upload slots counted from the first body byte, credentials in percent-encoded
parameter names masked in the log, call ids scoped to their key, paging bounds, an upload
deleted while it is transcribed. Every loop is bounded and every test stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import wave

import httpx
import numpy as np
import pytest
import websockets
from conftest import RunningServer, start_server

pytestmark = pytest.mark.timeout(120)

ADMIN_KEY = "admin-secret-hostile"
HEAD_TIMEOUT_S = 1.5
MAX_UPLOAD_S = 60
STALL_S = 2.0
MAX_UPLOADS = 2


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamscribe", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


class Keys:
    def __init__(self, server: RunningServer, alice: str, bob: str) -> None:
        self.server = server
        self.alice = alice
        self.bob = bob


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("hostile-limits")
    made = cli("keys", "create", "alice", "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    env = {
        "STREAMSCRIBE_ADMIN_KEY": ADMIN_KEY,
        "STREAMSCRIBE_REQUEST_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT_S),
        "STREAMSCRIBE_MAX_UPLOAD_SECONDS": str(MAX_UPLOAD_S),
        "STREAMSCRIBE_UPLOAD_STALL_SECONDS": str(STALL_S),
        "STREAMSCRIBE_MAX_ACTIVE_UPLOADS": str(MAX_UPLOADS),
        "STREAMSCRIBE_PUBLIC_METRICS": "false",
        "STREAMSCRIBE_PUBLIC_DOCS": "false",
    }
    server = start_server(data, env=env)
    try:
        r = httpx.post(
            server.http + "/v1/admin/keys",
            json={"name": "bob"},
            headers={"Authorization": ADMIN_KEY},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        yield Keys(server, made.stdout.strip(), r.json()["key"])
    finally:
        server.process.terminate()
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()


# ------------------------------------------------------------------ raw HTTP


def raw_exchange(
    port: int, head: bytes, filler: bytes = b"", max_filler: int = 0
) -> tuple[bytes, int]:
    """Send `head`, then `filler` repeatedly (at most `max_filler` bytes) while the server
    reads, then the end of the head; return what the server answered and the bytes sent."""
    sent = 0
    reply = b""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # a small fixed send buffer: otherwise the kernel grows it (to tcp_wmem's maximum, 4 MB
        # on the CI machine) and `sent` measures this client's buffer, not what the server read
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(head)
            sent += len(head)
            while sent < max_filler:
                sock.sendall(filler)
                sent += len(filler)
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                reply += chunk
                if b"\r\n\r\n" in reply and len(reply) > 200:
                    break
    return reply, sent


def status(reply: bytes) -> int | None:
    try:
        return int(reply.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def test_a_huge_header_is_refused_431_before_it_is_read(keys):
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    reply, sent = raw_exchange(keys.server.port, head, b"a" * 65536, 8 * 1024 * 1024)
    assert status(reply) == 431, reply[:200]
    assert b"64" in reply or b"65536" in reply  # the answer names the limit
    assert sent < 4 * 1024 * 1024, f"the server read {sent} bytes of a refused head"


def test_too_many_header_fields_are_refused_431(keys):
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(150)
    )
    reply, _ = raw_exchange(keys.server.port, head)
    assert status(reply) == 431, reply[:200]
    assert b"100 header fields" in reply


def test_an_overlong_request_target_is_refused_414(keys):
    head = b"GET /healthz?x=" + b"a" * 40000 + b" HTTP/1.1\r\nHost: x"
    reply, _ = raw_exchange(keys.server.port, head)
    assert status(reply) == 414, reply[:200]


def test_a_real_handshake_with_big_cookies_still_passes(keys):
    # ~6 KB of cookies (websockets itself caps one header line at 8 KB)
    headers = {"Cookie": "; ".join(f"c{i}={'v' * 200}" for i in range(30))}
    headers.update({f"X-Extra-{i}": "y" * 40 for i in range(40)})
    r = httpx.get(keys.server.http + "/healthz", headers=headers, timeout=10)
    assert r.status_code == 200

    async def handshake() -> None:
        async with websockets.connect(
            f"{keys.server.ws}/v3/ws?sample_rate=16000",
            additional_headers={"Authorization": keys.alice, **headers},
            open_timeout=10,
        ) as ws:
            assert '"Begin"' in await asyncio.wait_for(ws.recv(), 10)

    asyncio.run(handshake())


def test_huge_heads_in_parallel_do_not_stall_handshakes(keys):
    """32 connections streaming endless headers: a real handshake still completes at once."""
    attackers = []
    try:
        for _ in range(32):
            sock = socket.create_connection(("127.0.0.1", keys.server.port), timeout=5)
            sock.setblocking(False)
            attackers.append(sock)
        filler = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 65536
        for sock in attackers:
            with contextlib.suppress(OSError):
                sock.send(filler)

        async def handshake() -> float:
            started = time.monotonic()
            async with websockets.connect(
                f"{keys.server.ws}/v3/ws?sample_rate=16000",
                additional_headers={"Authorization": keys.alice},
                open_timeout=10,
            ) as ws:
                await asyncio.wait_for(ws.recv(), 10)
            return time.monotonic() - started

        assert asyncio.run(handshake()) < 5
    finally:
        for sock in attackers:
            sock.close()


def test_a_slow_head_is_cut_off_at_the_deadline(keys):
    with socket.create_connection(("127.0.0.1", keys.server.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        sock.settimeout(HEAD_TIMEOUT_S + 5)
        assert sock.recv(100) == b""  # closed, nothing answered
        assert time.monotonic() - started < HEAD_TIMEOUT_S + 2


def test_the_next_head_of_a_kept_alive_connection_has_a_deadline_too(keys):
    with socket.create_connection(("127.0.0.1", keys.server.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        first = b""
        while b'"ok"}' not in first:  # the whole first answer (head and body)
            chunk = sock.recv(4096)
            assert chunk, first
            first += chunk
        assert status(first) == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # ...and never the rest
        started = time.monotonic()
        sock.settimeout(HEAD_TIMEOUT_S + 5)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(100) == b""
        assert time.monotonic() - started < HEAD_TIMEOUT_S + 2


# ------------------------------------------------------------------ uploads: decoded length


def wav_bytes(rate: int, seconds: float, width: int = 2, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(int(rate * seconds) * width * channels))
    return buffer.getvalue()


ONE_HZ = wav_bytes(1, 600, width=1)  # 644 bytes that decode to 10 minutes at 16 kHz
TOO_LONG = wav_bytes(8000, MAX_UPLOAD_S + 10)  # 1.1 MB, past the server's decoded-length limit


def upload(keys: Keys, data: bytes, name: str = "a.wav") -> httpx.Response:
    return httpx.post(
        keys.server.http + "/v1/transcripts",
        files={"file": (name, data, "audio/wav")},
        headers={"Authorization": keys.alice},
        timeout=30,
    )


def listen(keys: Keys, data: bytes, query: str = "") -> httpx.Response:
    return httpx.post(
        f"{keys.server.http}/v1/listen?{query}",
        content=data,
        headers={"Authorization": f"Token {keys.alice}", "Content-Type": "audio/wav"},
        timeout=30,
    )


def test_a_wav_declaring_1_hz_is_refused_before_decoding(keys):
    r = upload(keys, ONE_HZ)
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "1 Hz" in detail and "STREAMSCRIBE_UPLOAD_MIN_SAMPLE_RATE" in detail

    r = listen(keys, ONE_HZ)
    assert r.status_code == 400, r.text
    assert "STREAMSCRIBE_UPLOAD_MIN_SAMPLE_RATE" in r.json()["err_msg"]

    r = httpx.post(
        keys.server.http + "/v1/audio/transcriptions",
        files={"file": ("a.wav", ONE_HZ, "audio/wav")},
        data={"model": "whisper-1"},
        headers={"Authorization": f"Bearer {keys.alice}"},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    assert "sample rate" in r.json()["error"]["message"]


def test_an_upload_longer_than_the_limit_is_refused_413_naming_it(keys):
    r = upload(keys, TOO_LONG)
    assert r.status_code == 413, r.text
    assert "STREAMSCRIBE_MAX_UPLOAD_SECONDS" in r.json()["detail"]

    r = listen(keys, TOO_LONG)
    assert r.status_code == 413, r.text
    assert "STREAMSCRIBE_MAX_UPLOAD_SECONDS" in r.json()["err_msg"]

    raw = bytes(8000 * 2 * (MAX_UPLOAD_S + 10))  # headerless: the length is the size
    r = listen(keys, raw, "encoding=linear16&sample_rate=8000")
    assert r.status_code == 413, r.text

    stereo = wav_bytes(8000, MAX_UPLOAD_S * 0.75, channels=2)  # 45 s, 90 s over both channels
    r = listen(keys, stereo, "multichannel=true")
    assert r.status_code == 413, r.text
    assert listen(keys, stereo).status_code == 200  # mixed down it is within the limit


# ------------------------------------------------------------------ uploads: slots


def slow_upload(port: int, secret: str) -> socket.socket:
    """An upload that sends its head and the start of its body, then nothing more."""
    boundary = b"slowslowslow"
    start = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n" + wav_bytes(16000, 1)[:1000]
    )
    head = (
        b"POST /v1/transcripts HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: " + secret.encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
        b"Content-Length: 10000000\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head + start)
    return sock


def test_slow_bodies_take_upload_slots_from_their_first_byte(keys):
    port = keys.server.port
    slow = [slow_upload(port, keys.alice) for _ in range(MAX_UPLOADS)]
    try:
        time.sleep(0.3)
        started = time.monotonic()
        r = upload(keys, wav_bytes(16000, 1))
        assert r.status_code == 503, r.text
        assert "STREAMSCRIBE_MAX_ACTIVE_UPLOADS" in r.json()["detail"]
        assert time.monotonic() - started < STALL_S  # refused at once, not after a wait
        r = listen(keys, wav_bytes(16000, 1))  # Deepgram's pre-recorded route shares the slots
        assert r.status_code == 429, r.text
        for sock in slow:  # a body that stalls is refused and gives its slot back
            sock.settimeout(STALL_S + 5)
            assert status(sock.recv(4096)) == 408
    finally:
        for sock in slow:
            sock.close()
    r = upload(keys, wav_bytes(16000, 1))
    assert r.status_code == 202, r.text
    wait_job(keys, r.json()["id"], ("done",))


def wait_job(keys: Keys, job_id: str, states: tuple[str, ...], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = httpx.get(
            f"{keys.server.http}/v1/transcripts/{job_id}",
            headers={"Authorization": keys.alice},
            timeout=10,
        ).json()
        if job.get("status") in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job never reached {states}: {job}")


# ------------------------------------------------------------------ an upload deleted mid-job


def test_deleting_an_upload_mid_transcription_stops_its_job(keys):
    from speech import speech_or_skip

    speech = speech_or_skip(1)[0]
    reps = max(1, int(40 / (len(speech.audio) / 16000)))
    audio = np.tile(speech.audio, reps)[: 16000 * (MAX_UPLOAD_S - 5)]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    log_start = len(keys.server.log.read_bytes())
    r = upload(keys, buffer.getvalue(), "long.wav")
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    wait_job(keys, job_id, ("transcribing",))
    gone = httpx.delete(
        f"{keys.server.http}/v1/sessions/{job_id}",
        headers={"Authorization": keys.alice},
        timeout=30,
    )
    assert gone.status_code == 204, gone.text
    job = wait_job(keys, job_id, ("deleted", "error", "done"), timeout=10)
    assert job["status"] == "deleted", job
    assert "deleted" in job["error"]
    session = httpx.get(
        f"{keys.server.http}/v1/sessions/{job_id}",
        headers={"Authorization": keys.alice},
        timeout=10,
    )
    assert session.status_code == 404
    time.sleep(0.5)
    log = keys.server.log.read_bytes()[log_start:].decode()
    assert "Traceback" not in log and "failed" not in log, log[-3000:]


# ------------------------------------------------------------------ credentials in URLs


def test_percent_encoded_credential_names_are_masked_in_the_log(keys):
    token = httpx.get(
        keys.server.http + "/v3/token?expires_in_seconds=60",
        headers={"Authorization": keys.alice},
        timeout=10,
    ).json()["token"]

    async def sessions() -> None:
        async with websockets.connect(
            f"{keys.server.ws}/v3/ws?sample_rate=16000&%74oken={token}", open_timeout=10
        ) as ws:
            assert '"Begin"' in await asyncio.wait_for(ws.recv(), 10)  # read as `token`
        async with websockets.connect(
            f"{keys.server.ws}/v1/audio/transcriptions/streaming?Author%69zation={keys.bob}",
            open_timeout=10,
        ) as ws:
            await ws.send(b"\x00" * 3200)

    asyncio.run(sessions())
    odd = "not-a-key-but-secret-4471"
    httpx.get(f"{keys.server.http}/v1/sessions?%2574oken={odd}&k%65y={odd}x", timeout=10)
    time.sleep(0.5)
    log = keys.server.log.read_text()
    assert "%74oken=***" in log and "Author%69zation=***" in log  # the requests were logged
    for secret in (token, keys.bob, odd):
        assert secret not in log


# ------------------------------------------------------------------ call ids per key


def test_call_ids_belong_to_their_key(keys):
    def create(secret: str) -> httpx.Response:
        body = {
            "callConnectionId": "call-shared-id",
            "transcriptionOptions": {
                "transportType": "websocket",
                "transportUrl": "ws://127.0.0.1:9/results",
                "locale": "en-US",
                "startTranscription": False,
            },
        }
        return httpx.post(
            keys.server.http + "/v1/calls",
            json=body,
            headers={"Authorization": secret},
            timeout=10,
        )

    alice = create(keys.alice)
    assert alice.status_code == 201, alice.text
    bob = create(keys.bob)  # the same id under another key: bob's own job, no 409
    assert bob.status_code == 201, bob.text
    assert bob.json()["subscriptionId"] != alice.json()["subscriptionId"]
    again = create(keys.bob)
    assert again.status_code == 409 and alice.json()["subscriptionId"] not in again.text

    def get(secret: str) -> dict:
        return httpx.get(
            keys.server.http + "/v1/calls/call-shared-id",
            headers={"Authorization": secret},
            timeout=10,
        ).json()

    assert get(keys.alice)["subscriptionId"] == alice.json()["subscriptionId"]
    assert get(keys.bob)["subscriptionId"] == bob.json()["subscriptionId"]
    listed = httpx.get(
        keys.server.http + "/v1/calls", headers={"Authorization": keys.bob}, timeout=10
    ).json()["calls"]
    assert [c["subscriptionId"] for c in listed] == [bob.json()["subscriptionId"]]


# ------------------------------------------------------------------ paging and integer bounds


@pytest.mark.parametrize(
    "query",
    ["offset=9223372036854775808", "offset=9223372036854775807", "limit=100000000000000000000"],
)
def test_paging_past_the_bounds_is_a_4xx(keys, query):
    r = httpx.get(
        f"{keys.server.http}/v1/sessions?{query}",
        headers={"Authorization": keys.alice},
        timeout=10,
    )
    assert r.status_code == 422, r.text
    assert "less than or equal" in r.text  # names the bound


def test_admin_key_limits_past_the_bounds_are_a_4xx(keys):
    for body in (
        {"name": "huge", "max_streams": 2**63},
        {"name": "huge", "max_session_seconds": 2**63},
        {"name": "\x1b[2Jevil"},
    ):
        r = httpx.post(
            keys.server.http + "/v1/admin/keys",
            json=body,
            headers={"Authorization": ADMIN_KEY},
            timeout=10,
        )
        assert r.status_code == 422, (body, r.text)


# ------------------------------------------------------------------ endpoints without a key


def test_metrics_and_docs_can_be_closed(keys):
    base = keys.server.http
    for path in ("/metrics", "/v1/metrics"):
        assert httpx.get(base + path, timeout=10).status_code == 401
        for secret in (keys.alice, ADMIN_KEY):
            r = httpx.get(base + path, headers={"Authorization": f"Bearer {secret}"}, timeout=10)
            assert r.status_code == 200, (path, r.text)
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(base + path, timeout=10).status_code == 404
    for path in (
        "/healthz",
        "/readyz",
        "/v1/info",
        "/",
    ):  # what stays open, for probes and the page
        assert httpx.get(base + path, timeout=10).status_code == 200

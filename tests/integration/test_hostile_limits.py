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
import os
import socket
import subprocess
import sys
import time

import httpx
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
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(10)
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
        first = sock.recv(4096)
        assert status(first) == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # ...and never the rest
        started = time.monotonic()
        sock.settimeout(HEAD_TIMEOUT_S + 5)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(100) == b""
        assert time.monotonic() - started < HEAD_TIMEOUT_S + 2

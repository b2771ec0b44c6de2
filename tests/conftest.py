"""Shared fixtures: a real streamscribe server on a loopback port, started once per test run."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(
        self,
        port: int,
        data_dir: Path,
        process: subprocess.Popen,
        log: Path,
        ca: Path | None = None,
    ) -> None:
        self.port = port
        self.data_dir = data_dir
        self.process = process
        self.log = log
        self.ca = ca  # the CA certificate clients trust when the server serves TLS

    @property
    def http(self) -> str:
        return f"{'https' if self.ca else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"{'wss' if self.ca else 'ws'}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """httpx's `verify=` for this server: its CA when it serves TLS."""
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else True

    def metrics(self) -> dict:
        return httpx.get(self.http + "/v1/metrics", timeout=5, verify=self.verify).json()


def start_server(
    data_dir: Path, *extra: str, env: dict | None = None, ca: Path | None = None
) -> RunningServer:
    """Serve on a free loopback port; `--tls self-signed` in `extra` (or `ca`, the CA of the
    certificate given with --ssl-certfile) makes it an HTTPS/WSS server."""
    if "--tls" in extra and ca is None:
        ca = data_dir / "tls" / "ca.pem"
    port = free_port()
    log = data_dir / "server.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamscribe",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    running = RunningServer(port, data_dir, process, log, ca)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()[-3000:]}")
        try:
            if ca is None or ca.exists():  # a self-signed CA appears once the server made it
                ready = httpx.get(running.http + "/readyz", timeout=1, verify=running.verify)
                if ready.status_code == 200:
                    return running
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"server did not become ready:\n{log.read_text()[-3000:]}")


def stop_server(srv: RunningServer) -> None:
    srv.process.terminate()
    try:
        srv.process.wait(10)
    except subprocess.TimeoutExpired:
        srv.process.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = start_server(tmp_path_factory.mktemp("server-data"))
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server on https:// and wss:// with `--tls self-signed`; `.ca` is the CA to trust."""
    srv = start_server(tmp_path_factory.mktemp("tls-server-data"), "--tls", "self-signed")
    yield srv
    stop_server(srv)

"""The server under test, seen from outside: start it, find it, and watch what it costs.

Why this exists: the benchmark must measure the real `streamscribe serve` process (its CPU time
and memory, its own lag metric), not an in-process app, so it starts the server as a subprocess
(or finds the one behind `--url`) and polls it with psutil and GET /v1/metrics. Nothing here knows
about sessions or turns; that is `bench_session.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

READY_TIMEOUT_S = 180.0
POLL_S = 0.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_base(ws_url: str) -> str:
    """ws://host:port[/...] -> http://host:port (wss -> https)."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}"


class ServerProcess:
    """`python -m streamscribe serve` on a free loopback port, logging to a file."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = env  # extra environment (STREAMSCRIBE_* settings) for the server
        self.port = port or free_port()
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "streamscribe", "serve",
            "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env else None,
            )

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Block until GET /readyz answers 200; return the seconds it took."""
        t0 = time.monotonic()
        url = f"{http_base(self.url)}/readyz"
        while time.monotonic() - t0 < timeout_s:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return time.monotonic() - t0
            time.sleep(0.3)
        raise RuntimeError(f"server not ready after {timeout_s:.0f} s; log {self.log_path}")

    def stop(self) -> None:
        """Ctrl-C first (graceful uvicorn shutdown), then terminate, then kill."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGINT, 15), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait_s)
                return

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def log_problems(self, limit: int = 8) -> tuple[int, list[str]]:
        """Count WARNING/ERROR/Traceback lines in the server log; return a few of them."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0, []
        marks = ("WARNING", "ERROR", "Traceback")
        bad = [ln for ln in text.splitlines() if any(k in ln for k in marks)]
        return len(bad), bad[:limit]


def find_listening_pid(ws_url: str) -> int | None:
    """The pid listening on the URL's port (for `--url` runs), if this user can see it."""
    port = urlsplit(ws_url).port
    if port is None:
        return None
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    return None


def _family(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of the process and its children (live and reaped)."""
    if pid is None:
        return None
    try:
        total = 0.0
        for i, p in enumerate(_family(pid)):
            t = p.cpu_times()
            total += t.user + t.system
            if i == 0:
                total += t.children_user + t.children_system
        return total
    except psutil.Error:
        return None


def rss_bytes(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return sum(p.memory_info().rss for p in _family(pid))
    except psutil.Error:
        return None


@dataclass
class Sample:
    t: float
    rss: int | None
    lag_ms: int | None  # session_lag_ms_max at that moment
    cpu_s: float | None
    backlog_ms: int | None = None  # session_backlog_ms_max (uncovered audio, pauses included)
    behind: dict | None = None  # session_most_behind: state, decode waited on, cadence


@dataclass
class ResourceMonitor:
    """Polls RSS, CPU time and /metrics every 0.5 s while a run goes on."""

    pid: int | None
    base_url: str
    samples: list[Sample] = field(default_factory=list)
    last_metrics: dict = field(default_factory=dict)
    _task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.poll_once()

    async def _run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(POLL_S)

    async def poll_once(self) -> None:
        lag = backlog = behind = None
        with contextlib.suppress(httpx.HTTPError, ValueError):
            async with httpx.AsyncClient(timeout=2) as client:
                r = await client.get(f"{self.base_url}/v1/metrics")
                if r.status_code == 200:
                    self.last_metrics = r.json()
                    lag = self.last_metrics.get("session_lag_ms_max")
                    backlog = self.last_metrics.get("session_backlog_ms_max")
                    behind = self.last_metrics.get("session_most_behind")
        pid = self.pid
        self.samples.append(
            Sample(time.monotonic(), rss_bytes(pid), lag, cpu_seconds(pid), backlog, behind)
        )

    def window(self, since: float, until: float = float("inf")) -> list[Sample]:
        return [s for s in self.samples if since <= s.t <= until]

    def peak_rss_mb(self, since: float = 0.0, until: float = float("inf")) -> float | None:
        values = [s.rss for s in self.window(since, until) if s.rss is not None]
        return max(values) / 2**20 if values else None

    def max_lag_ms(self, since: float = 0.0, until: float = float("inf")) -> int | None:
        values = [s.lag_ms for s in self.window(since, until) if s.lag_ms is not None]
        return max(values) if values else None

    def lag_profile(
        self, since: float = 0.0, until: float = float("inf"), over_ms: int = 3000
    ) -> dict | None:
        """The polled lag (the most-behind session at each poll): P50, P95, and the share of
        polls with a session more than `over_ms` behind (how often, not only how far)."""
        polled = [s for s in self.window(since, until) if s.lag_ms is not None]
        if not polled:
            return None
        values = sorted(s.lag_ms for s in polled)
        peak = max(polled, key=lambda s: s.lag_ms)
        p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
        # what the most-behind session waited on in the polls at or over P95 (state/decode)
        causes: dict[str, int] = {}
        for s in polled:
            if s.lag_ms >= p95 and s.behind:
                cause = f"{s.behind.get('state')}/{s.behind.get('in_flight') or 'no decode'}"
                causes[cause] = causes.get(cause, 0) + 1
        return {
            "peak": peak.behind,
            "causes_p95": causes,
            "peak_at_s": round(peak.t - (since or polled[0].t), 1),
            "p50": values[len(values) // 2],
            "p95": p95,
            "over_ms": over_ms,
            "share_over": round(sum(v > over_ms for v in values) / len(values), 4),
            "polls": len(values),
        }

    def max_backlog_ms(self, since: float = 0.0, until: float = float("inf")) -> int | None:
        values = [s.backlog_ms for s in self.window(since, until) if s.backlog_ms is not None]
        return max(values) if values else None


def machine_info() -> dict:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }

"""One server that requires API keys, shared by the dialect tests that check authentication.

Started on first use and stopped when the test run ends, so the v2 and Fireworks modules pay
for one extra model load between them, not one each.
"""

from __future__ import annotations

import atexit
import subprocess
import sys
from pathlib import Path

from conftest import RunningServer, start_server

_RUNNING: dict[str, object] = {}


def keyed_server(data_dir: Path) -> tuple[RunningServer, str]:
    """The shared keyed server and its key (made with `streamscribe keys create`)."""
    if "server" not in _RUNNING:
        data_dir.mkdir(parents=True, exist_ok=True)
        made = subprocess.run(
            [sys.executable, "-m", "streamscribe", "keys", "create", "dialects"]
            + ["--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if made.returncode != 0:
            raise RuntimeError(made.stderr)
        server = start_server(data_dir)
        _RUNNING.update(server=server, key=made.stdout.strip())
        atexit.register(_stop, server)
    return _RUNNING["server"], _RUNNING["key"]  # type: ignore[return-value]


def _stop(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(30)
    except subprocess.TimeoutExpired:
        server.process.kill()

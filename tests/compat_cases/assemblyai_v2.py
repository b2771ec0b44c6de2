"""Matrix row: AssemblyAI v2 realtime, driven by the official SDK 0.64.2 `RealtimeTranscriber`.

The SDK runs in a subprocess with 0.64.2 first on the path (tests/drivers/aai_v2_realtime.py):
the venv's own `assemblyai` is 1.x, which no longer has the v2 class.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from compat_cases import BadOutcome, Outcome

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / ".venv" / "sdk" / "assemblyai-0.64.2"
DRIVER = ROOT / "tests" / "drivers" / "aai_v2_realtime.py"
MESSAGES = {
    "SessionBegins": "SessionBegins",
    "RealtimePartialTranscript": "PartialTranscript",
    "RealtimeFinalTranscript": "FinalTranscript",
    "SessionInformation": "SessionInformation",
}


def drive(server, **cfg: object) -> list[dict]:
    if not SDK.exists():
        import pytest

        pytest.skip("the AssemblyAI 0.64.2 SDK is not installed (run make install)")
    cfg = {"base_url": server.ws, "api_key": "k", **cfg}
    result = subprocess.run(
        [sys.executable, str(DRIVER), json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(SDK)},
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


class V2Case:
    name = "assemblyai-v2"
    first = "SessionBegins"
    last = "SessionInformation"  # the SDK reads SessionTerminated without a callback
    clean_close = 1000
    bad_code = 4033

    def stream(self, server, speech) -> Outcome:
        with tempfile.TemporaryDirectory() as folder:
            pcm = Path(folder) / "speech.pcm"
            pcm.write_bytes(speech.pcm16() + bytes(16000))
            events = drive(server, pcm=str(pcm), speed=3.0, session_info=True)
        errors = [e for e in events if e["event"] == "error"]
        return Outcome(
            transcript=" ".join(
                e["text"] for e in events if e["event"] == "RealtimeFinalTranscript"
            ),
            messages=[MESSAGES[e["event"]] for e in events if e["event"] in MESSAGES],
            close_code=1000 if not errors and any(e["event"] == "close" for e in events) else None,
        )

    def bad_input(self, server) -> BadOutcome:
        events = drive(server, frames=[3 * 32000], wait_s=10)  # 3 s in one frame: too long
        errors = [e for e in events if e["event"] == "error"]
        coded = [e for e in errors if e["code"]]
        return BadOutcome(
            coded[-1]["code"] if coded else 0, " / ".join(e["message"] for e in errors)
        )


CASE = V2Case()

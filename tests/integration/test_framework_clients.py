"""Voice-agent frameworks' own STT plugins against the real server, driven as the frameworks
drive them: Pipecat's `AssemblyAISTTService` and `DeepgramSTTService`, LiveKit Agents'
`assemblyai`, `deepgram` and `openai` (Realtime) plugins, each with its default options, real
speech in 20 ms frames at real time, then the framework's own end of stream (Pipecat's
`EndFrame`, LiveKit's `end_input()`).

The frameworks pin packages our venv cannot share (protobuf, soxr), so they live in their own venv,
`.venv/clients` (`make install` builds it from `tests/clients-requirements.txt`), and run in a
subprocess (`tests/drivers/frameworks.py`) that prints the client's own events as JSON lines.
The cases are the rows of tests/works_with.py, which writes README's Works with table from them.
Each test checks: the events in order (an interim before the first final: every plugin asks for
interims by default), no client-side error (events, exceptions, or errors the framework only
logs), the transcript against the reference, and a clean close (the driver ends on its own; the
server's session ended `terminated`, or, for OpenAI Realtime, whose only end is closing the
socket, by the client closing it).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import RunningServer
from speech import Speech, speech_or_skip, wer
from works_with import params

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "clients" / "bin" / "python"
DRIVER = ROOT / "tests" / "drivers" / "frameworks.py"

pytestmark = [
    pytest.mark.clients,
    pytest.mark.skipif(
        not PYTHON.exists(), reason="the framework clients' venv is missing (run make install)"
    ),
]

# client -> (the server's protocol name, how a clean session of it ends on the server): OpenAI
# Realtime has no end-of-stream message, a client ends it by closing the socket
CLIENTS = {
    "pipecat-assemblyai": ("assemblyai-v3", "terminated"),
    "pipecat-deepgram": ("deepgram", "terminated"),
    "livekit-assemblyai": ("assemblyai-v3", "terminated"),
    "livekit-deepgram": ("deepgram", "terminated"),
    "livekit-openai": ("openai-realtime", "client_gone"),
}
MAX_WER = 0.35


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[Speech, Path]:
    utterance = speech_or_skip(1)[0]
    path = tmp_path_factory.mktemp("frameworks") / "speech.pcm"
    # the speaker stops, then hangs up 2.5 s later: Pipecat's Deepgram service sends CloseStream
    # and drops the socket at once, so only turns that silence has ended reach it (as with the
    # cloud, whose endpointing closes a turn after 10 ms of silence)
    path.write_bytes(utterance.pcm16() + bytes(80000))
    return utterance, path


def drive(server: RunningServer, client: str, pcm: Path) -> list[dict]:
    cfg = {"client": client, "ws": server.ws, "pcm": str(pcm)}
    result = subprocess.run(
        [str(PYTHON), str(DRIVER), json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=ROOT,
    )
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0, (events[-5:], result.stderr[-3000:])
    return events


def test_every_row_has_a_driver():
    assert {row.key for row, _ in (p.values for p in params("test_framework_clients"))} == set(
        CLIENTS
    )


@pytest.mark.parametrize(("row", "case"), params("test_framework_clients"))
def test_framework_plugin_streams_speech_and_closes_cleanly(server, speech, row, case):
    """One row of README's Works with table (tests/works_with.py)."""
    utterance, pcm = speech
    client = row.key
    protocol, end_reason = CLIENTS[client]
    events = drive(server, client, pcm)
    kinds = [e["event"] for e in events]
    assert not [e for e in events if e["event"] in ("error", "crash")], events
    assert kinds[-2:] == ["closed", "done"], kinds
    finals = [e["text"] for e in events if e["event"] == "final" and e["text"].strip()]
    assert finals, kinds
    assert kinds.index("interim") < kinds.index("final"), kinds  # every plugin asks for them
    transcript = " ".join(finals)
    assert wer(utterance.text, transcript) <= MAX_WER, (utterance.text, transcript)
    latest = httpx.get(f"{server.http}/v1/sessions?limit=1", timeout=5).json()["sessions"][0]
    assert latest["protocol"] == protocol, latest
    assert latest["end_reason"] == end_reason, latest

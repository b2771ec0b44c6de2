"""The official JavaScript SDKs under Node, against a real server over https/wss.

Each case runs one driver in tests/node (sdk_assemblyai.mjs, sdk_deepgram.mjs, sdk_openai.mjs)
with real speech, the SDK used as its users use it with nothing but the host changed, and
NODE_EXTRA_CA_CERTS naming the CA of the server's `--tls self-signed` certificate. Each checks the
client's own events in order, that neither the SDK nor the driver saw an error, the transcript
against the reference, and a clean close. The cases come from the rows of tests/works_with.py
(which writes README's "Works with" table), known failures included as strict xfails.

Skips only when `node` is absent; installs tests/node with `npm ci` if .ci/run has not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from speech import RATE, Speech, joined, speech_or_skip, wer
from works_with import params

from streamscribe.audio.resample import resample

pytestmark = pytest.mark.clients

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
DRIVERS = {
    "assemblyai-js": "sdk_assemblyai.mjs",
    "deepgram-js": "sdk_deepgram.mjs",
    "openai-js": "sdk_openai.mjs",
}
MAX_WER = 0.35  # as the dialect matrix (test_compat_matrix.py): tiny.en on real speech
CLEAN = (1000, 1005)  # 1005: the SDK's own close() crossed the server's 1000 (no status echoed)


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JavaScript SDK matrix needs Node.js 18 or later")
    packages = [NODE_DIR / "node_modules" / p for p in ("assemblyai", "@deepgram/sdk", "openai")]
    if not all(p.exists() for p in packages):
        npm = shutil.which("npm")
        assert npm, "node is here but npm is not: install npm, or run `npm ci --prefix tests/node`"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            check=True,
            timeout=300,
        )
    return node


@pytest.fixture(scope="module")
def node() -> str:
    return node_or_skip()


@pytest.fixture(scope="module")
def speech() -> Speech:
    spoken = joined(speech_or_skip(2), gap_s=1.6)
    # whole 100 ms frames: the drivers send 100 ms chunks, as the SDKs' examples do
    pad = np.zeros((-len(spoken.audio)) % (RATE // 10), dtype=np.float32)
    return Speech(np.concatenate([spoken.audio, pad]), spoken.text, spoken.source)


@pytest.fixture(scope="module")
def audio_files(speech, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("js-audio")
    pcm16k = speech.pcm16()
    pcm24k = (np.clip(resample(speech.audio, RATE, 24000), -1, 1) * 32767).astype("<i2")
    (folder / "speech16k.pcm").write_bytes(pcm16k)
    (folder / "speech24k.pcm").write_bytes(pcm24k.tobytes())
    with wave.open(str(folder / "speech.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm16k)
    return {
        "pcm16k": str(folder / "speech16k.pcm"),
        "pcm24k": str(folder / "speech24k.pcm"),
        "wav": str(folder / "speech.wav"),
    }


@pytest.fixture(scope="module")
def runs() -> dict:
    return {}


def run_driver(node: str, key: str, run: str, server, files: dict) -> dict:
    config = {"case": run, "http": server.http, "ws": server.ws, **files}
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(server.ca)}
    done = subprocess.run(
        [node, DRIVERS[key], json.dumps(config)],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"result"')]
    assert lines, f"{key} {run}: no result (exit {done.returncode}):\n{done.stderr[-3000:]}"
    result = json.loads(lines[-1])["result"]
    result["stderr"] = done.stderr
    return result


def outcome(node, row, run, tls_server, audio_files, runs) -> dict:
    """The driver's result for `run` of `row`, run once per module."""
    if (row.key, run) not in runs:
        runs[(row.key, run)] = run_driver(node, row.key, run, tls_server, audio_files)
    return runs[(row.key, run)]


@pytest.mark.parametrize(("row", "case"), params("test_js_sdks"))
def test_js_sdk(row, case, node, tls_server, audio_files, speech, runs):
    run, _, check = case.partition("/")
    result = outcome(node, row, run, tls_server, audio_files, runs)
    assert result["errors"] == [], (result["errors"], result["stderr"][-2000:])
    CHECKS[(row.key, check or run)](result, speech)


# ---------------------------------------------------------------------------- checks per case


def assert_matches(reference: str, transcript: str) -> None:
    assert transcript.strip(), "empty transcript"
    assert wer(reference, transcript) <= MAX_WER, (reference, transcript)


def check_aai_v3(result: dict, speech: Speech) -> None:
    events = result["events"]
    opening = ["token", "open:Begin"] if events[0] == "token" else ["open:Begin"]
    assert events[: len(opening)] == opening, events
    assert events[-1] == "closed", events  # close() returned, nothing arrived after it
    body = events[len(opening) : -1]
    assert set(body) <= {"turn", "turn:end", "turn:formatted"}, events
    assert body.count("turn:formatted") >= 1, events
    # every ended turn is sent again formatted, right after it
    ends = [i for i, e in enumerate(body) if e == "turn:end"]
    assert all(body[i + 1] == "turn:formatted" for i in ends), events
    assert body.count("turn:formatted") == len(ends), events
    wire = result["extra"]["wire"]
    assert wire[-1] == "Termination" and wire.count("Termination") == 1, wire
    assert result["close"] and result["close"]["code"] in CLEAN, result["close"]
    assert_matches(speech.text, result["transcript"])


def check_aai_v2(result: dict, speech: Speech) -> None:
    events = result["events"]
    opening = ["token", "open"] if events[0] == "token" else ["open"]
    assert events[: len(opening)] == opening, events
    assert events[-2:] == ["session_information", "closed"], events
    assert set(events[len(opening) : -2]) <= {"partial", "final"} and "final" in events, events
    wire = result["extra"]["wire"]
    assert wire[-2:] == ["SessionInformation", "SessionTerminated"], wire
    assert result["close"] and result["close"]["code"] in CLEAN, result["close"]
    assert_matches(speech.text, result["transcript"])


def check_dg_live(result: dict, speech: Speech) -> None:
    events = result["events"]
    assert events[0] == "open", events
    assert events[-2:] == ["Metadata", "close"], events
    body = events[1:-2]
    assert set(body) <= {
        "Results",
        "Results:final",
        "Results:speech_final",
        "SpeechStarted",
        "UtteranceEnd",
    }, events
    assert "Results:speech_final" in body, events
    assert body.index("SpeechStarted") < body.index("Results:speech_final"), events
    assert result["close"]["code"] == 1000, result["close"]
    assert_matches(speech.text, result["transcript"])


def check_dg_prerecorded(result: dict, speech: Speech) -> None:
    assert result["events"] == ["response"]
    body = result["body"]
    assert body["metadata"]["request_id"], body["metadata"]
    assert body["metadata"]["duration"] == pytest.approx(speech.seconds, abs=0.1)
    alternative = body["results"]["channels"][0]["alternatives"][0]
    assert alternative["words"] and all("punctuated_word" in w for w in alternative["words"])
    assert body["results"]["utterances"], "utterances=true gives utterances"
    assert_matches(speech.text, result["transcript"])


def _cues(body: str) -> str:
    """The text of SRT/VTT cues (numbers, timings and the header left out)."""
    lines = []
    for line in body.splitlines():
        line = line.strip()
        if not line or line == "WEBVTT" or line.isdigit() or "-->" in line:
            continue
        lines.append(line)
    return " ".join(lines)


def check_oai_batch(fmt: str):
    def check(result: dict, speech: Speech) -> None:
        assert result["events"] == ["response"]
        body = result["body"]
        if fmt == "json":
            assert isinstance(body, dict) and set(body) >= {"text"}, body
            text = body["text"]
        elif fmt == "text":
            assert isinstance(body, str), body
            text = body
        elif fmt in ("srt", "vtt"):
            assert isinstance(body, str), body
            timing = r"\d\d:\d\d:\d\d,\d{3} --> " if fmt == "srt" else r"\d\d:\d\d:\d\d\.\d{3} --> "
            assert re.search(timing, body), body
            if fmt == "vtt":
                assert body.startswith("WEBVTT"), body
            else:
                assert body.lstrip().startswith("1\n"), body
            text = _cues(body)
        else:  # verbose_json with word and segment timestamps
            assert body["duration"] == pytest.approx(speech.seconds, abs=0.1), body["duration"]
            assert body["segments"] and body["words"], body
            starts = [w["start"] for w in body["words"]]
            assert starts == sorted(starts), starts
            text = body["text"]
        assert_matches(speech.text, text)

    return check


def check_oai_stream(result: dict, speech: Speech) -> None:
    events = result["events"]
    assert events[-1] == "transcript.text.done" and events.count("transcript.text.done") == 1
    assert set(events[:-1]) == {"transcript.text.delta"}, events
    assert result["extra"]["deltas"].strip() == result["transcript"].strip()
    assert_matches(speech.text, result["transcript"])


def check_oai_realtime(result: dict, speech: Speech) -> None:
    events = result["events"]
    assert events[:2] == ["session.created", "session.updated"], events
    completed = "conversation.item.input_audio_transcription.completed"
    assert events[-1] == completed, events
    # every item is committed before its transcript completes
    assert events.index("input_audio_buffer.committed") < events.index(completed), events
    assert events.count(completed) == events.count("input_audio_buffer.committed"), events
    assert result["close"]["code"] == 1000, result["close"]
    assert_matches(speech.text, result["transcript"])


def check_oai_realtime_deltas(result: dict, speech: Speech) -> None:
    items = result["extra"]["items"]
    assert items
    for item in items.values():
        assert item["deltas"] == item["transcript"], item


CHECKS = {
    ("assemblyai-js", "v3"): check_aai_v3,
    ("assemblyai-js", "v3-token"): check_aai_v3,
    ("assemblyai-js", "v2"): check_aai_v2,
    ("assemblyai-js", "v2-token"): check_aai_v2,
    ("deepgram-js", "live"): check_dg_live,
    ("deepgram-js", "prerecorded"): check_dg_prerecorded,
    **{
        ("openai-js", f"batch:{fmt}"): check_oai_batch(fmt)
        for fmt in ("json", "text", "srt", "vtt", "verbose_json")
    },
    ("openai-js", "stream"): check_oai_stream,
    ("openai-js", "realtime"): check_oai_realtime,
    ("openai-js", "deltas-add-up"): check_oai_realtime_deltas,
}


def test_every_case_has_a_driver_and_a_check():
    for row, case in (p.values for p in params("test_js_sdks")):
        run, _, check = case.partition("/")
        assert row.key in DRIVERS, row.key
        assert (row.key, check or run) in CHECKS, case

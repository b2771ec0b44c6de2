"""examples/streamlit_call_center_azure.py (the cloud tutorial's page on the real Azure Speech
SDK) under Streamlit's AppTest, against a real server, with speech from a WAV file pushed in real
time: phrases appear while the call is live with their speaker ids, Stop in the middle of the
last sentence still brings that sentence, the session is stored, and a server that cannot be
reached is reported on the page (a `canceled`, not a hang)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import RunningServer
from speech import speech_or_skip, wer

from streamscribe.audio.wav import WavWriter

pytest.importorskip("azure.cognitiveservices.speech")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "examples" / "streamlit_call_center_azure.py"
RATE = 16000
pytestmark = pytest.mark.timeout(180)


def app(url: str, path: Path | str = "") -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    at.text_input(key="url").set_value(url)
    at.radio(key="source").set_value("Audio file")
    at.text_input(key="path").set_value(str(path))
    at.run()
    return at


def press_record(at: AppTest) -> None:
    at.button(key="record_derived").click()
    at.run()
    assert not at.exception, at.exception


def shown(at: AppTest) -> str:
    return " ".join(e.value for e in (*at.info, *at.success, *at.warning, *at.error))


def rerun_until(at: AppTest, done, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, shown(at)
        time.sleep(0.3)
        at.run()
        assert not at.exception, at.exception


@pytest.fixture(scope="module")
def call_audio(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, float, Path]:
    """Two utterances 1.5 s apart, then 2 s of silence: (reference, end of speech s, file)."""
    first, second = speech_or_skip(2)
    audio = np.concatenate(
        [first.audio, np.zeros(int(1.5 * RATE), np.float32), second.audio, np.zeros(2 * RATE)]
    )
    path = tmp_path_factory.mktemp("azure-call") / "call.wav"
    writer = WavWriter(path, RATE, 1)
    writer.write(audio.astype(np.float32))
    writer.close()
    speech_end = (len(first.audio) + 1.5 * RATE + len(second.audio)) / RATE
    return f"{first.text} {second.text}", speech_end, path


def test_idle_page_invites_to_record():
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "📞 Call Center (Azure Speech SDK)"
    assert "Press Record" in shown(at)


def test_a_call_on_the_azure_sdk(server: RunningServer, call_audio):
    reference, speech_end, path = call_audio
    at = app(server.ws, path)
    press_record(at)
    call = at.session_state["call"]
    rerun_until(at, lambda: call.state == "live" and "Live" in shown(at), timeout=20)
    stop_at = speech_end - 1.0  # a second before the last words are out
    rerun_until(at, lambda: call.audio_seconds >= stop_at, timeout=speech_end + 20)
    live = list(at.session_state["lines"])
    assert any(line["final"] for line in live), live  # the first sentence ended during the call
    press_record(at)  # Stop, while the caller is still speaking
    assert "finishing…" in shown(at)
    # the call ends in a background thread: wait for a page rendered after it ended
    rerun_until(at, lambda: call.state == "done" and "Call ended" in shown(at), timeout=40)
    lines = at.session_state["lines"]
    assert lines and all(line["final"] for line in lines), lines
    assert all(line["speaker"].startswith("Guest-") for line in lines), lines
    text = " ".join(line["text"] for line in lines)
    assert wer(reference, text) <= 0.4, text  # less the words after Stop
    final_before = " ".join(line["text"] for line in live if line["final"])
    assert len(text.split()) >= len(final_before.split()) + 3, (final_before, text)
    assert call.audio_seconds < stop_at + 1.0  # Stop stopped the audio
    assert "Call ended" in shown(at)
    # the session is in the store, as every dialect's is
    sessions = httpx.get(f"{server.http}/v1/sessions", timeout=10).json()
    items = sessions["sessions"] if isinstance(sessions, dict) else sessions
    assert any(s.get("protocol") == "azure-speech" for s in items), items


def test_unreachable_server_is_shown_on_the_page(call_audio):
    _, _, path = call_audio
    at = app("ws://127.0.0.1:9", path)
    press_record(at)
    call = at.session_state["call"]
    rerun_until(at, lambda: call.state == "failed", timeout=30)
    at.run()
    assert at.error and "The call failed" in at.error[0].value, shown(at)

"""examples/streamlit_call_center.py under Streamlit's AppTest, streaming to a real server.

The page is driven as a user would: set the server and an audio file in the sidebar, press the
stateful Record button, rerun while the call is live (turns appear), press it again at the end of
the speech and keep rerunning: the page says "finishing…" and the last turn still arrives, because
the background thread waits for Termination. Turns live in `st.session_state` and survive reruns
and the next call. A server that cannot be reached is reported on the page.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import RunningServer
from speech import speech_or_skip, wer
from streamlit.testing.v1 import AppTest

from streamscribe.audio.wav import WavWriter

APP = Path(__file__).resolve().parents[2] / "examples" / "streamlit_call_center.py"
RATE = 16000


def app(url: str, path: Path | str = "") -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    at.text_input(key="url").set_value(url)
    at.radio(key="source").set_value("Audio file")
    at.run()  # the file field is enabled once a file is the source
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
    """Two utterances 1.5 s apart, then 8 s of silence: (reference, end of speech s, file)."""
    first, second = speech_or_skip(2)
    audio = np.concatenate(
        [first.audio, np.zeros(int(1.5 * RATE), np.float32), second.audio, np.zeros(8 * RATE)]
    )
    path = tmp_path_factory.mktemp("call") / "call.wav"
    writer = WavWriter(path, RATE, 1)
    writer.write(audio.astype(np.float32))
    writer.close()
    speech_end = (len(first.audio) + 1.5 * RATE + len(second.audio)) / RATE
    return f"{first.text} {second.text}", speech_end, path


def test_idle_page_invites_to_record():
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "📞 Call Center"
    assert "Press Record" in shown(at)
    assert at.button(key="record_derived").label == "⏺ Record"
    assert at.session_state["turns"] == [] and "call" not in at.session_state


def test_stop_waits_for_the_last_turn(server: RunningServer, call_audio):
    reference, speech_end, path = call_audio
    at = app(server.ws, path)
    press_record(at)
    call = at.session_state["call"]
    rerun_until(at, lambda: call.state == "live" and "Live" in shown(at))
    live_turns: list[dict] = []
    stop_at = speech_end - 1.0  # a second before the last words are out
    rerun_until(at, lambda: call.audio_seconds >= stop_at, timeout=speech_end + 15)
    live_turns = list(at.session_state["turns"])
    assert live_turns, "no turn appeared while the call was live"
    assert any(t["final"] for t in live_turns)  # the first utterance ended during the call

    press_record(at)  # Stop, while the caller is still speaking
    assert "finishing…" in shown(at)
    # the call ends in a background thread: wait for a page rendered after it ended
    rerun_until(at, lambda: call.state == "done" and "Call ended" in shown(at), timeout=30)
    turns = at.session_state["turns"]
    assert turns and all(t["final"] for t in turns)
    text = " ".join(t["text"] for t in turns)
    assert wer(reference, text) <= 0.4, text  # less the words after Stop
    final_before = " ".join(t["text"] for t in live_turns if t["final"])
    # the words spoken before Stop that were not final yet still arrived, in a final turn
    assert len(text.split()) >= len(final_before.split()) + 3, (final_before, text)
    assert "Call ended" in shown(at)
    assert call.audio_seconds < stop_at + 1.0  # Stop stopped the audio, not the file's end

    stored = httpx.get(f"{server.http}/v1/sessions/{call.session_id}", timeout=10).json()
    assert stored["end_reason"] == "terminated"
    assert wer(text, " ".join(t["text"] for t in stored["turns"])) <= 0.05

    at.run()  # a plain rerun keeps everything
    assert at.session_state["turns"] == turns
    press_record(at)  # the next call starts; the previous one is kept
    assert at.session_state["calls"][-1] == {"session_id": call.session_id, "turns": turns}
    nxt = at.session_state["call"]
    assert nxt is not call and at.session_state["turns"] == []
    press_record(at)
    rerun_until(at, lambda: not nxt.active, timeout=30)
    assert nxt.state == "done", nxt.error
    assert any("Earlier calls" in e.label for e in at.expander)


def test_unreachable_server_is_shown_on_the_page(call_audio):
    _, _, path = call_audio
    at = app("ws://127.0.0.1:9", path)
    press_record(at)
    call = at.session_state["call"]
    rerun_until(at, lambda: call.state == "failed", timeout=20)
    at.run()
    assert at.error and "The call failed" in at.error[0].value, shown(at)
    assert "127.0.0.1:9" in at.error[0].value
    at.run()  # the call ended by itself: the Record button is released
    assert at.session_state["record"] is False

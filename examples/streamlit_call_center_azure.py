"""The cloud "Call Center" tutorial page, on the real Azure Speech SDK, transcribed by streamscribe.

Run it beside a server (`streamscribe serve`):

    pip install azure-cognitiveservices-speech streamlit streamlit-extras
    streamlit run examples/streamlit_call_center_azure.py

This is the tutorial's own shape: `azure.cognitiveservices.speech`'s `ConversationTranscriber`
on the microphone, its `transcribing` / `transcribed` / `session_stopped` / `canceled`
callbacks, one line per phrase with the caller's `speaker_id`. The one line that differs from
the cloud version is the `SpeechConfig` (`speech_config()` below): `host=` names the
streamscribe server instead of `region=` naming an Azure region. Nothing else knows.

Kept from the tutorial's lessons (see `streamlit_call_center.py`, the same page on
streamscribe's own SDK): the transcriber lives in `st.session_state` so reruns do not lose it;
its callbacks (called on the SDK's threads) only append to a list under a lock; the page reads
that list; Stop ends the audio and waits for `session_stopped`, so the last phrase still arrives.
The audio comes from the default microphone, or from a WAV file pushed in real time through a
`PushAudioInputStream` (demos and tests).
"""

from __future__ import annotations

import os
import threading
import time
import wave
from dataclasses import asdict, dataclass

import azure.cognitiveservices.speech as speechsdk
import streamlit as st

try:  # the stateful Record button of the cloud tutorials
    from streamlit_extras.stateful_button import button as stateful_button
except ImportError:  # pragma: no cover - without streamlit-extras a toggle does the same
    stateful_button = None

CHUNK_S = 0.1


def speech_config(server: str, key: str | None) -> speechsdk.SpeechConfig:
    """The one line that changes. Cloud: `SpeechConfig(subscription=KEY, region=REGION)`."""
    return speechsdk.SpeechConfig(host=server, subscription=key or None)


@dataclass
class Line:
    speaker: str
    text: str
    final: bool
    offset_s: float


class Call:
    """A ConversationTranscriber and what it said, kept across reruns.

    States: connecting -> live -> finishing -> done, or failed (with `error`)."""

    def __init__(self, server: str, key: str | None, path: str | None) -> None:
        self.state = "connecting"
        self.error: str | None = None
        self.session_id: str | None = None
        self.audio_seconds = 0.0
        self._lines: list[Line] = []
        self._partial: Line | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stream: speechsdk.audio.PushAudioInputStream | None = None
        self._path = path
        if path:
            with wave.open(path) as wav:
                rate = wav.getframerate()
            fmt = speechsdk.audio.AudioStreamFormat(samples_per_second=rate)
            self._stream = speechsdk.audio.PushAudioInputStream(stream_format=fmt)
            audio = speechsdk.audio.AudioConfig(stream=self._stream)
        else:
            audio = speechsdk.audio.AudioConfig(use_default_microphone=True)
        self.transcriber = speechsdk.transcription.ConversationTranscriber(
            speech_config=speech_config(server, key), audio_config=audio
        )
        self.transcriber.session_started.connect(self._on_started)
        self.transcriber.transcribing.connect(self._on_transcribing)
        self.transcriber.transcribed.connect(self._on_transcribed)
        self.transcriber.canceled.connect(self._on_canceled)
        self.transcriber.session_stopped.connect(self._on_stopped)

    # ---------------------------------------------------------------- the SDK's callbacks
    def _on_started(self, evt: speechsdk.SessionEventArgs) -> None:
        self.session_id = evt.session_id
        if self.state == "connecting":
            self.state = "live"

    def _on_transcribing(self, evt) -> None:
        result = evt.result
        with self._lock:
            self._partial = Line(result.speaker_id, result.text, False, result.offset / 1e7)

    def _on_transcribed(self, evt) -> None:
        result = evt.result
        if result.reason != speechsdk.ResultReason.RecognizedSpeech or not result.text:
            return
        with self._lock:
            self._lines.append(Line(result.speaker_id, result.text, True, result.offset / 1e7))
            self._partial = None

    def _on_canceled(self, evt) -> None:
        details = evt.cancellation_details
        if details.reason == speechsdk.CancellationReason.Error:
            self.error = f"{details.code.name}: {details.error_details}"
            self.state = "failed"

    def _on_stopped(self, _evt) -> None:
        if self.state != "failed":
            self.state = "done"
        self._stopped.set()

    # ---------------------------------------------------------------- control
    def start(self) -> Call:
        self.transcriber.start_transcribing_async()
        if self._stream is not None:
            threading.Thread(target=self._play, name="call-audio", daemon=True).start()
        return self

    def _play(self) -> None:
        """The file, as a microphone would send it: 100 ms at a time, in real time."""
        assert self._stream is not None and self._path is not None
        with wave.open(self._path) as wav:
            step = int(wav.getframerate() * CHUNK_S)
            started = time.monotonic()
            while not self._stop.is_set() and (frames := wav.readframes(step)):
                self._stream.write(frames)
                self.audio_seconds += len(frames) / 2 / wav.getframerate()
                time.sleep(max(0.0, started + self.audio_seconds - time.monotonic()))
        self._stream.close()  # the end of audio: the last phrase comes, then session_stopped
        self.state = "finishing" if self.state == "live" else self.state

    def stop(self) -> None:
        """Stop the audio; the transcriber is stopped once its last phrase arrived."""
        self._stop.set()
        if self._stream is None:
            self.state = "finishing"
        threading.Thread(target=self._finish, name="call-stop", daemon=True).start()

    def _finish(self) -> None:
        if self._stream is not None:
            self._stopped.wait(30)  # the closed stream ends the session by itself
        self.transcriber.stop_transcribing_async().get()

    @property
    def active(self) -> bool:
        return self.state in ("connecting", "live", "finishing")

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def lines(self) -> list[Line]:
        with self._lock:
            partial = [self._partial] if self._partial and self.active else []
            return [*self._lines, *partial]


# ------------------------------------------------------------------------------ the page


def record_button() -> bool:
    if stateful_button is not None:
        return bool(stateful_button("⏺ Record", key="record"))
    return st.toggle("⏺ Record", key="record")


def show_lines(lines: list[dict]) -> None:
    if not lines:
        st.caption("What the caller and the agent say appears here.")
    for line in lines:
        text = line["text"] if line["final"] else f"_{line['text']} …_"
        st.markdown(f"`{line['offset_s']:5.1f}s` **{line['speaker']}**: {text}")


def status_line(call: Call | None) -> None:
    if call is None:
        st.info("Press Record to start a call.")
    elif call.state == "failed":
        st.error(f"The call failed: {call.error}")
    elif call.state == "connecting":
        st.info("Connecting…")
    elif call.active and (call.stopping or call.state == "finishing"):
        st.warning("finishing… waiting for the last words")
    elif call.state == "live":
        st.success(f"Live: {call.audio_seconds:.0f} s sent. Press Record again to stop.")
    else:
        st.success(f"Call ended: {len(call.lines())} phrases (session {call.session_id}).")


def main() -> None:
    st.set_page_config(page_title="Call Center", page_icon="📞")
    st.title("📞 Call Center (Azure Speech SDK)")
    state = st.session_state
    state.setdefault("lines", [])
    with st.sidebar:
        server = st.text_input(
            "Server", os.environ.get("STREAMSCRIBE_URL", "ws://127.0.0.1:8000"), key="url"
        )
        key = st.text_input(
            "Key", os.environ.get("STREAMSCRIBE_API_KEY", ""), type="password", key="api_key"
        )
        kind = st.radio("Audio", ["Microphone", "Audio file"], key="source")
        path = st.text_input("WAV file (played in real time)", key="path")

    call: Call | None = state.get("call")
    was_pressed = state.get("was_pressed", False)
    if was_pressed and call is not None and not call.active and state.get("record"):
        state["record"] = False  # the call ended by itself
    pressed = record_button()
    state["was_pressed"] = pressed
    if pressed and not was_pressed:
        try:
            call = Call(server, key, path if kind == "Audio file" else None).start()
        except (RuntimeError, OSError, ValueError, wave.Error) as exc:
            st.error(f"Could not start the call: {exc}")
            call = None
        state["call"] = call
        state["lines"] = []
    elif not pressed and was_pressed and call is not None and call.active:
        call.stop()

    @st.fragment(run_every=0.5)
    def live() -> None:
        current: Call | None = st.session_state.get("call")
        if current is not None:
            st.session_state["lines"] = [asdict(line) for line in current.lines()]
        status_line(current)
        show_lines(st.session_state["lines"])
        if current is not None and not current.active and st.session_state.get("record"):
            st.rerun()

    live()


if __name__ == "__main__":  # `streamlit run` and AppTest run the file as __main__
    main()

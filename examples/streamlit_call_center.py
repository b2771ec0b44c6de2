"""A "Call Center" page in Streamlit, live transcription done right with streamscribe's SDK.

Run it beside a server (`streamscribe serve`):

    pip install streamlit streamlit-extras
    streamlit run examples/streamlit_call_center.py

Cloud tutorials wire the speech SDK straight into the script: Streamlit reruns the script on
every click, so pressing Stop kills the socket before the last turn arrives, and turns kept in
local variables vanish on the next rerun. Here:

- the session runs in a background thread (`Call`), kept in `st.session_state` so it survives
  reruns; the script only reads its state (the Streamlit API is never called from that thread);
- Stop only tells the thread to stop sending audio: it then sends Terminate and waits for the
  server's Termination (`StreamingClient.disconnect()`), so the last turn is never lost;
- every turn is copied into `st.session_state["turns"]` (and past calls into
  `st.session_state["calls"]`), so nothing disappears when the page reruns;
- a fragment re-renders the live turns twice a second while the call is on.

The audio comes from the microphone (PortAudio via sounddevice) or, for demos and tests, a file
played in real time. Server URL and API key default to STREAMSCRIBE_URL / STREAMSCRIBE_API_KEY.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import streamlit as st

from streamscribe.client import FileStream, MicrophoneStream, StreamingClient, StreamingError, Turn

try:  # the stateful Record button of the cloud tutorials
    from streamlit_extras.stateful_button import button as stateful_button
except ImportError:  # pragma: no cover - without streamlit-extras a toggle does the same
    stateful_button = None

Source = Callable[[], Iterable[bytes]]


@dataclass
class CallTurn:
    order: int
    text: str
    final: bool
    start_ms: int
    end_ms: int
    language: str | None = None


class Call:
    """One streaming session in a background thread; reruns poll it, never block on it.

    States: connecting -> live -> finishing -> done, or failed (with `error`) from any of them.
    """

    def __init__(self, url: str, api_key: str | None, source: Source, **params: Any) -> None:
        self.url = url
        self.api_key = api_key or None
        self.source = source
        self.params = {"format_turns": True, **params}
        self.state = "connecting"
        self.error: str | None = None
        self.session_id: str | None = None
        self.audio_seconds = 0.0  # audio sent so far
        self.stop_requested = threading.Event()
        self._turns: dict[int, CallTurn] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="call-center", daemon=True)

    def start(self) -> Call:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending audio; the session goes on until the server's last turn arrived."""
        self.stop_requested.set()

    @property
    def active(self) -> bool:
        return self.state in ("connecting", "live", "finishing")

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def turns(self) -> list[CallTurn]:
        with self._lock:
            return [self._turns[k] for k in sorted(self._turns)]

    def _on_turn(self, _client: StreamingClient, turn: Turn) -> None:
        final = turn.end_of_turn
        with self._lock:
            known = self._turns.get(turn.turn_order)
            if known is not None and known.final and not final:
                return  # a late partial never undoes a final
            words = turn.words
            self._turns[turn.turn_order] = CallTurn(
                order=turn.turn_order,
                text=turn.transcript if final else " ".join(w.text for w in words),
                final=final,
                start_ms=words[0].start if words else 0,
                end_ms=words[-1].end if words else 0,
                language=turn.language_code,
            )

    def _run(self) -> None:
        client = StreamingClient(self.url, self.api_key, **self.params)
        client.on("turn", self._on_turn)
        try:
            self.session_id = client.connect().id
            self.state = "live"
            for chunk in self.source():
                if self.stop_requested.is_set():
                    break
                client.send_audio(chunk)
                self.audio_seconds += len(chunk) / 32000  # 16 kHz, 2 bytes a sample
            self.state = "finishing"
            client.disconnect(terminate=True)  # waits for the last turn and Termination
            with self._lock:  # a turn the server never finalized was dropped by it
                self._turns = {k: t for k, t in self._turns.items() if t.final}
            self.state = "done"
        except (StreamingError, OSError) as exc:
            self.error = str(exc)
            self.state = "failed"
            client.disconnect(terminate=False)
        except Exception as exc:  # the page must show it, not lose it in a thread
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            client.disconnect(terminate=False)


# ------------------------------------------------------------------------------ the page


def microphone() -> Iterable[bytes]:
    with MicrophoneStream(sample_rate=16000) as mic:
        yield from mic


def audio_file(path: str) -> Source:
    return lambda: FileStream(path, realtime=True)


def record_button() -> bool:
    """The stateful Record button: pressed while a call should be on."""
    if stateful_button is not None:
        return bool(stateful_button("⏺ Record", key="record"))
    return st.toggle("⏺ Record", key="record")


def clock(ms: int) -> str:
    return f"{ms // 60000}:{ms // 1000 % 60:02d}"


def show_turns(turns: list[dict[str, Any]]) -> None:
    if not turns:
        st.caption("Turns appear here while the caller speaks.")
    for turn in turns:
        label = f"`{clock(turn['start_ms'])}`"
        if turn.get("language"):
            label += f" `{turn['language']}`"
        text = turn["text"] if turn["final"] else f"_{turn['text']} …_"
        st.markdown(f"{label} {text}")


def sync(call: Call | None) -> None:
    """Copy the call's turns into the session state (what survives every rerun)."""
    if call is not None:
        st.session_state["turns"] = [asdict(t) for t in call.turns()]


def status_line(call: Call | None) -> None:
    if call is None:
        st.info("Press Record to start a call.")
    elif call.state == "connecting":
        st.info("Connecting…")
    elif call.active and call.stop_requested.is_set():
        st.warning("finishing… waiting for the last words")
    elif call.state == "live":
        st.success(f"Live: {call.audio_seconds:.0f} s sent. Press Record again to stop.")
    elif call.state == "finishing":
        st.warning("finishing… waiting for the last words")
    elif call.state == "done":
        st.success(f"Call ended: {len(call.turns())} turns kept (session {call.session_id}).")
    else:
        st.error(f"The call failed: {call.error}")


def main() -> None:
    st.set_page_config(page_title="Call Center", page_icon="📞")
    st.title("📞 Call Center")
    state = st.session_state
    state.setdefault("turns", [])
    state.setdefault("calls", [])

    with st.sidebar:
        url = st.text_input(
            "Server", os.environ.get("STREAMSCRIBE_URL", "ws://127.0.0.1:8000"), key="url"
        )
        api_key = st.text_input(
            "API key", os.environ.get("STREAMSCRIBE_API_KEY", ""), type="password", key="api_key"
        )
        kind = st.radio("Audio", ["Microphone", "Audio file"], key="source")
        path = st.text_input(
            "File (played in real time)", key="path", disabled=kind != "Audio file"
        )
        silence = st.slider("End of turn after silence (ms)", 400, 3000, 1280, 20, key="silence")

    call: Call | None = state.get("call")
    was_pressed = state.get("was_pressed", False)
    if was_pressed and call is not None and not call.active and state.get("record"):
        state["record"] = False  # the call ended by itself (the file ran out, or it failed)
    pressed = record_button()
    state["was_pressed"] = pressed
    if pressed and not was_pressed:
        if call is not None:  # the previous call's turns are kept
            state["calls"].append({"session_id": call.session_id, "turns": state["turns"]})
        source = microphone if kind == "Microphone" else audio_file(path)
        call = state["call"] = Call(url, api_key, source, max_turn_silence=silence).start()
        state["turns"] = []
    elif not pressed and was_pressed and call is not None:
        call.stop()  # the thread sends Terminate and waits for the last turn

    @st.fragment(run_every=0.5)
    def live() -> None:
        current: Call | None = st.session_state.get("call")
        sync(current)
        status_line(current)
        show_turns(st.session_state["turns"])
        if current is not None and not current.active and st.session_state.get("record"):
            st.rerun()  # ended by itself: redraw the whole page (the Record button too)

    live()
    if state["calls"]:
        with st.expander(f"Earlier calls ({len(state['calls'])})"):
            for past in reversed(state["calls"]):
                st.markdown(f"**Session {past['session_id']}**")
                show_turns(past["turns"])


if __name__ == "__main__":  # `streamlit run` and AppTest run the file as __main__
    main()

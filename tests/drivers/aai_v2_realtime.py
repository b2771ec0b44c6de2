"""Drives the official AssemblyAI SDK 0.64.2 `RealtimeTranscriber` against a server; prints
one JSON object per line for every callback, so a test in another interpreter can assert on it.

Run it with the 0.64.2 SDK first on the path (the test venv has 1.x, which lacks this class):

    PYTHONPATH=.venv/sdk/assemblyai-0.64.2 .venv/bin/python tests/drivers/aai_v2_realtime.py CFG

CFG is a JSON object: base_url (ws://host:port), api_key, pcm (a file of 16 kHz pcm_s16le or
null), speed (1.0: real time), chunk_ms, token (mint one with create_temporary_token first),
word_boost, threshold (end_utterance_silence_threshold), session_info (ask for
SessionInformation), force_after_speech (force_end_utterance after the speech, and again after
`force_gap_s` of silence once a final with text has come), silence_close_s (the AssemblyAI
cookbook's rule: close the session once empty partials have come for this long since the last
words), max_silence_s (silence sent after the speech, if the rule has not closed the session
first), frames (extra raw frames, as byte counts of zeros, sent after the speech), wait_s (how
long to wait for the session to end).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime

import assemblyai as aai

T0 = time.monotonic()
LOCK = threading.Lock()


def out(event: str, **fields: object) -> None:
    with LOCK:
        line = {"event": event, "t": round(time.monotonic() - T0, 3), **fields}
        print(json.dumps(line, default=str), flush=True)


def dump(model: object) -> dict:
    """The fields of an SDK model (pydantic 2 or the pydantic 1 layer, whichever it uses)."""
    return model.model_dump() if hasattr(model, "model_dump") else model.dict()  # type: ignore[attr-defined]


def main() -> None:
    cfg = json.loads(sys.argv[1])
    aai.settings.base_url = cfg["base_url"]
    aai.settings.api_key = cfg.get("api_key") or "no-key"
    token = None
    if cfg.get("token"):
        try:
            token = aai.RealtimeTranscriber.create_temporary_token(
                expires_in=cfg.get("expires_in", 60)
            )
        except aai.types.AssemblyAIError as exc:
            out("token_error", message=str(exc), status=exc.status_code)
            return
        out("token", token=token)

    state = {"last_words": datetime.now(), "terminated": False}
    closed = threading.Event()

    def on_open(opened: aai.RealtimeSessionOpened) -> None:
        out("SessionBegins", **dump(opened))

    spoken_final = threading.Event()

    def on_data(transcript: aai.RealtimeTranscript) -> None:
        out(type(transcript).__name__, **dump(transcript))
        if isinstance(transcript, aai.RealtimeFinalTranscript) and transcript.text:
            spoken_final.set()
        limit = cfg.get("silence_close_s")
        if limit is None or state["terminated"]:
            return
        # the cookbook's rule, as written there: empty partials past the limit end the session
        if transcript.text == "":
            silent = (datetime.now() - state["last_words"]).total_seconds()
            if silent > limit:
                out("silence_close", silent_s=round(silent, 3))
                transcriber.close()
                state["terminated"] = True
            return
        state["last_words"] = datetime.now()

    def on_error(error: aai.RealtimeError) -> None:
        out("error", message=str(error), code=getattr(error, "status_code", None))

    def on_close() -> None:
        out("close")
        closed.set()

    def on_info(info: aai.RealtimeSessionInformation) -> None:
        out("SessionInformation", **dump(info))

    transcriber = aai.RealtimeTranscriber(
        sample_rate=16000,
        encoding=aai.AudioEncoding.pcm_s16le,
        word_boost=cfg.get("word_boost") or [],
        end_utterance_silence_threshold=cfg.get("threshold"),
        on_open=on_open,
        on_data=on_data,
        on_error=on_error,
        on_close=on_close,
        on_extra_session_information=on_info if cfg.get("session_info") else None,
        token=token,
    )
    transcriber.connect()

    def paced(data: bytes, chunk_ms: int, speed: float):
        step = 32 * chunk_ms
        start = time.monotonic()
        for k, i in enumerate(range(0, len(data), step)):
            if state["terminated"] or closed.is_set():
                return
            delay = start + k * chunk_ms / 1000 / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            yield data[i : i + step]

    chunk_ms = cfg.get("chunk_ms", 100)
    speed = cfg.get("speed", 1.0)
    if cfg.get("pcm"):
        with open(cfg["pcm"], "rb") as f:
            transcriber.stream(paced(f.read(), chunk_ms, speed))
        out("speech_sent")
    if cfg.get("force_after_speech"):
        transcriber.force_end_utterance()
        out("force_sent")
        gap = cfg.get("force_gap_s", 2.0)
        transcriber.stream(paced(bytes(int(32000 * gap)), chunk_ms, speed))
        # the second force must find nothing to end: wait for the first one's final (a loaded
        # machine may take longer than the gap to decode it)
        spoken_final.wait(cfg.get("force_final_wait_s", 30))
        transcriber.force_end_utterance()
        out("force_sent")
    for size in cfg.get("frames") or []:
        transcriber.stream(bytes(size))
    silence = cfg.get("max_silence_s", 0)
    if silence:
        transcriber.stream(paced(bytes(int(32000 * silence)), chunk_ms, 1.0))
    if cfg.get("frames"):
        closed.wait(cfg.get("wait_s", 10))  # the server is expected to close on its own
    if not state["terminated"]:
        transcriber.close()
    out("done", closed_by_rule=state["terminated"])


if __name__ == "__main__":
    main()

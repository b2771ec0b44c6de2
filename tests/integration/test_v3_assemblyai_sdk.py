"""The unmodified official `assemblyai` SDK against the real server, streaming real speech."""

from __future__ import annotations

import threading
import time

import pytest
from assemblyai.streaming.v3 import (
    BeginEvent,
    StreamingClient,
    StreamingClientOptions,
    StreamingError,
    StreamingEvents,
    StreamingParameters,
    TerminationEvent,
    TurnEvent,
)
from speech import joined, speech_or_skip, wer

CHUNK = 1600 * 2  # 100 ms of 16 kHz pcm_s16le


def paced(pcm: bytes, speed: float = 1.0):
    """100 ms chunks on the wall clock (speed > 1 sends faster than real time)."""
    t0 = time.monotonic()
    for k, i in enumerate(range(0, len(pcm), CHUNK)):
        delay = t0 + k * 0.1 / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        chunk = pcm[i : i + CHUNK]
        if len(chunk) < CHUNK:
            chunk += b"\0" * (CHUNK - len(chunk))
        yield chunk


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[float, object]] = []
        self.done = threading.Event()

    def attach(self, client: StreamingClient) -> None:
        for kind in (StreamingEvents.Begin, StreamingEvents.Turn, StreamingEvents.Termination):
            client.on(kind, lambda _c, e: self.events.append((time.monotonic(), e)))
        client.on(StreamingEvents.Error, lambda _c, e: self.events.append((time.monotonic(), e)))
        client.on(StreamingEvents.Termination, lambda _c, e: self.done.set())

    def of(self, kind: type) -> list:
        return [e for _, e in self.events if isinstance(e, kind)]


@pytest.fixture(scope="module")
def sdk_session(server):
    """One session of three real utterances with pauses, streamed in real time."""
    speech = joined(speech_or_skip(3), gap_s=1.6)
    client = StreamingClient(StreamingClientOptions(api_key="test-key", api_host=server.ws))
    rec = Recorder()
    rec.attach(client)
    client.connect(StreamingParameters(sample_rate=16000, format_turns=True))
    client.stream(paced(speech.pcm16()))
    client.disconnect(terminate=True)
    assert rec.done.wait(30), "no Termination"
    return speech, rec


def test_message_order_begin_turns_termination(sdk_session):
    _, rec = sdk_session
    kinds = [type(e) for _, e in rec.events]
    assert kinds[0] is BeginEvent
    assert kinds[-1] is TerminationEvent
    assert not [e for _, e in rec.events if isinstance(e, StreamingError)]
    assert kinds.count(TerminationEvent) == 1
    assert rec.of(TurnEvent), "no turns"


def test_transcript_matches_reference(sdk_session):
    speech, rec = sdk_session
    formatted = [t for t in rec.of(TurnEvent) if t.end_of_turn and t.turn_is_formatted]
    hypothesis = " ".join(t.transcript for t in formatted)
    assert wer(speech.text, hypothesis) <= 0.35, (speech.text, hypothesis)
    assert len(formatted) >= 3  # one turn per utterance (pauses of 1.6 s)


def test_turn_sequence_rules(sdk_session):
    """turn_order counts from 0; each turn ends unformatted then formatted; finals never change."""
    _, rec = sdk_session
    turns = rec.of(TurnEvent)
    orders = sorted({t.turn_order for t in turns})
    assert orders == list(range(len(orders)))
    for order in orders:
        msgs = [t for t in turns if t.turn_order == order]
        ends = [t for t in msgs if t.end_of_turn]
        assert [t.turn_is_formatted for t in ends] == [False, True]
        assert msgs[-1].turn_is_formatted and msgs[-2] is ends[0]
        final_seen: dict[int, str] = {}
        for msg in msgs:
            if msg.turn_is_formatted:
                continue
            for i, w in enumerate(msg.words):
                if i in final_seen:
                    assert w.word_is_final and w.text == final_seen[i], (order, i, w)
                elif w.word_is_final:
                    final_seen[i] = w.text
            assert msg.transcript == " ".join(w.text for w in msg.words if w.word_is_final)
        assert ends[0].transcript.split() == [w.text for w in ends[0].words]
        assert ends[1].transcript[0].isupper()


def test_word_timings_are_in_stream_time(sdk_session):
    speech, rec = sdk_session
    finals = [t for t in rec.of(TurnEvent) if t.end_of_turn and not t.turn_is_formatted]
    last_end = 0
    for t in finals:
        for w in t.words:
            assert isinstance(w.start, int) and isinstance(w.end, int)
            assert 0 <= w.start <= w.end <= speech.seconds * 1000 + 500
            assert 0.0 <= w.confidence <= 1.0
            assert w.start >= last_end - 300  # words move forward through the stream
            last_end = max(last_end, w.end)
    # the three utterances are 1.6 s apart: turn starts follow the audio
    starts = [t.words[0].start for t in finals]
    assert starts == sorted(starts)


def test_termination_durations(sdk_session):
    speech, rec = sdk_session
    term = rec.of(TerminationEvent)[0]
    assert abs(term.audio_duration_seconds - speech.seconds) <= 1
    assert term.session_duration_seconds >= term.audio_duration_seconds - 1


def test_partials_arrive_while_speaking(sdk_session):
    _, rec = sdk_session
    partials = [t for t in rec.of(TurnEvent) if not t.end_of_turn and t.words]
    assert len(partials) >= 6
    assert any(not w.word_is_final for t in partials for w in t.words)
    assert any(w.word_is_final for t in partials for w in t.words)


def test_terminate_flushes_the_last_words(server):
    """Terminate right after the speech: the last turn still arrives, then Termination."""
    speech = speech_or_skip(1)[0]
    pcm = speech.pcm16()
    client = StreamingClient(StreamingClientOptions(api_key="k", api_host=server.ws))
    rec = Recorder()
    rec.attach(client)
    client.connect(StreamingParameters(sample_rate=16000))
    client.stream(paced(pcm, speed=2.0))  # faster than real time: back-pressure, not errors
    client.disconnect(terminate=True)
    assert rec.done.wait(30)
    finals = [t for t in rec.of(TurnEvent) if t.end_of_turn]
    text = " ".join(t.transcript for t in finals)
    assert wer(speech.text, text) <= 0.35, (speech.text, text)
    assert isinstance(rec.events[-1][1], TerminationEvent)

"""OpenAI Realtime transcription sessions against a real server, through the official SDK.

Real speech is streamed as 24 kHz PCM16 in base64 appends, with server VAD and with manual
commits, in the GA and the beta dialect. Checked: the words (WER against the reference), the
order of every item's events, that deltas only ever add text, types and units (milliseconds in
the buffer events, seconds in usage), errors in OpenAI's shape that leave the session running,
and a clean close.
"""

from __future__ import annotations

import json

import pytest
from compat_cases.openai_realtime import (
    COMPLETED,
    DELTA,
    client,
    field_of,
    kind,
    pcm24,
    run_realtime,
    silence,
)
from speech import joined, speech_or_skip, wer
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(180)

ENGLISH = {"model": "gpt-4o-transcribe", "language": "en"}


def ga_session(turn_detection: dict | None) -> dict:
    return {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": ENGLISH,
                "turn_detection": turn_detection,
            }
        },
    }


def per_item(run) -> dict[str, list]:
    items: dict[str, list] = {}
    for event in run.events:
        item = field_of(event, "item_id")
        if item:
            items.setdefault(item, []).append(event)
    return items


def check_item(events: list, vad: bool) -> None:
    """One item's events: in OpenAI's order, deltas only adding text, the right types."""
    names = [kind(e) for e in events]
    assert names[-1] == COMPLETED and names.count(COMPLETED) == 1, names
    assert names.count("input_audio_buffer.committed") == 1, names
    committed_at = names.index("input_audio_buffer.committed")
    if vad and "input_audio_buffer.speech_started" in names:
        assert names[0] == "input_audio_buffer.speech_started", names
        if "input_audio_buffer.speech_stopped" in names:
            stopped = names.index("input_audio_buffer.speech_stopped")
            assert stopped == committed_at - 1, names
            start, end = events[0].audio_start_ms, events[stopped].audio_end_ms
            assert isinstance(start, int) and isinstance(end, int) and 0 <= start < end
    else:
        assert "input_audio_buffer.speech_started" not in names, names
    deltas = [e for e in events if kind(e) == DELTA]
    assert all(isinstance(d.delta, str) and d.delta.strip() for d in deltas)
    # each one continues the text: a word after a space, or the closing mark of a sentence
    assert all(d.delta.startswith(" ") or d.delta in (".", "?", "!") for d in deltas[1:])
    assert all(d.content_index == 0 for d in deltas)
    completed = events[-1]
    assert completed.content_index == 0 and isinstance(completed.transcript, str)
    assert completed.usage.type == "duration" and isinstance(completed.usage.seconds, float)
    # as in the cloud, the deltas add up to exactly the completed transcript
    assert "".join(d.delta for d in deltas) == completed.transcript


@pytest.fixture(scope="module")
def two():
    return speech_or_skip(2)


def test_server_vad_session(server, two):
    speech = joined(two, gap_s=1.6)
    bad_events = [
        (0, {"type": "input_audio_buffer.append", "audio": "***", "event_id": "evt_bad_audio"}),
        (0, {"type": "response.create", "event_id": "evt_response"}),
    ]
    run = run_realtime(
        server,
        [pcm24(speech.audio) + silence(1.0)],
        ga_session({"type": "server_vad", "silence_duration_ms": 500}),
        extra=bad_events,
        realtime=True,
    )
    assert run.types[:2] == ["session.created", "session.updated"]
    created = run.events[0]
    assert created.session.type == "transcription"
    assert run.events[1].session.audio.input.turn_detection.silence_duration_ms == 500
    assert wer(speech.text, run.transcript) <= 0.35, run.transcript

    errors = run.of("error")
    assert [(e.error.event_id, e.error.code) for e in errors] == [
        ("evt_bad_audio", "invalid_audio"),
        ("evt_response", "unsupported_event"),
    ]
    assert all(e.error.type == "invalid_request_error" and e.error.message for e in errors)
    assert run.types.index("error") < run.types.index(COMPLETED)  # and the session went on

    items = per_item(run)
    for events in items.values():
        check_item(events, vad=True)
    spoken = [i for i, ev in items.items() if any(e.transcript for e in ev if kind(e) == COMPLETED)]
    assert len(spoken) >= 2  # two utterances, two items at least
    starts = [e.audio_start_ms for e in run.of("input_audio_buffer.speech_started")]
    assert starts == sorted(starts)
    # milliseconds from the start of the session's audio: the second utterance starts after the
    # first one (plus the gap) in audio time
    first_ms = two[0].seconds * 1000
    assert any(first_ms <= s <= first_ms + 1600 + 800 for s in starts[1:]), starts
    # usage is in seconds and matches the buffer events' milliseconds
    for item, events in items.items():
        started = [e for e in events if kind(e) == "input_audio_buffer.speech_started"]
        stopped = [e for e in events if kind(e) == "input_audio_buffer.speech_stopped"]
        if started and stopped:
            span = (stopped[0].audio_end_ms - started[0].audio_start_ms) / 1000
            assert 0 < events[-1].usage.seconds <= span + 0.5, (item, span)
    committed = run.of("input_audio_buffer.committed")
    assert committed[0].previous_item_id is None
    assert [c.previous_item_id for c in committed[1:]] == [c.item_id for c in committed[:-1]]
    live = " ".join(e.delta for e in run.of(DELTA))
    assert wer(speech.text, live) <= 0.35, live  # the live text is good on its own
    # and it is live: words reach the client while the speaker is still talking
    early = [
        item
        for item, events in items.items()
        if "input_audio_buffer.speech_stopped" in (names := [kind(e) for e in events])
        and DELTA in names[: names.index("input_audio_buffer.speech_stopped")]
    ]
    assert early, "no delta arrived before its item's speech_stopped"
    assert run.close_code == 1000


def test_manual_commit_makes_one_item_per_commit(server, two):
    run = run_realtime(
        server,
        [pcm24(s.audio) + silence(0.3) for s in two],
        ga_session(None),
        commit_each=True,
    )
    assert run.of("session.updated")[0].session.audio.input.turn_detection is None
    assert "input_audio_buffer.speech_started" not in run.types
    completed = run.of(COMPLETED)
    assert len(completed) == 2
    for utterance, item in zip(two, completed, strict=True):
        assert wer(utterance.text, item.transcript) <= 0.35, item.transcript
    items = per_item(run)
    assert list(items) == [c.item_id for c in completed]
    for events in items.values():
        check_item(events, vad=False)
    assert run.close_code == 1000


def test_beta_dialect_with_its_own_event_names(server, two):
    session = {
        "input_audio_format": "pcm16",
        "input_audio_transcription": ENGLISH,
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 600},
    }
    run = run_realtime(server, [pcm24(two[0].audio) + silence(1.0)], session, beta=True)
    assert run.types[:2] == ["transcription_session.created", "transcription_session.updated"]
    updated = field_of(run.events[1], "session")  # the SDK's beta TranscriptionSession
    assert field_of(updated, "input_audio_format") == "pcm16"
    assert field_of(field_of(updated, "turn_detection"), "silence_duration_ms") == 600
    assert wer(two[0].text, run.transcript) <= 0.35, run.transcript
    for events in per_item(run).values():
        check_item(events, vad=True)


def test_commit_of_an_empty_buffer_is_an_error_event(server):
    with client(server).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert conn.recv().type == "session.created"
        conn.input_audio_buffer.commit(event_id="evt_commit")
        error = conn.recv()
        assert error.type == "error" and error.error.code == "input_audio_buffer_commit_empty"
        assert error.error.event_id == "evt_commit" and "100ms" in error.error.message
        conn.input_audio_buffer.clear()
        assert conn.recv().type == "input_audio_buffer.cleared"


def test_browser_subprotocols_select_realtime(server):
    with connect(
        f"{server.ws}/v1/realtime?intent=transcription",
        subprotocols=["realtime", "openai-insecure-api-key.sk-local", "openai-beta.realtime-v1"],
    ) as ws:
        assert ws.subprotocol == "realtime"
        first = json.loads(ws.recv(timeout=10))
        assert first["type"] == "transcription_session.created"  # the beta subprotocol
        ws.send(b"\x00\x00")
        error = json.loads(ws.recv(timeout=10))
        assert error["type"] == "error" and "base64" in error["error"]["message"]

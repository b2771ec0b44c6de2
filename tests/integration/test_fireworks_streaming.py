"""Fireworks streaming against the real server, through a client written from the protocol
document (tests/drivers/fireworks_client.py: there is no official SDK), streaming real speech.

One session carries everything a Fireworks client does: 50 ms PCM16 frames in real time,
`language` and `prompt`, both timestamp granularities, a mid-stream checkpoint, a trace, and the
`"final"` checkpoint after which the client closes. Bad input is sent over raw sockets.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from drivers.fireworks_client import PATH, stream
from drivers.keyed_server import keyed_server
from speech import joined, speech_or_skip, wer
from websockets.exceptions import ConnectionClosed, InvalidStatus

GAP_S = 1.6
QUERY = (
    "language=en&prompt=A+reading+from+a+novel.&timestamp_granularities=word"
    "&timestamp_granularities=segment&model=whisper-v3&response_format=verbose_json"
)


def all_final(update: dict) -> bool:
    return all(w["is_final"] for s in update["segments"] for w in s["words"])


def last_update_before(messages: list[dict], index: int) -> dict:
    return [m for m in messages[:index] if "segments" in m][-1]


@pytest.fixture(scope="module")
def session(server):
    parts = speech_or_skip(2)
    speech = joined(parts, gap_s=GAP_S)
    first_gap = parts[0].seconds + GAP_S / 2  # mid-pause: no utterance is cut
    barriers = [
        (first_gap, {"checkpoint_id": "after-first"}),
        (first_gap + 0.1, {"event_id": "ev-7", "object": "stt.input.trace", "trace_id": "t-1"}),
    ]
    streamed = asyncio.run(
        stream(server.ws, speech.pcm16(), query=QUERY, chunk_ms=50, barriers=barriers)
    )
    return parts, speech, streamed


def test_transcript_matches_the_reference(session):
    _, speech, streamed = session
    assert wer(speech.text, streamed.transcript) <= 0.35, (speech.text, streamed.transcript)
    # a client that replaces its state with each update reads the same words
    last = streamed.updates[-1]
    assert last["text"] == streamed.transcript
    assert len(streamed.segments) >= 2  # one segment per utterance


def test_order_updates_then_the_final_echo_and_the_client_closes(session):
    _, _, streamed = session
    messages = streamed.messages
    assert "segments" in messages[0]  # no greeting
    assert messages[-1] == {"checkpoint_id": "final"}  # its own message, and the last
    assert all_final(last_update_before(messages, len(messages) - 1))
    assert streamed.client_closed and streamed.close_code == 1000
    assert not [m for m in messages if "error" in m]


def test_mid_stream_barriers_follow_the_transcript_of_the_audio_before_them(session):
    parts, _, streamed = session
    messages = streamed.messages
    checkpoint = streamed.echo_index("checkpoint_id", "after-first")
    trace = streamed.echo_index("trace_id", "t-1")
    assert messages[checkpoint] == {"checkpoint_id": "after-first"}
    assert messages[trace] == {"event_id": "ev-7", "object": "stt.output.trace", "trace_id": "t-1"}
    assert checkpoint < trace < len(messages) - 1
    before = last_update_before(messages, checkpoint)
    assert all_final(before)  # everything said before the checkpoint is final
    text = " ".join(s["text"] for s in before["segments"])
    assert wer(parts[0].text, text) <= 0.35, (parts[0].text, text)
    later = [m for m in messages[checkpoint:] if "segments" in m]
    assert later and len(later[-1]["segments"]) > len(before["segments"])


def test_segments_are_the_full_list_with_integer_ids_revised_in_place(session):
    _, _, streamed = session
    seen: dict[int, dict] = {}
    finished: dict[int, dict] = {}
    for update in streamed.updates:
        ids = [s["id"] for s in update["segments"]]
        assert all(type(i) is int for i in ids)
        assert ids == list(range(len(ids)))  # every segment so far, in order, from 0
        assert set(seen) <= set(ids)
        for s in update["segments"]:
            assert s["text"] == " ".join(w["word"] for w in s["words"])
            if s["id"] in finished:
                assert s == finished[s["id"]]  # a finished segment never changes again
            elif s["words"] and s["words"][-1]["is_final"]:
                finished[s["id"]] = s
            seen[s["id"]] = s
        assert update["text"] == " ".join(s["text"] for s in update["segments"])
        assert update["words"] == [w for s in update["segments"] for w in s["words"]]
    # interim updates exist: the last word of the last segment still tentative
    assert any(not u["segments"][-1]["words"][-1]["is_final"] for u in streamed.updates)


def test_field_types_and_units(session):
    _, speech, streamed = session
    for update in streamed.updates:
        assert update["task"] == "transcribe" and update["language"] == "en"
        for s in update["segments"]:
            assert isinstance(s["start"], float | int) and isinstance(s["end"], float | int)
            assert 0 <= s["start"] <= s["end"] <= speech.seconds + 0.5  # seconds
            for w in s["words"]:
                assert isinstance(w["word"], str) and isinstance(w["is_final"], bool)
                assert 0.0 <= w["probability"] <= 1.0
                assert w["hallucination_score"] == 0.0 and w["language"] == "en"
                assert s["start"] <= w["start"] <= w["end"] <= s["end"]
    starts = [s["start"] for s in streamed.updates[-1]["segments"]]
    assert starts == sorted(starts)


def test_the_server_saw_a_terminated_session(session, server):
    listed = httpx.get(f"{server.http}/v1/sessions", timeout=10).json()["sessions"]
    ours = [s for s in listed if s["protocol"] == "fireworks"]
    assert ours and ours[0]["end_reason"] == "terminated"
    assert ours[0]["params"]["turn"]["prompt"] == "A reading from a novel."


# ------------------------------------------------------------------ without speech


async def test_barriers_in_silence_are_echoed_at_once_and_clear_starts_afresh(server):
    silence = bytes(32000)  # 1 s
    streamed = await stream(
        server.ws,
        silence,
        query="",
        speed=4.0,
        barriers=[
            (0.2, {"checkpoint_id": 1}),
            (0.4, {"object": "stt.state.clear", "reset_id": "r-1"}),
        ],
        final={"event_id": "end", "object": "stt.input.trace", "trace_id": "final"},
    )
    assert streamed.messages == [
        {"checkpoint_id": 1},
        {
            "event_id": streamed.messages[1]["event_id"],
            "object": "stt.state.cleared",
            "reset_id": "r-1",
        },
        {"event_id": "end", "object": "stt.output.trace", "trace_id": "final"},
    ]
    assert streamed.close_code == 1000


# ------------------------------------------------------------------ bad input


async def refused(base: str, query: str, headers: dict | None = None) -> tuple[int, dict]:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(
            f"{base}{PATH}?{query}", additional_headers=headers or {}, open_timeout=10
        ):
            pass
    response = info.value.response
    return response.status_code, json.loads(response.body)


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("language=xx", "language"),
        ("temperature=1.5", "temperature"),  # 0-1 is accepted (decoded deterministically)
        ("skip_vad=true", "skip_vad"),
        ("timestamp_granularities=letter", "timestamp_granularities"),
        ("sample_rate=8000", "16000"),
        ("vad_kwargs=%7B%22speech_pad_ms%22%3A30%7D", "speech_pad_ms"),
    ],
)
async def test_bad_or_unbuilt_parameters_are_refused_before_the_upgrade(server, query, needle):
    status, body = await refused(server.ws, query)
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert needle in body["error"]["message"]


async def error_close(server, frames: list) -> tuple[list[dict], int | None, str]:
    messages: list[dict] = []
    async with websockets.connect(f"{server.ws}{PATH}", open_timeout=10) as ws:
        for frame in frames:
            await ws.send(frame)
        try:
            while True:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        except ConnectionClosed:
            pass
    return messages, ws.close_code, ws.close_reason


@pytest.mark.parametrize(
    ("frames", "code", "needle"),
    [
        (["not json"], 1003, "Invalid JSON"),
        (['{"object": "stt.translate"}'], 1003, "stt.translate"),
        (['{"checkpoint_id": {"a": 1}}'], 1003, "checkpoint_id"),
        ([bytes(32000 * 6)], 1009, "too long"),
    ],
)
async def test_bad_messages_get_the_error_object_and_a_close_code(server, frames, code, needle):
    messages, got, reason = await error_close(server, frames)
    assert got == code and needle in reason
    [error] = [m for m in messages if "error" in m]
    assert needle in error["error"]["message"] and error["error"]["code"] == code


# ------------------------------------------------------------------ keys


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A server that requires keys (shared with the v2 tests), and its key."""
    return keyed_server(tmp_path_factory.getbasetemp() / "keyed-server")


async def test_no_or_wrong_key_is_refused_with_401(keyed):
    server, _ = keyed
    status, body = await refused(server.ws, "language=en")
    assert status == 401 and body["error"]["type"] == "unauthorized"
    assert "Authorization" in body["error"]["message"]
    status, _ = await refused(server.ws, "language=en", {"Authorization": "sk_nope"})
    assert status == 401


@pytest.mark.parametrize("where", ["raw header", "bearer header", "query"])
async def test_the_key_as_fireworks_clients_send_it(keyed, where):
    server, key = keyed
    headers = {"Authorization": key} if where == "raw header" else {}
    if where == "bearer header":
        headers = {"Authorization": f"Bearer {key}"}
    query = f"Authorization={key}" if where == "query" else ""
    streamed = await stream(server.ws, bytes(6400), query=query, headers=headers, speed=4.0)
    assert streamed.messages == [{"checkpoint_id": "final"}]
    assert streamed.close_code == 1000

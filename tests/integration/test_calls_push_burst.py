"""The push socket when finals come in a burst: a call's last turns are flushed together at its
end, and the customer's connection drops right after it has read the first of them.

Everything written to a socket that then drops without a close frame may sit unread in the
customer's buffers; the pusher keeps one frame in flight (the next goes only after the pong of
the one before) and sends that one again on the next connection: nothing is lost, and only that
frame can arrive twice. The customer is the same real WebSocket server the call tests use, on
loopback."""

from __future__ import annotations

import asyncio

from test_calls import Consumer, finals

from streamscribe.server.calls.push import TranscriptPusher


def _final(n: int) -> dict:
    return {
        "kind": "TranscriptionData",
        "transcriptionData": {"resultStatus": "Final", "text": f"turn {n}", "offset": n},
    }


async def test_a_burst_of_finals_survives_a_drop_after_the_first_is_read():
    consumer = await Consumer(drop_after_finals=1, down_s=0.3).start()
    states: list[str] = []

    async def on_state(name, failure):
        states.append(name)

    pusher = TranscriptPusher(
        consumer.url, {}, lambda: {"kind": "TranscriptionMetadata"}, 10.0, on_state
    )
    pusher.start()
    for _ in range(100):  # connected before the burst
        if pusher.connected:
            break
        await asyncio.sleep(0.02)
    for n in range(12):  # the whole burst is queued at once
        pusher.submit(_final(n), final=True)
    await pusher.close(timeout=30)
    await consumer.stop()

    assert len(consumer.connections) == 2, states
    first, second = ([f["offset"] for f in finals(c)] for c in consumer.connections)
    assert first and second
    # every final, in order; only the one in flight at the drop may come again, first thing
    assert first + [n for n in second if n not in first] == list(range(12))
    assert second[0] in (first[-1], first[-1] + 1)
    assert len(first) + len(second) - 12 <= 1
    assert pusher.delivered >= 12 and pusher.pending == 0
    assert states == ["connected", "reconnected", "closed"]


async def test_a_server_that_hangs_up_during_the_handshake_is_tried_again():
    # a customer's server restarting: for a moment its port accepts and hangs up before any
    # HTTP answer (what a websockets server does to a connection arriving while it closes)
    async def hang_up(reader, writer):
        writer.close()

    flaky = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = flaky.sockets[0].getsockname()[1]
    states: list[str] = []

    async def on_state(name, failure):
        states.append(name if failure is None else f"{name}: {failure.message}")

    pusher = TranscriptPusher(
        f"ws://127.0.0.1:{port}/acs", {}, lambda: {"kind": "TranscriptionMetadata"}, 10.0, on_state
    )
    pusher.start()
    await asyncio.sleep(0.8)  # a few hung-up attempts
    assert states == [] and pusher.failure is None
    flaky.close()
    await flaky.wait_closed()
    consumer = await Consumer(port=port).start()
    for _ in range(200):
        if pusher.connected:
            break
        await asyncio.sleep(0.02)
    pusher.submit(_final(0), final=True)
    await pusher.close(timeout=10)
    await consumer.stop()
    assert states == ["connected", "closed"]
    assert [f["offset"] for f in finals(consumer.frames)] == [0]


async def test_a_server_that_keeps_hanging_up_fails_after_the_reconnect_window():
    async def hang_up(reader, writer):
        writer.close()

    flaky = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = flaky.sockets[0].getsockname()[1]
    failures = []

    async def on_state(name, failure):
        failures.append(failure)

    pusher = TranscriptPusher(
        f"ws://127.0.0.1:{port}/acs", {}, lambda: {"kind": "TranscriptionMetadata"}, 1.0, on_state
    )
    pusher.submit(_final(0), final=True)
    pusher.start()
    await pusher.close(timeout=10)  # waits out the reconnect window for the pending final
    flaky.close()
    [failure] = failures
    assert failure.details == "streamConnectionUnsuccessful" and failure.sub_code == 8501
    assert "hung up during the WebSocket handshake" in failure.message
    assert "tried for 1." in failure.message

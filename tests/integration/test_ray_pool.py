"""The shared decode pool on a real local Ray cluster (two Ray nodes in this box, CPU only).

Two front-end server processes (`serve --decoder ray`) and two decode replicas (`pool up`)
serve four streams of real speech; killing a replica mid-stream loses no turn; a front-end
refuses to start against a pool that is not there, naming the fix; when the pool goes away,
`/readyz` says so, an open session gets an Error and keeps its stored turns. One module, one
cluster (module-scoped fixtures), tiny.en, short clips: the whole module runs in a few minutes
on two cores. Skips when `ray` is not installed (pip install 'streamscribe[pool]').
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from conftest import RunningServer, start_server
from speech import Speech, joined, speech_or_skip, wer
from websockets.exceptions import ConnectionClosed

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'streamscribe[pool]'")
pytest.importorskip("ray.serve", reason="ray[serve] is not installed")

RATE = 16000
CHUNK = 3200  # 100 ms of 16-bit mono
APP = "streamscribe-test"
RAY_ENV = {
    "RAY_DISABLE_USAGE_STATS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """Two Ray nodes of one CPU each; yields the head's address; shuts everything down."""
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    node = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
    c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        c.add_node(**node)
        c.wait_for_nodes()
        ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
        yield c.address
    finally:
        with contextlib.suppress(Exception):
            from ray import serve

            serve.shutdown()
        ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamscribe", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **RAY_ENV},
    )


@pytest.fixture(scope="module")
def pool(cluster: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two tiny.en replicas (one per node) started by `streamscribe pool up`."""
    data = tmp_path_factory.mktemp("pool-data")
    done = _cli(
        "pool", "up", "--ray-address", cluster, "--app-name", APP, "--replicas", "2",
        "--cpu-threads", "1", "--data-dir", str(data), "--max-batch-size", "8",
        "--start-timeout", "240",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "running" in done.stderr and "2 replica" in done.stderr, done.stderr[-2000:]
    return cluster


@pytest.fixture(scope="module")
def front_ends(
    pool: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[RunningServer]]:
    servers: list[RunningServer] = []
    try:
        for i in range(2):
            servers.append(
                start_server(
                    tmp_path_factory.mktemp(f"front-end-{i}"),
                    "--decoder",
                    "ray",
                    "--ray-address",
                    pool,
                    "--ray-app-name",
                    APP,
                    "--cpu-threads",
                    "1",
                    env={**RAY_ENV, "STREAMSCRIBE_MULTILINGUAL_MODEL": ""},
                )  # fmt: skip
            )
        yield servers
    finally:
        for s in servers:
            s.process.terminate()
        for s in servers:
            try:
                s.process.wait(20)
            except subprocess.TimeoutExpired:
                s.process.kill()


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def stream(
    server: RunningServer,
    audio: np.ndarray,
    pace_s: float = 0.0,
    on_message: Callable[[dict], None] | None = None,
) -> tuple[list[dict], int | None]:
    """Send `audio` (+1 s of silence) in 100 ms chunks, `pace_s` apart; Terminate; read all."""
    url = f"{server.ws}/v3/ws?sample_rate=16000"
    async with websockets.connect(url, open_timeout=30) as ws:
        messages: list[dict] = []

        async def read() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for raw in ws:
                    message = json.loads(raw)
                    messages.append(message)
                    if on_message is not None:
                        on_message(message)

        reader = asyncio.create_task(read())
        pcm = pcm16(np.concatenate([audio, np.zeros(RATE, dtype=np.float32)]))
        with contextlib.suppress(ConnectionClosed):
            for i in range(0, len(pcm), CHUNK):
                await ws.send(pcm[i : i + CHUNK].ljust(CHUNK, b"\0"))
                if pace_s:
                    await asyncio.sleep(pace_s)
            await ws.send(json.dumps({"type": "Terminate"}))
        await asyncio.wait_for(reader, 180)
        return messages, ws.close_code


def final_text(messages: list[dict]) -> str:
    return " ".join(
        m["transcript"] for m in messages if m.get("type") == "Turn" and m["end_of_turn"]
    )


def replica_names() -> list[str]:
    from ray.util import list_named_actors

    return sorted(
        a["name"]
        for a in list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{APP}#")
    )


async def test_two_front_ends_and_two_replicas_serve_four_streams(front_ends):
    clips = speech_or_skip(4)
    assert len(replica_names()) == 2
    jobs = [stream(front_ends[i % 2], clips[i % len(clips)].audio) for i in range(4)]
    outcomes = await asyncio.gather(*jobs)
    for i, (messages, code) in enumerate(outcomes):
        reference = clips[i % len(clips)].text
        assert code == 1000, messages[-2:]
        assert not [m for m in messages if m.get("type") == "Error"], messages[-2:]
        hypothesis = final_text(messages)
        assert wer(reference, hypothesis) <= 0.35, (reference, hypothesis)
    for server in front_ends:  # each front-end decoded through the pool
        assert server.metrics()["decode_requests"] > 2
        ready = httpx.get(server.http + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text


async def test_killing_a_replica_mid_stream_loses_no_turn(front_ends):
    speech: Speech = joined(speech_or_skip(3))
    victims = replica_names()
    assert len(victims) == 2
    started = asyncio.Event()

    def watch(message: dict) -> None:
        if message.get("type") == "Turn" and message.get("transcript"):
            started.set()

    async def kill_when_started() -> None:
        await asyncio.wait_for(started.wait(), 120)
        ray.kill(ray.get_actor(victims[0], namespace="serve"), no_restart=True)

    killer = asyncio.create_task(kill_when_started())
    # paced at ~4x real time so that the stream is still running when the replica dies
    jobs = [stream(s, speech.audio, pace_s=0.025, on_message=watch) for s in front_ends]
    outcomes = await asyncio.gather(*jobs)
    await killer
    assert victims[0] not in replica_names()
    for messages, code in outcomes:
        assert code == 1000, messages[-2:]
        assert not [m for m in messages if m.get("type") == "Error"], messages[-2:]
        hypothesis = final_text(messages)
        assert wer(speech.text, hypothesis) <= 0.35, (speech.text, hypothesis)


def pool_restored() -> bool:
    """Two replicas RUNNING, both named, and the application reported RUNNING again."""
    from streamscribe.pool.client import app_status

    status, _, running = app_status(APP)
    return status == "RUNNING" and running >= 2 and len(replica_names()) >= 2


def busiest_replica(timeout_s: float = 20.0) -> str:
    """The replica with the most requests in flight, asked the way Serve's router asks
    (`get_num_ongoing_requests` on the replica actor); waits until one has any."""
    deadline = time.monotonic() + timeout_s
    while True:
        names = replica_names()
        actors = [ray.get_actor(n, namespace="serve") for n in names]
        try:
            probes = [a.get_num_ongoing_requests.remote() for a in actors]
        except AttributeError:  # a Ray without that internal method: the first, as before
            return names[0]
        counts = ray.get(probes, timeout=10)
        if max(counts) > 0:
            return names[counts.index(max(counts))]
        busy = dict(zip(names, counts, strict=True))
        assert time.monotonic() < deadline, f"no replica took the batch: {busy}"
        time.sleep(0.1)


def test_requests_in_flight_on_a_killed_replica_are_retried_on_another(front_ends):
    """The pool client itself: a batch in flight on both replicas, one replica killed."""
    from streamscribe.engine.decoding import DecodeRequest
    from streamscribe.pool.client import RayPoolTranscriber

    clip = speech_or_skip(1)[0]
    requests = [DecodeRequest(clip.audio, final=i % 2 == 0) for i in range(16)]
    failovers = 0
    # the replica killed is the one with requests in flight (the router may hand the whole batch
    # to one replica); if they all finished before the kill landed, try again, up to 3 times
    for _attempt in range(3):
        deadline = time.monotonic() + 120  # Serve replaces the replica killed before
        while not pool_restored():
            assert time.monotonic() < deadline, "Serve did not restore the second replica"
            time.sleep(0.5)
        transcriber = RayPoolTranscriber(APP, model="tiny.en")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batch = pool.submit(transcriber.transcribe_batch, requests)
            victim = busiest_replica()  # the one the router gave requests (decoding takes seconds)
            assert not batch.done()
            ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
            results = batch.result(timeout=180)
        assert len(results) == len(requests)  # whatever happened, every request came back
        for result in results:
            assert wer(clip.text, result.text) <= 0.35, (clip.text, result.text)
        failovers = transcriber.failovers
        if failovers:
            break
    assert failovers >= 1, "no request was ever in flight on the killed replica"


def test_a_front_end_for_a_pool_that_is_not_there_refuses_to_start_naming_the_fix(
    pool: str, tmp_path: Path
):
    started = time.monotonic()
    done = _cli(
        "serve", "--port", "1", "--data-dir", str(tmp_path), "--decoder", "ray",
        "--ray-address", pool, "--ray-app-name", "no-such-pool",
        timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "no decode pool 'no-such-pool'" in done.stderr, done.stderr[-2000:]
    assert "streamscribe pool up" in done.stderr
    assert time.monotonic() - started < 90


async def test_a_pool_gone_mid_session_ends_it_with_an_error_and_keeps_its_turns(
    pool: str, front_ends
):
    """Last: removes the pool. /readyz turns not-ready; the turns stored so far are kept."""
    server = front_ends[0]
    clips = speech_or_skip(2)
    first_final = asyncio.Event()
    begin: dict = {}

    def watch(message: dict) -> None:
        if message.get("type") == "Begin":
            begin.update(message)
        if message.get("type") == "Turn" and message["end_of_turn"] and message["transcript"]:
            first_final.set()

    async def remove_pool_after_first_turn() -> None:
        await asyncio.wait_for(first_final.wait(), 120)
        done = await asyncio.to_thread(
            _cli, "pool", "down", "--ray-address", pool, "--app-name", APP
        )
        assert done.returncode == 0, done.stderr[-2000:]

    gap = np.zeros(int(2.0 * RATE), dtype=np.float32)
    # long enough to outlast `pool down` on a loaded machine; the server's error ends the sending
    tail = np.concatenate([clips[1].audio] * 8)
    audio = np.concatenate([clips[0].audio, gap, tail])
    remover = asyncio.create_task(remove_pool_after_first_turn())
    messages, _ = await stream(server, audio, pace_s=0.1, on_message=watch)
    await remover
    errors = [m for m in messages if m.get("type") == "Error"]
    assert errors and "speech model failed" in errors[0]["error"], messages[-3:]
    assert final_text(messages), messages
    stored = httpx.get(f"{server.http}/v1/sessions/{begin['id']}", timeout=10).json()
    assert stored["turns"] and stored["turns"][0]["text"], stored
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = httpx.get(server.http + "/readyz", timeout=10)
        if ready.status_code == 503:
            break
        await asyncio.sleep(0.5)
    assert ready.status_code == 503 and "decode pool" in ready.json()["reason"], ready.text

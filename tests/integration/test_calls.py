"""Call transcription end to end against the real server: a real two-party recording split into
two unmixed 8 kHz mu-law participant streams, sent as ACS media frames (20 ms packets, silent
packets, a few lost ones); transcripts pushed in the ACS format to a Python consumer socket;
callbacks received as CloudEvents; per-participant text checked against the reference.

The helpers here (the call, the media sender, the consumer, the callback sink) are also used by
`test_calls_node.py` and `test_calls_bad_input.py`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from speech import SHARED_EVAL, wer
from websockets.exceptions import ConnectionClosed

from streamscribe.audio.codecs import encode_mulaw
from streamscribe.audio.files import decode_file

RATE = 8000
PACKET = 160  # 20 ms of 8 kHz mu-law
CALLER = "4:+15551230001"
AGENT = "8:acs:11111111-2222-3333-4444-555555555555_00000000-0000-0000-0000-0000000000a1"
T0_MS = 1_750_000_000_000  # when the call's first packet was captured (epoch ms)
TICKS = 10_000_000  # per second
# per-participant WER bound: 8 kHz mu-law real speech, each participant only ~30-80 words, and
# streaming finals vary with decode timing on a loaded machine (measured 0.12-0.40 across runs)
PHONE_WER = 0.45
SILENT = encode_mulaw(np.zeros(PACKET, dtype=np.float32))


# ---------------------------------------------------------------------------- the call


@dataclass(frozen=True)
class TwoPartyCall:
    streams: dict[str, bytes]  # participantRawID -> 8 kHz mu-law, same length
    turns: list[dict]  # {participant, start, end, text} in seconds

    @property
    def seconds(self) -> float:
        return len(next(iter(self.streams.values()))) / RATE

    def reference(self, participant: str) -> str:
        return " ".join(t["text"] for t in self.turns if t["participant"] == participant)


def two_party_call(max_s: float = 40.0, index: int = 2) -> TwoPartyCall:
    """A two-speaker conversation of ../shared/eval/dev, one stream per speaker (its own turns,
    silence elsewhere), cut after the last turn ending before `max_s`."""
    manifest = SHARED_EVAL / "dev" / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip("../shared/eval/dev is absent: no two-party recording to call with")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["kind"] == "conversation"]
    row = rows[min(index, len(rows) - 1)]
    audio = decode_file(SHARED_EVAL / "dev" / row["audio"], RATE)
    turns = [t for t in row["turns"] if t["end"] <= max_s]
    end = int((turns[-1]["end"] + 1.5) * RATE)
    end += -end % PACKET
    audio = np.pad(audio, (0, max(0, end - len(audio))))
    ids = dict(zip(sorted({t["speaker"] for t in turns}), (CALLER, AGENT), strict=False))
    own = {pid: np.zeros(end, dtype=np.float32) for pid in ids.values()}
    for t in turns:
        a, b = int(t["start"] * RATE), min(end, int(t["end"] * RATE) + 1)
        own[ids[t["speaker"]]][a:b] = audio[a:b]
    return TwoPartyCall(
        {pid: encode_mulaw(x) for pid, x in own.items()},
        [
            {
                "participant": ids[t["speaker"]],
                "start": t["start"],
                "end": t["end"],
                "text": t["text"],
            }
            for t in turns
        ],
    )


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def media_frames(
    call: TwoPartyCall, lost: frozenset[tuple[str, int]] = frozenset()
) -> list[tuple[float, str]]:
    """(call-clock seconds, frame) for AudioMetadata and every 20 ms AudioData packet of each
    participant, interleaved as a bridge sends them; packets in `lost` are left out."""
    meta = {
        "subscriptionId": str(uuid.uuid4()),
        "encoding": "PCMU",
        "sampleRate": RATE,
        "channels": 1,
        "length": PACKET,
    }
    frames = [(0.0, json.dumps({"kind": "AudioMetadata", "audioMetadata": meta}))]
    n = len(next(iter(call.streams.values()))) // PACKET
    for i in range(n):
        for pid, data in call.streams.items():
            if (pid, i) in lost:
                continue
            chunk = data[i * PACKET : (i + 1) * PACKET]
            packet = {
                "timestamp": iso(T0_MS + 20 * i),
                "participantRawID": pid,
                "data": base64.b64encode(chunk).decode(),
                "silent": chunk == SILENT,
            }
            frames.append((i * 0.02, json.dumps({"kind": "AudioData", "audioData": packet})))
    return frames


async def send_media(
    url: str, frames: list[tuple[float, str]], speed: float = 3.0, jitter_ms: float = 0.0
) -> float:
    """Open the media socket, send the frames paced at `speed` times real time (with random
    send jitter), close; returns the monotonic time at which call-clock zero was sent."""
    async with websockets.connect(url, open_timeout=30, max_queue=None) as ws:
        return await send_frames(ws, frames, speed, jitter_ms=jitter_ms)


async def send_frames(
    ws, frames: list[tuple[float, str]], speed: float, start: float | None = None, jitter_ms=0.0
) -> float:
    """Send (call-clock seconds, frame) pairs on an open socket at `speed` times real time;
    `start` is the monotonic time of call-clock zero (default: now, for the first frame)."""
    rng = np.random.default_rng(7)
    if start is None:
        start = time.monotonic() - (frames[0][0] / speed if frames else 0.0)
    for at, text in frames:
        late = rng.uniform(0, jitter_ms) / 1000 if jitter_ms else 0.0
        delay = at / speed + late - (time.monotonic() - start)
        if delay > 0.002:
            await asyncio.sleep(delay)
        await ws.send(text)
    return start


# ---------------------------------------------------------------------------- the customer


@dataclass
class Consumer:
    """The customer's WebSocket server: every frame of every connection, with arrival times.

    With `drop_after_finals`, the first connection is cut (no close frame) after that many
    Final results and the server stays down for `down_s` (connections refused), then returns."""

    drop_after_finals: int | None = None
    down_s: float = 0.0
    stay_down: bool = False
    connections: list[list[tuple[float, dict]]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _server: Any = None

    async def start(self) -> Consumer:
        # a consumer that drops after reading N finals reads no further ahead than its handler
        # (max_queue=0): what it "read" is what its WebSocket stack acknowledged with a pong
        queue = 0 if self.drop_after_finals is not None else 16
        self._server = await websockets.serve(self._handle, "127.0.0.1", self.port, max_queue=queue)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/acs"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, ws) -> None:
        frames: list[tuple[float, dict]] = []
        self.connections.append(frames)
        self.headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                frames.append((time.monotonic(), json.loads(raw)))
                if (
                    self.drop_after_finals is not None
                    and len(self.connections) == 1
                    and len(finals(frames)) >= self.drop_after_finals
                ):
                    ws.transport.abort()  # the network drops: no close frame
                    asyncio.get_running_loop().create_task(self._outage())
                    return
        self.closed.set()

    async def _outage(self) -> None:
        await self.stop()
        if self.stay_down:
            return
        await asyncio.sleep(self.down_s)
        await self.start()

    @property
    def frames(self) -> list[dict]:
        return [m for conn in self.connections for _, m in conn]


def finals(frames: list) -> list[dict]:
    out = []
    for f in frames:
        m = f[1] if isinstance(f, tuple) else f
        if m["kind"] == "TranscriptionData" and m["transcriptionData"]["resultStatus"] == "Final":
            out.append(m["transcriptionData"])
    return out


class CallbackSink:
    """The customer's callback endpoint: a bare HTTP server answering `status` to every POST."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.events: list[dict] = []
        self.bodies: list[Any] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> CallbackSink:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callbacks"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            if not head.startswith("POST "):  # a plain web server answers anything else too
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = json.loads(await reader.readexactly(length))
            self.bodies.append(body)
            if self.status < 300:
                self.events.extend(body)
            status = f"HTTP/1.1 {self.status} X\r\n"
            writer.write(f"{status}Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        writer.close()

    def kinds(self) -> list[str]:
        return [e["type"].removeprefix("Microsoft.Communication.") for e in self.events]

    async def wait_for(self, kind: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e["type"] == f"Microsoft.Communication.{kind}":
                    return e
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {kind} callback within {timeout} s: got {self.kinds()}")


async def create_job(http: httpx.AsyncClient, transport_url: str, **extra: Any) -> dict:
    options = {
        "transportType": "websocket",
        "transportUrl": transport_url,
        "locale": "en-US",
        "startTranscription": True,
        "enableIntermediateResults": False,
        **extra.pop("options", {}),
    }
    body = {"callConnectionId": str(uuid.uuid4()), "transcriptionOptions": options, **extra}
    response = await http.post("/v1/calls", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def wait_status(http: httpx.AsyncClient, call_id: str, status: str, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = (await http.get(f"/v1/calls/{call_id}")).json()
        if job["status"] == status:
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job never reached {status!r}: {job}")


def check_cloud_event(event: dict, call_id: str) -> None:
    assert set(event) >= {"id", "source", "type", "time", "specversion", "data"}
    assert event["specversion"] == "1.0"
    assert event["type"].startswith("Microsoft.Communication.Transcription")
    data = event["data"]
    assert data["callConnectionId"] == call_id
    assert isinstance(data["serverCallId"], str) and isinstance(data["correlationId"], str)
    assert set(data["transcriptionUpdate"]) == {"transcriptionStatus", "transcriptionStatusDetails"}
    info = data["resultInformation"]
    assert isinstance(info["code"], int) and isinstance(info["subCode"], int)
    assert isinstance(info["message"], str) and info["message"]


def check_transcription_data(data: dict) -> None:
    """Exactly the documented fields, names, casing and JSON types."""
    assert set(data) == {
        "text",
        "format",
        "confidence",
        "offset",
        "duration",
        "words",
        "participantRawID",
        "resultStatus",
    }
    assert data["format"] == "display"
    assert data["resultStatus"] in ("Final", "Intermediate")
    assert isinstance(data["text"], str) and data["text"].strip()
    assert isinstance(data["confidence"], float) and 0.0 <= data["confidence"] <= 1.0
    for key in ("offset", "duration"):
        assert type(data[key]) is int and data[key] >= 0
    assert data["participantRawID"] in (CALLER, AGENT)
    assert isinstance(data["words"], list) and data["words"]
    for w in data["words"]:
        assert set(w) == {"text", "offset", "duration"}
        assert type(w["offset"]) is int and type(w["duration"]) is int
        assert w["text"] == w["text"].lower() and w["text"].strip()


# ---------------------------------------------------------------------------- the main call


@pytest.fixture(scope="module")
def pushed_call(server):
    """One real call: two participants, mu-law, intermediate results on, a few lost packets."""
    call = two_party_call(max_s=34.0)
    lost = frozenset({*((CALLER, i) for i in range(300, 310)), (AGENT, 40)})

    async def run():
        consumer = await Consumer().start()
        sink = await CallbackSink().start()
        async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
            job = await create_job(
                http,
                consumer.url,
                callbackUri=sink.url,
                operationContext="call-1",
                transportBearerToken="customer-secret",
                options={"enableIntermediateResults": True},
            )
            await send_media(
                server.ws + job["mediaUrl"], media_frames(call, lost), speed=2.5, jitter_ms=15
            )
            ended = await wait_status(http, job["callConnectionId"], "ended")
            await sink.wait_for("TranscriptionStopped")
            session = (await http.get(f"/v1/sessions/{ended['sessionId']}")).json()
        await consumer.stop()
        await sink.stop()
        return job, ended, consumer, sink, session

    return call, *asyncio.run(run())


def test_metadata_comes_first_once_with_the_call_ids(pushed_call):
    call, job, ended, consumer, sink, session = pushed_call
    assert len(consumer.connections) == 1
    frames = [m for _, m in consumer.connections[0]]
    assert frames[0] == {
        "kind": "TranscriptionMetadata",
        "transcriptionMetadata": {
            "subscriptionId": job["subscriptionId"],
            "locale": "en-US",
            "callConnectionId": job["callConnectionId"],
            "correlationId": job["correlationId"],
        },
    }
    assert all(m["kind"] == "TranscriptionData" for m in frames[1:])
    assert set(frames[1]) == {"kind", "transcriptionData"}
    headers = consumer.headers[0]
    assert headers["authorization"] == "Bearer customer-secret"
    assert headers["x-ms-call-connection-id"] == job["callConnectionId"]
    assert headers["x-ms-call-correlation-id"] == job["correlationId"]


def test_every_result_has_exactly_the_documented_fields(pushed_call):
    _, _, _, consumer, _, _ = pushed_call
    data = [m["transcriptionData"] for m in consumer.frames[1:]]
    assert any(d["resultStatus"] == "Intermediate" for d in data)
    for d in data:
        check_transcription_data(d)


def test_each_participant_is_transcribed_from_its_own_stream(pushed_call):
    call, *_, consumer, _, _ = pushed_call
    results = finals(consumer.frames)
    for pid in (CALLER, AGENT):
        text = " ".join(r["text"] for r in results if r["participantRawID"] == pid)
        assert wer(call.reference(pid), text) <= PHONE_WER, (pid, call.reference(pid), text)


def test_offsets_are_ticks_on_the_call_clock_within_the_speakers_turns(pushed_call):
    call, *_, consumer, _, _ = pushed_call
    for r in finals(consumer.frames):
        start, end = r["offset"] / TICKS, (r["offset"] + r["duration"]) / TICKS
        own = [t for t in call.turns if t["participant"] == r["participantRawID"]]
        assert any(t["start"] - 1.0 <= start and end <= t["end"] + 1.0 for t in own), (r, own)
        for w in r["words"]:
            assert start - 1.0 <= w["offset"] / TICKS <= end + 0.5


def test_intermediate_results_share_the_offset_of_their_final_and_finals_are_unique(pushed_call):
    _, _, _, consumer, _, _ = pushed_call
    data = [m["transcriptionData"] for m in consumer.frames[1:]]
    keys = [(d["participantRawID"], d["offset"]) for d in data if d["resultStatus"] == "Final"]
    assert len(keys) == len(set(keys))
    for d in data:
        if d["resultStatus"] == "Intermediate":
            assert (d["participantRawID"], d["offset"]) in keys, d


def test_the_store_holds_every_final_and_the_recording(pushed_call):
    call, _, ended, consumer, _, session = pushed_call
    turns = session["turns"]
    pushed = finals(consumer.frames)
    assert len(turns) == len(pushed) == ended["results"]["final"]
    assert {t["speaker"] for t in turns} == {CALLER, AGENT}
    assert sorted(t["text"] for t in turns) == sorted(r["text"] for r in pushed)
    assert ended["media"]["gapsFilled"] >= 1  # the lost packets were filled with silence
    assert abs(ended["media"]["audioSeconds"] - call.seconds) < 0.5
    assert ended["delivery"]["delivered"] == len(consumer.frames) - 1
    assert ended["delivery"]["pending"] == 0


def test_callbacks_are_cloud_events_started_then_stopped(pushed_call):
    _, job, _, _, sink, _ = pushed_call
    assert sink.kinds() == ["TranscriptionStarted", "TranscriptionStopped"]
    assert all(isinstance(b, list) and len(b) == 1 for b in sink.bodies)
    for event in sink.events:
        check_cloud_event(event, job["callConnectionId"])
        assert event["data"]["operationContext"] == "call-1"
    started, stopped = sink.events
    assert started["data"]["transcriptionUpdate"] == {
        "transcriptionStatus": "transcriptionStarted",
        "transcriptionStatusDetails": "subscriptionStarted",
    }
    assert stopped["data"]["transcriptionUpdate"]["transcriptionStatus"] == "transcriptionStopped"
    assert started["data"]["resultInformation"]["code"] == 200


def metadata_frame(encoding: str = "PCM", rate: int = 16000) -> str:
    meta = {"subscriptionId": str(uuid.uuid4()), "encoding": encoding, "sampleRate": rate}
    return json.dumps({"kind": "AudioMetadata", "audioMetadata": {**meta, "channels": 1}})


def mono_frames(
    data: bytes,
    *,
    participant: str | None = None,
    bytes_per_packet: int = 640,
    first_packet: int = 0,
) -> list[tuple[float, str]]:
    """AudioData frames (20 ms each, from packet number `first_packet` on the call clock) for
    one stream; no participantRawID means mixed audio."""
    frames = []
    for k, i in enumerate(range(0, len(data), bytes_per_packet)):
        n = first_packet + k
        packet: dict[str, Any] = {
            "timestamp": iso(T0_MS + 20 * n),
            "data": base64.b64encode(data[i : i + bytes_per_packet]).decode(),
            "silent": False,
        }
        if participant is not None:
            packet["participantRawID"] = participant
        frames.append((n * 0.02, json.dumps({"kind": "AudioData", "audioData": packet})))
    return frames

"""N simultaneous two-party calls in real time: ACS media in (8 kHz mu-law, unmixed), ACS push out.

Why this exists: a contact center cares about two numbers: how long after a participant stops
speaking their words reach its own socket, and how many calls one machine keeps up with. Each
call is a real two-speaker conversation of the dev set split into two participant streams (each
speaker's own turns, silence elsewhere), sent as 20 ms `AudioData` packets per participant on an
absolute real-time schedule to `/v1/calls/{id}/media`; the server pushes `TranscriptionData` to a
consumer WebSocket server run here (one per benchmark, calls told apart by the
`x-ms-call-connection-id` header).

Figures per level N:
* delivery latency per Final result: the frame's arrival at the consumer socket minus the wall
  time at which the phrase's speech ended (its offset + duration on the call clock; packet k,
  holding audio [20k, 20k+20) ms, leaves when a phone would have finished recording it);
* calls held in real time: the media socket never held the sender more than 1 s behind its
  schedule and 95 % of the call's finals arrived within 3 s of the speech end;
* per-participant WER against the reference (Whisper-style normalisation as in tests).

    .venv/bin/python bench/call_bench.py --calls 1 4 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import websockets
from bench_server import ServerProcess, cpu_seconds
from websockets.exceptions import ConnectionClosed

from streamscribe.audio.codecs import encode_mulaw
from streamscribe.audio.files import decode_file

REPO = Path(__file__).resolve().parents[1]
RATE = 8000
PACKET = 160  # 20 ms of mu-law
PARTICIPANTS = ("4:+15550000001", "8:acs:bench_agent")
HELD_LAG_S = 1.0
HELD_P95_S = 3.0


@dataclass
class Call:
    id: str
    streams: dict[str, bytes]
    reference: dict[str, str]
    seconds: float
    start: float = 0.0  # monotonic time of call-clock zero
    max_lag_s: float = 0.0
    finals: list[tuple[float, dict]] = field(default_factory=list)


def load_calls(eval_dir: Path, n: int, max_s: float) -> list[Call]:
    rows = [
        json.loads(line)
        for line in (eval_dir / "manifest.jsonl").read_text().splitlines()
        if line.strip()
    ]
    rows = [r for r in rows if r["kind"] == "conversation"]
    calls = []
    for i in range(n):
        row = rows[i % len(rows)]
        audio = decode_file(eval_dir / row["audio"], RATE)
        turns = [t for t in row["turns"] if t["end"] <= max_s] or row["turns"][:1]
        end = int((turns[-1]["end"] + 1.5) * RATE)
        end += -end % PACKET
        audio = np.pad(audio, (0, max(0, end - len(audio))))
        ids = dict(zip(sorted({t["speaker"] for t in turns}), PARTICIPANTS, strict=False))
        own = {pid: np.zeros(end, dtype=np.float32) for pid in ids.values()}
        for t in turns:
            a, b = int(t["start"] * RATE), min(end, int(t["end"] * RATE) + 1)
            own[ids[t["speaker"]]][a:b] = audio[a:b]
        reference = {
            pid: " ".join(t["text"] for t in turns if ids[t["speaker"]] == pid)
            for pid in ids.values()
        }
        streams = {pid: encode_mulaw(x) for pid, x in own.items()}
        calls.append(Call(str(uuid.uuid4()), streams, reference, end / RATE))
    return calls


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    ref, hyp = normalize(reference), normalize(hypothesis)
    return jiwer.wer(ref, hyp) if ref else float(bool(hyp))


async def stream_call(base_ws: str, media_url: str, call: Call) -> None:
    silent = encode_mulaw(np.zeros(PACKET, dtype=np.float32))
    meta = {"encoding": "PCMU", "sampleRate": RATE, "channels": 1, "length": PACKET}
    async with websockets.connect(base_ws + media_url, max_queue=None, write_limit=4096) as ws:
        await ws.send(json.dumps({"kind": "AudioMetadata", "audioMetadata": meta}))
        n = len(next(iter(call.streams.values()))) // PACKET
        call.start = time.monotonic()
        t0_ms = int(time.time() * 1000)
        for k in range(n):
            due = call.start + (k + 1) * 0.02  # when a phone finished recording packet k
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            call.max_lag_s = max(call.max_lag_s, time.monotonic() - due)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((t0_ms + 20 * k) / 1000))
            stamp += f".{(t0_ms + 20 * k) % 1000:03d}Z"
            for pid, data in call.streams.items():
                chunk = data[k * PACKET : (k + 1) * PACKET]
                packet = {
                    "timestamp": stamp,
                    "participantRawID": pid,
                    "data": base64.b64encode(chunk).decode(),
                    "silent": chunk == silent,
                }
                await ws.send(json.dumps({"kind": "AudioData", "audioData": packet}))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def run_level(base_ws: str, calls: list[Call]) -> None:
    by_id = {c.id: c for c in calls}

    async def consume(ws) -> None:
        call = by_id.get(ws.request.headers.get("x-ms-call-connection-id", ""))
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                now = time.monotonic()
                message = json.loads(raw)
                data = message.get("transcriptionData")
                if call is not None and data and data["resultStatus"] == "Final":
                    call.finals.append((now, data))

    base_http = base_ws.replace("ws://", "http://")
    async with (
        websockets.serve(consume, "127.0.0.1", 0) as consumer,
        httpx.AsyncClient(base_url=base_http, timeout=60) as http,
    ):
        port = consumer.sockets[0].getsockname()[1]
        jobs = []
        for call in calls:
            body = {
                "callConnectionId": call.id,
                "transcriptionOptions": {
                    "transportUrl": f"ws://127.0.0.1:{port}/transcripts",
                    "locale": "en-US",
                    "startTranscription": True,
                },
            }
            response = await http.post("/v1/calls", json=body)
            response.raise_for_status()
            jobs.append(response.json())
        await asyncio.gather(
            *(stream_call(base_ws, j["mediaUrl"], c) for j, c in zip(jobs, calls, strict=True))
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = [(await http.get(f"/v1/calls/{c.id}")).json()["status"] for c in calls]
            if all(s == "ended" for s in states):
                break
            await asyncio.sleep(0.5)


def report(n: int, calls: list[Call], cpu_s: float | None, wall_s: float) -> dict:
    latencies: list[float] = []
    held = 0
    wers: list[float] = []
    for call in calls:
        own = []
        for received, data in call.finals:
            speech_end = call.start + (data["offset"] + data["duration"]) / 1e7
            own.append(received - speech_end)
        latencies += own
        if call.max_lag_s <= HELD_LAG_S and own and percentile(own, 95) <= HELD_P95_S:
            held += 1
        for pid, ref in call.reference.items():
            text = " ".join(d["text"] for _, d in call.finals if d["participantRawID"] == pid)
            wers.append(wer(ref, text))
    figures = {
        "calls": n,
        "audio_s_per_call": round(statistics.mean(c.seconds for c in calls), 1),
        "finals": len(latencies),
        "latency_p50_s": round(percentile(latencies, 50), 2),
        "latency_p95_s": round(percentile(latencies, 95), 2),
        "latency_max_s": round(max(latencies, default=float("nan")), 2),
        "held_in_real_time": held,
        "max_sender_lag_s": round(max(c.max_lag_s for c in calls), 2),
        "wer_participant_mean": round(statistics.mean(wers), 3) if wers else None,
        "server_cpu_pct": round(100 * cpu_s / wall_s, 0) if cpu_s is not None else None,
    }
    print(
        f"N={n}: {figures['finals']} finals, delivery latency P50 {figures['latency_p50_s']} s, "
        f"P95 {figures['latency_p95_s']} s (max {figures['latency_max_s']} s); "
        f"held in real time {held}/{n} (max sender lag {figures['max_sender_lag_s']} s); "
        f"per-participant WER {figures['wer_participant_mean']}; "
        f"server CPU {figures['server_cpu_pct']} % of one core",
        flush=True,
    )
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, nargs="+", default=[1, 4], help="concurrency levels")
    p.add_argument("--seconds", type=float, default=60.0, help="call length cap (s)")
    p.add_argument("--eval-dir", type=Path, default=REPO.parent / "shared" / "eval" / "dev")
    p.add_argument("--url", help="use a running server (ws://host:port) instead of starting one")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.eval_dir / "manifest.jsonl").exists():
        print(f"no evaluation set at {args.eval_dir}", file=sys.stderr)
        return 2
    results = []
    for n in args.calls:
        calls = load_calls(args.eval_dir, n, args.seconds)
        server = None
        with tempfile.TemporaryDirectory(prefix="call-bench-") as tmp:
            if args.url:
                base = args.url.rstrip("/")
            else:
                server = ServerProcess(Path(tmp) / "data", Path(tmp) / "server.log")
                server.start()
                server.wait_ready()
                base = server.url
            pid = server.pid if server else None
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            try:
                asyncio.run(run_level(base, calls))
                cpu1 = cpu_seconds(pid)
            finally:
                if server is not None:
                    server.stop()
            used = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
            results.append(report(n, calls, used, time.monotonic() - t0))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

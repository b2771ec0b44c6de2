"""Misbehaving clients beside good ones: do the good streams keep their latency?

Why this exists: the hostile-input tests (tests/integration/test_hostile_input.py) prove that
each kind of bad client gets a clear close and that the server survives; they cannot say what a
crowd of bad clients costs everyone else. This script measures that, bounded in time: K good
real-time streams of dev utterances run alone (the baseline), then the same K streams again
while a separate process runs misbehaving clients, and the good streams' first-partial and
end-of-turn latency are printed side by side, with what happened to the misbehavers.

Misbehaving clients (`--kinds`, default storm,tiny,slow,vanish):
  storm   handshakes at --storm-rate a second, each holding its session ~0.2 s; a third vanish
          without a close, the rest close politely
  tiny    floods of 2000 tiny frames a second (2-byte audio, then KeepAlive text), reconnecting
          after each close
  slow    streams speech in real time and never reads a byte (tiny receive buffer)
  vanish  streams 1-2 s of speech, then drops the TCP connection without a close; again
  fast    (opt-in) silence in legal 100 ms frames as fast as it can (deflated on the wire)
  ping    (opt-in) pings as fast as it can, never reading the pongs

The misbehavers run in a child process (`--child`), so their own event-loop load does not delay
the good clients' sends and reads; they still share the machine's cores with the server, and
their CPU time is printed so that part of any slowdown can be told apart.

Usage (see bench/README.md):
    .venv/bin/python bench/hostile_load.py --good 2 --limit 3
    .venv/bin/python bench/hostile_load.py --url ws://127.0.0.1:8000 --kinds storm,tiny,fast
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import websockets
from bench_corpus import load_manifest, read_pcm
from bench_server import ResourceMonitor, ServerProcess, cpu_seconds, http_base, machine_info
from bench_session import CHUNK_BYTES
from stream_bench import dist, fmt, fmt_dist, log, run_stream, to_chunks
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
GOOD_QUERY = "sample_rate=16000&encoding=pcm_s16le&format_turns=true"
BAD_QUERY = "sample_rate=16000"
DEFAULT_KINDS = "storm,tiny,slow,vanish"
ALL_KINDS = ("storm", "tiny", "slow", "vanish", "fast", "ping")
STORM_HOLD_S = 0.2
TINY_RATE = 2000.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--good", type=int, default=2, help="good real-time streams (K)")
    p.add_argument("--limit", type=int, default=3, help="utterances per good stream")
    p.add_argument("--kinds", default=DEFAULT_KINDS, help=f"misbehavers, from {ALL_KINDS}")
    p.add_argument("--per-kind", type=int, default=1, help="clients of each kind (not storm)")
    p.add_argument("--storm-rate", type=float, default=40.0, help="handshakes a second")
    p.add_argument("--eval-dir", type=Path, default=REPO.parent / "shared" / "eval" / "dev")
    p.add_argument("--url", help="a running server (ws://host:port) instead of a fresh one")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(ALL_KINDS))
    if unknown:
        p.error(f"unknown --kinds {unknown}; choose from {', '.join(ALL_KINDS)}")
    args.kinds = kinds
    return args


# ================================================================================ misbehavers
class Tally:
    """What happened to the misbehaving clients: outcomes by kind, close codes, close delays."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Counter[str]] = {}
        self.close_ms: dict[str, list[float]] = {}
        self.audio_s: Counter[str] = Counter()

    def count(self, kind: str, outcome: str) -> None:
        self.outcomes.setdefault(kind, Counter())[outcome] += 1

    def closed(self, kind: str, code: int | None, after_s: float) -> None:
        self.count(kind, f"closed {code}")
        self.close_ms.setdefault(kind, []).append(after_s * 1000)

    def to_json(self) -> dict:
        return {
            kind: {
                "outcomes": dict(self.outcomes.get(kind, {})),
                "close_ms": dist(self.close_ms.get(kind, [])),
                "audio_s": round(self.audio_s[kind], 1),
            }
            for kind in sorted(set(self.outcomes) | set(self.close_ms))
        }


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        return f"closed {exc.rcvd.code if exc.rcvd else None}"
    return type(exc).__name__


async def _connect(url: str, **kw):
    return await websockets.connect(url, open_timeout=10, ping_interval=None, **kw)


async def storm(url: str, stop: asyncio.Event, tally: Tally, rate: float) -> None:
    async def one(i: int) -> None:
        try:
            ws = await _connect(url)
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if first.get("type") != "Begin":
                tally.count("storm", f"refused {first.get('error_code')}")
                await ws.close()
                return
            tally.count("storm", "begin")
            await asyncio.sleep(STORM_HOLD_S)
            if i % 3 == 0:
                ws.transport.abort()
            else:
                await ws.close()
        except Exception as exc:  # noqa: BLE001 - every failure is a figure here
            tally.count("storm", _why(exc))

    tasks: set[asyncio.Task] = set()
    i = 0
    t0 = time.monotonic()
    while not stop.is_set():
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
        await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
    await asyncio.gather(*tasks, return_exceptions=True)


async def tiny(url: str, stop: asyncio.Event, tally: Tally, n: int) -> None:
    frames = [b"\x00\x00", json.dumps({"type": "KeepAlive"})]
    while not stop.is_set():
        frame = frames[n % 2]
        n += 1
        try:
            async with await _connect(url) as ws:
                await ws.recv()
                t0 = time.monotonic()
                sent = 0
                with contextlib.suppress(ConnectionClosed):
                    while not stop.is_set():
                        await ws.send(frame)
                        sent += 1
                        if sent % 20 == 0:
                            await asyncio.sleep(max(0.0, t0 + sent / TINY_RATE - time.monotonic()))
                with contextlib.suppress(ConnectionClosed, TimeoutError):
                    await asyncio.wait_for(ws.recv(), 5)  # the Error message, if any
                tally.closed("tiny", ws.close_code, time.monotonic() - t0)
        except Exception as exc:  # noqa: BLE001
            tally.count("tiny", _why(exc))
        await asyncio.sleep(0.2)


async def slow(url: str, stop: asyncio.Event, tally: Tally, speech: list[bytes]) -> None:
    while not stop.is_set():
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            sock.connect(url_address(url))
            ws = await _connect(url, sock=sock)
            await ws.recv()
            ws.transport.pause_reading()  # never read another byte
            tally.count("slow", "streaming")
            t0 = time.monotonic()
            k = 0
            while not stop.is_set():
                await asyncio.sleep(max(0.0, t0 + k * 0.1 - time.monotonic()))
                await asyncio.wait_for(ws.send(speech[k % len(speech)]), 10)
                tally.audio_s["slow"] += 0.1
                k += 1
            ws.transport.abort()
        except Exception as exc:  # noqa: BLE001
            tally.count("slow", _why(exc))
            await asyncio.sleep(0.5)


async def vanish(url: str, stop: asyncio.Event, tally: Tally, speech: list[bytes], n: int) -> None:
    while not stop.is_set():
        n += 1
        try:
            ws = await _connect(url)
            await ws.recv()
            for k in range(10 + 10 * (n % 2)):  # 1 or 2 s of speech, in real time
                if stop.is_set():
                    break
                await ws.send(speech[k % len(speech)])
                await asyncio.sleep(0.1)
            ws.transport.abort()
            tally.count("vanish", "vanished")
        except Exception as exc:  # noqa: BLE001
            tally.count("vanish", _why(exc))
        await asyncio.sleep(0.5)


async def fast(url: str, stop: asyncio.Event, tally: Tally) -> None:
    frame = bytes(CHUNK_BYTES)
    while not stop.is_set():
        try:
            async with await _connect(url) as ws:
                await ws.recv()
                tally.count("fast", "flooding")
                while not stop.is_set():
                    await ws.send(frame)
                    tally.audio_s["fast"] += 0.1
                ws.transport.abort()
        except Exception as exc:  # noqa: BLE001
            tally.count("fast", _why(exc))
            await asyncio.sleep(0.5)


async def ping(url: str, stop: asyncio.Event, tally: Tally) -> None:
    with contextlib.suppress(Exception):
        ws = await _connect(url)
        await ws.recv()
        ws.transport.pause_reading()
        tally.count("ping", "flooding")
        k = 0
        while not stop.is_set():
            await asyncio.wait_for(ws.ping(k.to_bytes(8, "big") * 15), 5)
            k += 1
            if k % 100 == 0:
                await asyncio.sleep(0)
        tally.count("ping", f"{k} pings")
        ws.transport.abort()


def url_address(url: str) -> tuple[str, int]:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    return host, int(port)


async def run_misbehavers(args: argparse.Namespace) -> dict:
    """The child process: every kind at once until --seconds pass or SIGTERM; then a summary."""
    url = f"{args.url.rstrip('/')}/v3/ws?{BAD_QUERY}"
    clips = load_manifest(args.eval_dir, "utterance", 2)
    speech = to_chunks(b"".join(read_pcm(c.path) for c in clips))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.seconds, stop.set)
    tally = Tally()
    jobs = []
    for kind in args.kinds:
        if kind == "storm":
            jobs.append(storm(url, stop, tally, args.storm_rate))
            continue
        for n in range(args.per_kind):
            jobs.append(
                {
                    "tiny": lambda n=n: tiny(url, stop, tally, n),
                    "slow": lambda: slow(url, stop, tally, speech),
                    "vanish": lambda n=n: vanish(url, stop, tally, speech, n),
                    "fast": lambda: fast(url, stop, tally),
                    "ping": lambda: ping(url, stop, tally),
                }[kind]()
            )
    t0 = time.monotonic()
    await asyncio.gather(*jobs)
    cpu = psutil.Process().cpu_times()
    return {
        "seconds": round(time.monotonic() - t0, 1),
        "cpu_s": round(cpu.user + cpu.system, 1),
        "kinds": tally.to_json(),
    }


# ================================================================================ good streams
async def watch_health(base: str, stop: asyncio.Event, out: list[float]) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                ok = (await client.get(f"{base}/healthz")).status_code == 200
            except httpx.HTTPError:
                ok = False
            out.append((time.monotonic() - t0) * 1000 if ok else float("inf"))
            await asyncio.sleep(0.2)


async def good_phase(label: str, k: int, url: str, pid: int | None, clips, pcm) -> dict:
    """K good real-time streams over the clips (rotated per stream), with the server watched."""
    base = http_base(url)
    monitor = ResourceMonitor(pid, base)
    health: list[float] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_health(base, stop, health))
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    monitor.start()
    ws_url = f"{url.rstrip('/')}/v3/ws?{GOOD_QUERY}"
    per_stream = await asyncio.gather(
        *(run_stream(i, k, clips, pcm, ws_url, 1.5) for i in range(k))
    )
    wall = time.monotonic() - t0
    cpu1 = cpu_seconds(pid)
    await monitor.stop()
    stop.set()
    await watcher
    files = [f for stream in per_stream for f in stream]
    turns = [t for f in files for t in f.outcome.analyzer.turns]
    return {
        "phase": label,
        "sessions": len(files),
        "failed": sum(f.outcome.error is not None for f in files),
        "errors": sorted({f.outcome.error for f in files if f.outcome.error})[:5],
        "turns": len(turns),
        "first_partial_ms": dist([t.first_partial_ms for t in turns]),
        "end_of_turn_ms": dist([t.end_of_turn_ms for t in turns]),
        "word_final_ms": dist([x for t in turns for x in t.word_final_ms]),
        "connect_ms": dist([f.outcome.connect_ms for f in files]),
        "send_late_max_s": round(max((f.outcome.max_send_late_s for f in files), default=0), 2),
        "healthz_max_ms": round(max(health), 1) if health else None,
        "healthz_p50_ms": dist(health)["p50"] if health else None,
        "wall_s": round(wall, 1),
        "server_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 1),
        "rss_peak_mb": monitor.peak_rss_mb(t0),
        "lag_polled_max_ms": monitor.max_lag_ms(t0),
    }


async def sessions_active(base: str) -> int | None:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(f"{base}/v1/metrics")).json()["sessions_active"]
    return None


async def drain(base: str, timeout_s: float) -> tuple[int | None, float]:
    """Wait for the misbehavers' sessions to be gone; (sessions left, seconds waited)."""
    t0 = time.monotonic()
    left = await sessions_active(base)
    while left and time.monotonic() - t0 < timeout_s:
        await asyncio.sleep(0.5)
        left = await sessions_active(base)
    return left, round(time.monotonic() - t0, 1)


def start_child(args, url: str, seconds: float) -> subprocess.Popen:
    cmd = [
        sys.executable, __file__, "--child", "--url", url, "--kinds", ",".join(args.kinds),
        "--per-kind", str(args.per_kind), "--storm-rate", str(args.storm_rate),
        "--eval-dir", str(args.eval_dir), "--seconds", str(seconds),
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def stop_child(child: subprocess.Popen) -> dict:
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)
    try:
        out, _ = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        out, _ = child.communicate()
    with contextlib.suppress(ValueError):
        return json.loads(out.strip().splitlines()[-1])
    return {"error": f"misbehaver process said: {out[-300:]!r}"}


async def run(args, url: str, pid: int | None) -> dict:
    clips = load_manifest(args.eval_dir, "utterance", args.limit)
    pcm = {c.id: read_pcm(c.path) for c in clips}
    speech_s = sum(c.duration for c in clips)
    log(f"{args.good} good stream(s) x {len(clips)} utterances ({speech_s:.0f} s each stream)")
    base = http_base(url)

    log("phase 1: good streams alone")
    alone = await good_phase("alone", args.good, url, pid, clips, pcm)

    log(f"phase 2: good streams beside misbehavers ({', '.join(args.kinds)})")
    budget = speech_s + len(clips) * 4 + 30  # the phase's length, with room to spare
    child = start_child(args, url, budget)
    await asyncio.sleep(1.0)  # let the misbehavers get going
    beside = await good_phase("beside misbehavers", args.good, url, pid, clips, pcm)
    misbehavers = stop_child(child)
    left, waited = await drain(base, 30)
    beside["sessions_left_after"] = left
    beside["drain_s"] = waited
    log("phase 3: one good stream after")
    after = await good_phase("after", 1, url, pid, clips[:1], pcm)
    return {"alone": alone, "beside": beside, "after": after, "misbehavers": misbehavers}


# ================================================================================ report
def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if not a or b is None else f"{b / a:.2f}x"


def print_report(h: dict, r: dict) -> None:
    a, b, after = r["alone"], r["beside"], r["after"]
    print(f"date:    {h['date']}")
    print(f"command: {h['command']}")
    m = h["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores; load at start {m['loadavg_at_start']}")
    print(
        f"misbehavers: {', '.join(h['kinds'])} (x{h['per_kind']} each; storm {h['storm_rate']}/s)"
    )
    print("\nGood real-time streams: alone vs beside misbehaving clients (ms, P50 / P95)")
    print("| figure | alone | beside misbehavers | P50 ratio | after |")
    print("|---|---:|---:|---:|---:|")
    for key, name in (
        ("first_partial_ms", "first partial"),
        ("end_of_turn_ms", "end of turn"),
        ("word_final_ms", "word final"),
        ("connect_ms", "connect (handshake to Begin)"),
    ):
        print(
            f"| {name} | {fmt_dist(a[key])} | {fmt_dist(b[key])} "
            f"| {ratio(a[key]['p50'], b[key]['p50'])} | {fmt_dist(after[key])} |"
        )
    print(f"| turns | {a['turns']} | {b['turns']} | | {after['turns']} |")
    print(
        f"| failed good sessions | {a['failed']}/{a['sessions']} | {b['failed']}/{b['sessions']} "
        f"| | {after['failed']}/{after['sessions']} |"
    )
    print(f"| send late max s | {a['send_late_max_s']} | {b['send_late_max_s']} | | |")
    print(f"| /healthz max ms | {fmt(a['healthz_max_ms'])} | {fmt(b['healthz_max_ms'])} | | |")
    print(
        f"| server lag max ms | {fmt(a['lag_polled_max_ms'])} | {fmt(b['lag_polled_max_ms'])} | | |"
    )
    print(f"| server RSS peak MB | {fmt(a['rss_peak_mb'])} | {fmt(b['rss_peak_mb'])} | | |")
    print(
        f"| server CPU s (wall s) | {fmt(a['server_cpu_s'], '.1f')} ({a['wall_s']}) "
        f"| {fmt(b['server_cpu_s'], '.1f')} ({b['wall_s']}) | | |"
    )
    for phase in (a, b, after):
        for err in phase["errors"]:
            print(f"  {phase['phase']}: error: {err}")
    mis = r["misbehavers"]
    print(
        f"\nMisbehaving clients ({mis.get('seconds')} s, their own CPU {mis.get('cpu_s')} s; "
        f"sessions left {b.get('sessions_left_after')} after {b.get('drain_s')} s)"
    )
    print("| kind | outcomes | close after ms P50 / P95 | audio s sent |")
    print("|---|---|---:|---:|")
    for kind, k in mis.get("kinds", {}).items():
        outcomes = ", ".join(f"{o} x{n}" for o, n in sorted(k["outcomes"].items()))
        print(f"| {kind} | {outcomes} | {fmt_dist(k['close_ms'])} | {k['audio_s']} |")
    if "error" in mis:
        print(f"  {mis['error']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(run_misbehavers(args))), flush=True)
        return 0
    h = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "kinds": args.kinds,
        "per_kind": args.per_kind,
        "storm_rate": args.storm_rate,
        "good": args.good,
    }
    if args.url:
        result = asyncio.run(run(args, args.url, None))
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        with tempfile.TemporaryDirectory(prefix="streamscribe-hostile-") as tmp:
            server = ServerProcess(Path(tmp), RESULTS / f"server-{stamp}-hostile.log")
            server.start()
            try:
                log(f"server pid {server.pid} ready in {server.wait_ready():.1f} s")
                result = asyncio.run(run(args, server.url, server.pid))
                result["server_log_problems"] = server.log_problems()[0]
                result["server_alive"] = server.proc is not None and server.proc.poll() is None
            finally:
                server.stop()
    print_report(h, result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**h, **result}, indent=1, default=str))
    ok = result["after"]["failed"] == 0 and result.get("server_alive", True)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

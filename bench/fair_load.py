"""Fair shares under attack: one key's well-behaved real-time stream beside another key's attack.

Why this exists (issue 18): `hostile_load.py` measures misbehaving clients without keys; this
script runs the attacks that once took capacity from other keys, with two API keys on a fresh
server (made with the admin API): the "good" key streams dev utterances in real time, one
session per utterance, back to back; the "attacker" key runs one attack at a time in a child
process. For each attack the good stream's final (end-of-turn) latency is printed beside its
quiet value, with whether any of its sessions was refused (no Begin) or cut (closed other than
1000, or without Termination).

Attacks (`--attacks`, default flood,idle,header):
  flood   --flood-streams sessions of the attacker key, each streaming speech at --flood-speed x
          real time, reconnecting when closed
  idle    --idle-sockets sessions of the attacker key that never send a byte, reopened when closed
  header  --header-conns connections at once sending a request head of --header-kb KB (one
          header line), again and again; the HTTP answer (or its absence) is tallied

The goal: the good stream's P95 final latency under each attack within 1.5x of quiet, and no
good session refused or cut. Figures depend on what else runs on the machine: the load average
at the start and the attacker process's own CPU time are printed with them.

Usage:
    .venv/bin/python bench/fair_load.py --limit 6
    .venv/bin/python bench/fair_load.py --attacks flood --flood-streams 31 --flood-speed 10
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
from bench_server import ServerProcess, http_base, machine_info
from stream_bench import dist, fmt_dist, log, run_stream, to_chunks
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
ADMIN = "bench-admin-secret"
GOOD_QUERY = "sample_rate=16000&encoding=pcm_s16le&format_turns=true"
ATTACK_QUERY = "sample_rate=16000"
ALL_ATTACKS = ("flood", "idle", "header")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attacks", default="flood,idle,header", help=f"from {ALL_ATTACKS}")
    p.add_argument("--limit", type=int, default=6, help="utterances the good stream sends")
    p.add_argument("--flood-streams", type=int, default=31)
    p.add_argument("--flood-speed", type=float, default=10.0, help="times real time")
    p.add_argument("--idle-sockets", type=int, default=32)
    p.add_argument("--header-conns", type=int, default=32)
    p.add_argument("--header-kb", type=int, default=1024, help="size of each request head")
    p.add_argument("--eval-dir", type=Path, default=REPO.parent / "shared" / "eval" / "dev")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--child", help=argparse.SUPPRESS)  # attack name: run it (child process)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--secret", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=120.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.attacks = [a for a in args.attacks.split(",") if a]
    if unknown := sorted(set(args.attacks) - set(ALL_ATTACKS)):
        p.error(f"unknown --attacks {unknown}; choose from {', '.join(ALL_ATTACKS)}")
    return args


# ================================================================================ attacks
class Tally(Counter):
    def why(self, exc: BaseException) -> None:
        if isinstance(exc, ConnectionClosed):
            self[f"closed {exc.rcvd.code if exc.rcvd else None}"] += 1
        else:
            self[type(exc).__name__] += 1


async def _open(url: str, secret: str, tally: Tally):
    """A session of the attacker's key; None (tallied) if it was refused."""
    ws = await websockets.connect(
        url, additional_headers={"Authorization": secret}, open_timeout=20, ping_interval=None
    )
    first = json.loads(await asyncio.wait_for(ws.recv(), 20))
    if first.get("type") != "Begin":
        tally[f"refused {first.get('error_code')}"] += 1
        with contextlib.suppress(Exception):
            await ws.close()
        return None
    tally["begin"] += 1
    return ws


async def flood_one(url, secret, speech, speed, stop, tally, sent) -> None:
    while not stop.is_set():
        try:
            ws = await _open(url, secret, tally)
            if ws is None:
                await asyncio.sleep(1.0)
                continue
            t0, k = time.monotonic(), 0
            while not stop.is_set():
                await ws.send(speech[k % len(speech)])
                sent["audio_s"] += 0.1
                k += 1
                await asyncio.sleep(max(0.0, t0 + k * 0.1 / speed - time.monotonic()))
            ws.transport.abort()
        except Exception as exc:  # noqa: BLE001 - every failure is a figure here
            tally.why(exc)
            await asyncio.sleep(0.5)


async def idle_one(url, secret, stop, tally) -> None:
    while not stop.is_set():
        try:
            ws = await _open(url, secret, tally)
            if ws is None:
                await asyncio.sleep(1.0)
                continue
            with contextlib.suppress(ConnectionClosed):
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ws.recv(), 1.0)
            if ws.close_code is not None:
                tally[f"closed {ws.close_code}"] += 1
            ws.transport.abort()
        except Exception as exc:  # noqa: BLE001
            tally.why(exc)
            await asyncio.sleep(0.5)


async def header_one(url: str, kb: int, stop, tally, timings: list[float]) -> None:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    head = (
        f"GET /v3/ws?{ATTACK_QUERY} HTTP/1.1\r\nHost: {host_port}\r\n"
        f"X-Filler: {'a' * (kb * 1024)}\r\n\r\n"
    ).encode()
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 10)
            try:
                writer.write(head)
                with contextlib.suppress(ConnectionError):
                    await asyncio.wait_for(writer.drain(), 30)
                line = await asyncio.wait_for(reader.readline(), 30)
                status = line.split(b" ")[1].decode() if line.startswith(b"HTTP/") else "no answer"
                tally[f"HTTP {status}"] += 1
            finally:
                writer.transport.abort()
        except Exception as exc:  # noqa: BLE001
            tally.why(exc)
        timings.append((time.monotonic() - t0) * 1000)
        await asyncio.sleep(0.05)


async def run_attack(args: argparse.Namespace) -> dict:
    """The child process: one attack until --seconds pass or SIGTERM; then a summary."""
    url = f"{args.url.rstrip('/')}/v3/ws?{ATTACK_QUERY}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(args.seconds, stop.set)
    tally: Tally = Tally()
    sent: Counter = Counter()
    timings: list[float] = []
    if args.child == "flood":
        clips = load_manifest(args.eval_dir, "utterance", 4)
        speech = to_chunks(b"".join(read_pcm(c.path) for c in clips))
        jobs = [
            flood_one(url, args.secret, speech[i * 7 :] + speech[: i * 7], args.flood_speed,
                      stop, tally, sent)
            for i in range(args.flood_streams)
        ]  # fmt: skip
    elif args.child == "idle":
        jobs = [idle_one(url, args.secret, stop, tally) for _ in range(args.idle_sockets)]
    else:
        jobs = [
            header_one(url, args.header_kb, stop, tally, timings) for _ in range(args.header_conns)
        ]
    t0 = time.monotonic()
    await asyncio.gather(*jobs)
    cpu = psutil.Process().cpu_times()
    wall = time.monotonic() - t0
    return {
        "seconds": round(wall, 1),
        "cpu_s": round(cpu.user + cpu.system, 1),
        "outcomes": dict(tally),
        "audio_s": round(sent["audio_s"], 1),
        "audio_x_real_time": round(sent["audio_s"] / wall, 1) if wall else None,
        "answer_ms": dist(timings),
    }


def start_child(args, attack: str, url: str, secret: str, seconds: float) -> subprocess.Popen:
    cmd = [
        sys.executable, __file__, "--child", attack, "--url", url, "--secret", secret,
        "--flood-streams", str(args.flood_streams), "--flood-speed", str(args.flood_speed),
        "--idle-sockets", str(args.idle_sockets), "--header-conns", str(args.header_conns),
        "--header-kb", str(args.header_kb), "--eval-dir", str(args.eval_dir),
        "--seconds", str(seconds),
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def stop_child(child: subprocess.Popen) -> dict:
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)
    try:
        out, _ = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        out, _ = child.communicate()
    with contextlib.suppress(ValueError, IndexError):
        return json.loads(out.strip().splitlines()[-1])
    return {"error": f"attacker process said: {out[-300:]!r}"}


# ================================================================================ good stream
async def good_phase(label: str, url: str, secret: str, clips, pcm) -> dict:
    ws_url = f"{url.rstrip('/')}/v3/ws?{GOOD_QUERY}"
    t0 = time.monotonic()
    files = await run_stream(0, 1, clips, pcm, ws_url, 1.5, {"Authorization": secret})
    turns = [t for f in files for t in f.outcome.analyzer.turns]
    refused = [f for f in files if f.outcome.connect_ms is None or not f.outcome.analyzer.begin]
    cut = [f for f in files if f.outcome.error is not None and f not in refused]
    return {
        "phase": label,
        "sessions": len(files),
        "refused": len(refused),
        "cut": len(cut),
        "errors": sorted({f.outcome.error for f in files if f.outcome.error})[:5],
        "turns": len(turns),
        "end_of_turn_ms": dist([t.end_of_turn_ms for t in turns]),
        "first_partial_ms": dist([t.first_partial_ms for t in turns]),
        "connect_ms": dist([f.outcome.connect_ms for f in files]),
        "wall_s": round(time.monotonic() - t0, 1),
    }


async def sessions_active(base: str) -> int | None:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(f"{base}/v1/metrics")).json()["sessions_active"]
    return None


async def drain(base: str, timeout_s: float) -> int | None:
    t0 = time.monotonic()
    left = await sessions_active(base)
    while left and time.monotonic() - t0 < timeout_s:
        await asyncio.sleep(0.5)
        left = await sessions_active(base)
    return left


def make_key(base: str, name: str) -> str:
    r = httpx.post(
        f"{base}/v1/admin/keys", json={"name": name}, headers={"Authorization": ADMIN}, timeout=10
    )
    r.raise_for_status()
    return r.json()["key"]


async def run(args, url: str) -> dict:
    base = http_base(url)
    good, attacker = make_key(base, "good"), make_key(base, "attacker")
    clips = load_manifest(args.eval_dir, "utterance", args.limit)
    pcm = {c.id: read_pcm(c.path) for c in clips}
    speech_s = sum(c.duration for c in clips)
    log(f"good stream: {len(clips)} utterances, {speech_s:.0f} s, one session each")
    log("quiet: the good stream alone")
    phases = {"quiet": await good_phase("quiet", url, good, clips, pcm)}
    attacks = {}
    for attack in args.attacks:
        log(f"attack: {attack}")
        child = start_child(args, attack, url, attacker, speech_s + len(clips) * 5 + 60)
        await asyncio.sleep(3.0)  # the attack takes hold first
        phases[attack] = await good_phase(attack, url, good, clips, pcm)
        attacks[attack] = stop_child(child)
        attacks[attack]["sessions_left_after"] = await drain(base, 180)
    return {"phases": phases, "attacks": attacks}


# ================================================================================ report
def print_report(h: dict, r: dict) -> None:
    m = h["machine"]
    print(f"date:    {h['date']}")
    print(f"command: {h['command']}")
    print(f"machine: {m['cpu']}, {m['cores']} cores; load at start {m['loadavg_at_start']}")
    print(f"server:  defaults ({h['settings']})")
    quiet = r["phases"]["quiet"]["end_of_turn_ms"]["p95"]
    print("\nThe good key's real-time stream (final = end of turn; ms P50 / P95)")
    print("| phase | final latency | P95 vs quiet | first partial | connect | refused | cut |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, ph in r["phases"].items():
        p95 = ph["end_of_turn_ms"]["p95"]
        ratio = f"{p95 / quiet:.2f}x" if quiet and p95 else "n/a"
        print(
            f"| {name} | {fmt_dist(ph['end_of_turn_ms'])} | {ratio} "
            f"| {fmt_dist(ph['first_partial_ms'])} | {fmt_dist(ph['connect_ms'])} "
            f"| {ph['refused']}/{ph['sessions']} | {ph['cut']}/{ph['sessions']} |"
        )
        for err in ph["errors"]:
            print(f"  {name}: {err}")
    print("\nThe attacker key")
    print("| attack | outcomes | audio sent (x real time) | answer ms P50 / P95 | CPU s |")
    print("|---|---|---:|---:|---:|")
    for name, a in r["attacks"].items():
        outcomes = ", ".join(f"{k} x{n}" for k, n in sorted(a.get("outcomes", {}).items()))
        audio = f"{a.get('audio_s')} s ({a.get('audio_x_real_time')}x)" if a.get("audio_s") else ""
        answer = fmt_dist(a["answer_ms"]) if a.get("answer_ms") else ""
        print(f"| {name} | {outcomes} | {audio} | {answer} | {a.get('cpu_s')} |")
        if "error" in a:
            print(f"  {a['error']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(run_attack(args))), flush=True)
        return 0
    h = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "settings": ", ".join(
            f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("STREAMSCRIBE_")
        )
        or "no STREAMSCRIBE_* set",
    }
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="streamscribe-fair-") as tmp:
        server = ServerProcess(
            Path(tmp),
            RESULTS / f"server-{stamp}-fair.log",
            env={"STREAMSCRIBE_ADMIN_KEY": ADMIN, "STREAMSCRIBE_RECORD_AUDIO": "false"},
        )
        server.start()
        try:
            log(f"server pid {server.pid} ready in {server.wait_ready():.1f} s")
            result = asyncio.run(run(args, server.url))
            result["server_alive"] = server.proc is not None and server.proc.poll() is None
        finally:
            server.stop()
    print_report(h, result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**h, **result}, indent=1, default=str))
    bad = sum(ph["refused"] + ph["cut"] for ph in result["phases"].values())
    return 0 if bad == 0 and result["server_alive"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    socket.setdefaulttimeout(None)
    sys.exit(main())

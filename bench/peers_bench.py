"""Peers side by side: streamscribe, WhisperLive and WhisperLiveKit on the same model and audio.

Why this exists: users choose between these three self-hosted real-time Whisper servers, so the
README shows them measured in one run on one machine: the same tiny.en CTranslate2 files, the same
dev utterances streamed in real time as 100 ms chunks by N concurrent clients, each server in its
own process (the peers in their own virtualenvs, see peer_systems.py), a fresh server per system
and concurrency level, the systems interleaved per level. Every reply is reduced to what a user
sees: final text (can no longer change) and partial text (may), and every figure is computed from
that the same way for all three (bench/README.md, "Peers side by side").

Usage (see bench/README.md):
    .venv/bin/python bench/peers_bench.py --install-only
    .venv/bin/python bench/peers_bench.py --streams 1 2 4 8 12 --json bench/results/peers.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from bench_corpus import (
    Clip,
    corpus_wer,
    load_manifest,
    model_path,
    normalise,
    offline_hypotheses,
    read_pcm,
    to_float,
)
from bench_server import ServerProcess, cpu_seconds, machine_info, rss_bytes
from peer_systems import (
    SYSTEMS,
    InstallError,
    SessionResult,
    System,
    ensure_venv,
    failure_reason,
    package_versions,
    run_session,
    start_server,
    venv_python,
)
from stream_bench import dist, fmt, fmt_dist, fmt_pct, rnd

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
WARMUP_S = 3.0


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8, 12])
    p.add_argument("--limit", type=int, help="use only the first LIMIT files")
    p.add_argument("--systems", default="streamscribe,whisperlive,whisperlivekit")
    p.add_argument("--install-only", action="store_true", help="create the peers' venvs, stop")
    p.add_argument("--eval-dir", type=Path, default=REPO.parent / "shared" / "eval" / "dev")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--tail-min", type=float, default=1.5, help="s of silence after each file")
    p.add_argument(
        "--tail-max", type=float, default=10.0, help="s: more silence while text is pending"
    )
    p.add_argument("--tail-quiet", type=float, default=2.0, help="s: ... and changed this recently")
    p.add_argument(
        "--held-within",
        type=float,
        default=3.0,
        help="s: held when 95 %% of files settle within this of speech end",
    )
    args = p.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown:
        p.error(f"unknown system(s) {unknown}; choose from {sorted(SYSTEMS)}")
    return args


# ---------------------------------------------------------------------------------- audio
def speech_bounds(pcm: bytes) -> tuple[float, float]:
    """(onset, end) of speech in s: the start of the first and the end of the last run of three
    20 ms frames whose RMS exceeds a tenth (-20 dB) of the file's 95th-percentile frame RMS (a
    click is shorter). The same client-side clock for every system."""
    x = to_float(pcm)
    n = len(x) // 320
    if n < 3:
        return 0.0, len(x) / 16000
    rms = np.sqrt(np.mean(x[: n * 320].reshape(n, 320) ** 2, axis=1))
    loud = rms > max(0.1 * np.percentile(rms, 95), 10 ** (-50 / 20))
    runs = np.nonzero(loud[:-2] & loud[1:-1] & loud[2:])[0]  # frame i starts a run of three
    if not len(runs):
        return 0.0, len(x) / 16000
    return float(runs[0] * 0.02), float((runs[-1] + 3) * 0.02)


# ---------------------------------------------------------------------------------- one run
@dataclass
class FileRun:
    stream: int
    clip: Clip
    result: SessionResult


async def run_stream(
    system: System, port: int, i: int, n: int, clips: list[Clip], pcm: dict, args
) -> list[FileRun]:
    """Stream i: every clip, its list rotated by i, one session per clip, back to back."""
    order = clips[i % len(clips) :] + clips[: i % len(clips)]
    runs = []
    for k, clip in enumerate(order, 1):
        phase = i * 0.1 / n if k == 1 else 0.0  # first chunks of the streams interleave
        result = await run_session(
            system.session(port), pcm[clip.id], args.tail_min, args.tail_max, phase, args.tail_quiet
        )
        runs.append(FileRun(i, clip, result))
        tr = result.tracker
        line = (
            f"[{system.name} N={n}] stream {i} file {k}/{len(order)} {clip.id} "
            f"({clip.duration:.1f} s): {len(tr.changes)} text changes, tail {result.tail_s:.1f} s"
        )
        if result.error:
            line += f"  ERROR {result.error}"
        log(line)
    return runs


async def poll_rss(pid: int, peak: list[int]) -> None:
    while True:
        rss = rss_bytes(pid)
        if rss is not None:
            peak[0] = max(peak[0], rss)
        await asyncio.sleep(1.0)


async def measure(system: System, server: ServerProcess, n: int, clips, pcm, args) -> dict:
    port, pid = server.port, server.pid
    warm = await run_session(
        system.session(port), pcm[clips[0].id][: int(WARMUP_S * 32000)], 0.5, 0.5
    )
    if warm.error:
        raise RuntimeError(f"warm-up session failed: {warm.error}")
    peak = [0]
    poller = asyncio.create_task(poll_rss(pid, peak))
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    per_stream = await asyncio.gather(
        *(run_stream(system, port, i, n, clips, pcm, args) for i in range(n))
    )
    wall = time.monotonic() - t0
    cpu1 = cpu_seconds(pid)
    poller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await poller
    files = [f for stream in per_stream for f in stream]
    return {
        "files": files,
        "wall_s": round(wall, 1),
        "cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 1),
        "rss_peak_mb": round(peak[0] / 2**20) if peak[0] else None,
    }


# ---------------------------------------------------------------------------------- figures
def analyse(f: FileRun, bounds: tuple[float, float]) -> dict:
    """Per file: first text after speech onset; when the final text last changed and when the
    shown text (final + partial) last changed, after speech end; all in ms, normalised words."""
    r, tr = f.result, f.result.tracker
    out = {
        "stream": f.stream,
        "clip": f.clip.id,
        "duration_s": f.clip.duration,
        "speech_s": [round(b, 2) for b in bounds],
        "error": r.error,
        "connect_ms": rnd(r.connect_ms, 1),
        "send_late_max_s": round(r.max_send_late_s, 3),
        "tail_s": round(r.tail_s, 1),
        "text_changes": len(tr.changes),
        "hypothesis": " ".join(p for p in (tr.final.strip(), tr.partial.strip()) if p),
        "not_final": bool(normalise(tr.partial)),
        "first_text_ms": None,
        "final_ms": None,
        "settled_ms": None,
    }
    if r.t_audio0 is None:
        return out
    onset, end = r.t_audio0 + bounds[0], r.t_audio0 + bounds[1]
    prev_final = prev_shown = ""
    for t, final, partial in tr.changes:
        if out["first_text_ms"] is None and (final.strip() or partial.strip()):
            out["first_text_ms"] = round((t - onset) * 1000, 1)
        nf, ns = normalise(final), normalise(f"{final} {partial}")
        if nf != prev_final:
            prev_final = nf
            if nf and not out["not_final"]:  # never final: no final time, counted apart
                out["final_ms"] = round((t - end) * 1000, 1)
        if ns != prev_shown:
            prev_shown = ns
            out["settled_ms"] = round((t - end) * 1000, 1)
    return out


def held(failed: int, first_text: dict, settled: dict, held_s: float) -> bool:
    """Held in real time: no failed session, and for 95 % of files the text both shows up
    within `held_s` of the speech and settles within `held_s` of its end (a server that drops
    audio it cannot keep up with settles early, but its text comes late or not at all)."""
    limit = held_s * 1000
    return failed == 0 and all(
        d["p95"] is not None and d["p95"] <= limit for d in (first_text, settled)
    )


def summarise(system: str, n: int, run: dict, bounds: dict, offline_wer, held_s: float) -> dict:
    files: list[FileRun] = run["files"]
    per_file = [analyse(f, bounds[f.clip.id]) for f in files]
    wer = corpus_wer([f.clip.text for f in files], [p["hypothesis"] for p in per_file])
    speech = sum(f.clip.duration for f in files)
    # audio streamed: each file (padded to whole chunks) and the silence after it
    streamed = sum(np.ceil(f.clip.duration / 0.1) * 0.1 + f.result.tail_s for f in files)
    settled = dist([p["settled_ms"] for p in per_file])
    failed = sum(p["error"] is not None for p in per_file)
    cpu = run["cpu_s"]
    return {
        "system": system,
        "streams": n,
        "files": len(files),
        "speech_s": round(speech, 1),
        "failed_sessions": failed,
        "errors": sorted({p["error"] for p in per_file if p["error"]})[:5],
        "wer": wer,
        "wer_offline": offline_wer,
        "wer_ratio": wer / offline_wer if wer is not None and offline_wer else None,
        "first_text_ms": dist([p["first_text_ms"] for p in per_file]),
        "final_ms": dist([p["final_ms"] for p in per_file]),
        "settled_ms": settled,
        "files_not_final": sum(p["not_final"] for p in per_file),
        "files_without_text": sum(not p["hypothesis"] for p in per_file),
        "tail_mean_s": round(float(np.mean([p["tail_s"] for p in per_file])), 2),
        "send_late_max_s": max((p["send_late_max_s"] for p in per_file), default=0.0),
        "cpu_s": cpu,
        "audio_streamed_s": round(float(streamed), 1),
        "cpu_per_audio_s": None if cpu is None or not streamed else round(cpu / streamed, 3),
        "cores_busy": None if cpu is None else round(cpu / run["wall_s"], 2),
        "wall_s": run["wall_s"],
        "rss_peak_mb": run["rss_peak_mb"],
        "held": held(failed, dist([p["first_text_ms"] for p in per_file]), settled, held_s),
        "per_file": per_file,
    }


# ---------------------------------------------------------------------------------- runs
def run_level(system: System, n: int, clips, pcm, bounds, offline_wer, args, stamp: str) -> dict:
    """One (system, N): a fresh server, a warm-up session, the measured run. Never raises."""
    log_path = RESULTS / f"peers-{stamp}-{system.name}-n{n}.log"
    server: ServerProcess | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="peers-bench-") as tmp:
            try:
                server = start_server(
                    system, model_path(), log_path, Path(tmp), max(args.streams), clips[0].path
                )
                ready_s = server.wait_ready()
                log(f"{system.name} pid {server.pid} port {server.port} ready in {ready_s:.1f} s")
                run = asyncio.run(measure(system, server, n, clips, pcm, args))
            finally:
                if server is not None:
                    server.stop()
        row = summarise(system.name, n, run, bounds, offline_wer, args.held_within)
        row["ready_s"] = round(ready_s, 1)
    except (RuntimeError, OSError) as exc:
        reason = failure_reason(server, exc)
        log(f"{system.name} N={n} FAILED: {reason}")
        row = {"system": system.name, "streams": n, "failed": reason}
    row["server_log"] = str(log_path)
    if server is not None:
        row["log_problems"], row["log_examples"] = server.log_problems(limit=4)
    return row


def install(systems: list[System]) -> dict[str, str]:
    """Create the peers' venvs; return {system: why it cannot run} for those that failed."""
    broken = {}
    for system in systems:
        if system.install is None:
            continue
        try:
            ensure_venv(system.install)
        except (InstallError, OSError) as exc:
            broken[system.name] = f"install failed: {exc}"
            log(f"{system.name}: {broken[system.name]}")
    return broken


def versions(systems: list[System]) -> dict:
    out = {}
    common = ("faster-whisper", "ctranslate2", "torch", "onnxruntime", "numpy")
    for s in systems:
        if s.install is None:
            out[s.name] = package_versions(sys.executable, ("streamscribe", *common))
        elif venv_python(s.install).exists():
            name = s.install.package.split("==")[0]
            out[s.name] = package_versions(venv_python(s.install), (name, *common))
    return out


def print_table(h: dict, rows: list[dict]) -> None:
    m = h["machine"]
    print(f"date:    {h['date']}")
    print(f"command: {h['command']}")
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM")
    print(f"load:    {m['loadavg_at_start']} (1/5/15 min load average at start)")
    print(f"model:   {h['model']}")
    print(f"corpus:  {h['corpus']['files']} utterances, {h['corpus']['speech_s']} s of speech")
    for name, v in h["versions"].items():
        print(f"{name}: " + ", ".join(f"{k} {x}" for k, x in v.items() if x))
    print(
        "\n| system | N | WER | ÷ offline | first text s P50 / P95 | final s P50 / P95 "
        "| settled s P50 / P95 | not final | CPU s / audio s | cores busy | RSS MB "
        "| failed | held |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if "failed" in r:
            reason = r["failed"][:160].replace("|", "/")
            print(f"| {r['system']} | {r['streams']} | failed: {reason} |" + " |" * 10)
            continue
        print(
            f"| {r['system']} | {r['streams']} | {fmt_pct(r['wer'])} "
            f"| {fmt(r['wer_ratio'], '.2f')} | {fmt_dist(r['first_text_ms'], 0.001, 2)} "
            f"| {fmt_dist(r['final_ms'], 0.001, 2)} | {fmt_dist(r['settled_ms'], 0.001, 2)} "
            f"| {r['files_not_final']} | {fmt(r['cpu_per_audio_s'], '.2f')} "
            f"| {fmt(r['cores_busy'], '.2f')} | {fmt(r['rss_peak_mb'])} "
            f"| {r['failed_sessions']} | {'yes' if r['held'] else 'no'} |"
        )
    print(
        f"\nWER offline (same model, whole files, beam 5): {fmt_pct(h['wer_offline'])}; "
        f"CPU per second of audio streamed (files and the silence after them); "
        f"held: no failed session, and 95 % of files with their first text and settled "
        f"within {h['held_within_s']} s"
    )
    for r in rows:
        if "failed" in r:
            continue
        worst = r["settled_ms"]["max"]
        print(
            f"{r['system']} N={r['streams']}: wall {r['wall_s']} s, CPU {fmt(r['cpu_s'], '.1f')} "
            f"s, settled max {fmt(None if worst is None else worst / 1000, '.2f')} s, "
            f"silence after files {r['tail_mean_s']} s mean, files without text "
            f"{r['files_without_text']}, client send late max {r['send_late_max_s']:.2f} s, "
            f"log {r['server_log']} ({r.get('log_problems', 0)} warning/error lines)"
        )
        for err in r["errors"]:
            print(f"  error: {err}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    systems = [SYSTEMS[name] for name in args.systems]
    broken = install(systems)
    if args.install_only:
        for name, v in versions(systems).items():
            print(f"{name}: {v}")
        return 1 if broken else 0
    clips = load_manifest(args.eval_dir, "utterance", args.limit)
    pcm = {c.id: read_pcm(c.path) for c in clips}
    bounds = {c.id: speech_bounds(pcm[c.id]) for c in clips}
    offline = offline_hypotheses(clips, RESULTS)
    offline_wer = corpus_wer([c.text for c in clips], [offline[c.id] for c in clips])
    speech_s = round(sum(c.duration for c in clips), 1)
    log(f"{len(clips)} utterances, {speech_s} s of speech; offline WER {fmt_pct(offline_wer)}")
    h = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine_info(),
        "model": model_path(),
        "versions": versions(systems),
        "configs": {s.name: s.how for s in systems},
        "left_out": {s.name: s.install.left_out for s in systems if s.install},
        "corpus": {"files": len(clips), "speech_s": speech_s, "ids": [c.id for c in clips]},
        "wer_offline": offline_wer,
        "tail_s": {"min": args.tail_min, "max": args.tail_max, "quiet": args.tail_quiet},
        "held_within_s": args.held_within,
    }
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    rows = []
    for k, n in enumerate(args.streams):
        order = systems[k % len(systems) :] + systems[: k % len(systems)]  # rotate per level
        for system in order:
            if system.name in broken:
                rows.append({"system": system.name, "streams": n, "failed": broken[system.name]})
                continue
            log(f"--- {system.name}, {n} stream(s)")
            rows.append(run_level(system, n, clips, pcm, bounds, offline_wer, args, stamp))
    rows.sort(key=lambda r: (r["streams"], args.systems.index(r["system"])))
    print_table(h, rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**h, "rows": rows}, indent=1, default=str))
        log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Streaming benchmark: accuracy, latency, real-time margin and cost of N concurrent v3 streams.

Why this exists: the figures a real-time server is judged by (how soon words appear, how soon
they stop changing, how soon a turn is closed, what streaming costs in WER against the same model
offline, how many streams one machine carries, whether memory and latency stay flat for hours)
only mean something measured end to end: the real `streamscribe serve` process, real WebSocket
clients sending real speech paced by the wall clock. This script drives such runs and prints the
figures; the per-session client and its analysis are in `bench_session.py`, the server process
and its resource polling in `bench_server.py`, corpus and scoring in `bench_corpus.py`.

Usage (see bench/README.md):
    .venv/bin/python bench/stream_bench.py --streams 1 8 --json bench/results/run.json
    .venv/bin/python bench/stream_bench.py --soak 30
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
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
from bench_corpus import (
    Clip,
    corpus_wer,
    load_manifest,
    model_path,
    offline_hypotheses,
    read_pcm,
)
from bench_server import (
    POLL_S,
    ResourceMonitor,
    ServerProcess,
    cpu_seconds,
    find_listening_pid,
    http_base,
    machine_info,
)
from bench_session import CHUNK_BYTES, CHUNK_S, SessionAnalyzer, SessionOutcome, stream_session

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
QUERY = "sample_rate=16000&encoding=pcm_s16le&format_turns=true"
DEFAULT_MIN_TURN_SILENCE_MS = 400
LATE_LIMIT_S = 0.5


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, nargs="+", default=[1], help="concurrency levels")
    p.add_argument("--eval-dir", type=Path, default=REPO.parent / "shared" / "eval" / "dev")
    p.add_argument("--kind", choices=["utterance", "conversation", "long"], default="utterance")
    p.add_argument("--limit", type=int, help="use only the first LIMIT files")
    p.add_argument("--url", help="benchmark a running server (ws://host:port) instead")
    p.add_argument("--server-pid", type=int, help="its pid, for CPU/RSS (found by port if unset)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--soak", type=float, metavar="MINUTES", help="one looped long stream instead")
    p.add_argument("--trailing-silence", type=float, default=1.5, help="s of zeros after a file")
    p.add_argument("--min-turn-silence", type=int, help="ms; sent in the query when set")
    p.add_argument("--max-turn-silence", type=int, help="ms; sent in the query when set")
    p.add_argument("--no-offline", action="store_true", help="skip the offline WER baseline")
    return p.parse_args(argv)


def session_url(base: str, args: argparse.Namespace) -> str:
    query = QUERY
    if args.min_turn_silence is not None:
        query += f"&min_turn_silence={args.min_turn_silence}"
    if args.max_turn_silence is not None:
        query += f"&max_turn_silence={args.max_turn_silence}"
    return f"{base.rstrip('/')}/v3/ws?{query}"


# ---------------------------------------------------------------------------------- audio
def to_chunks(pcm: bytes) -> list[bytes]:
    """100 ms chunks; the last is padded with zeros (the server rejects frames under 50 ms)."""
    pcm += bytes(-len(pcm) % CHUNK_BYTES)
    return [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]


def silence(seconds: float) -> bytes:
    return bytes(int(round(seconds / CHUNK_S)) * CHUNK_BYTES)


# ---------------------------------------------------------------------------------- statistics
def dist(values: Iterable[float | None]) -> dict:
    """P50/P95/max/n of a list of ms values (Nones are left out)."""
    values = [v for v in values if v is not None]
    if not values:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    a = np.asarray(values, dtype=float)
    return {
        "p50": round(float(np.percentile(a, 50)), 1),
        "p95": round(float(np.percentile(a, 95)), 1),
        "max": round(float(a.max()), 1),
        "n": len(values),
    }


def fmt_dist(d: dict, scale: float = 1.0, digits: int = 0) -> str:
    if not d["n"]:
        return "n/a"
    return f"{d['p50'] * scale:.{digits}f} / {d['p95'] * scale:.{digits}f}"


def fmt(value: float | None, spec: str = ".0f", none: str = "n/a") -> str:
    return none if value is None else format(value, spec)


def rnd(value: float | None, digits: int = 0) -> float | None:
    return None if value is None else round(value, digits)


# ---------------------------------------------------------------------------------- one run
@dataclass
class FileResult:
    stream: int
    clip: Clip
    outcome: SessionOutcome

    def to_json(self) -> dict:
        a = self.outcome.analyzer
        return {
            "stream": self.stream,
            "clip": self.clip.id,
            "duration_s": self.clip.duration,
            "error": self.outcome.error,
            "close_code": self.outcome.close_code,
            "connect_ms": rnd(self.outcome.connect_ms, 1),
            "max_send_late_s": round(self.outcome.max_send_late_s, 3),
            "reference": self.clip.text,
            "hypothesis": a.hypothesis(),
            "anomalies": dict(a.anomalies),
            "turns": [_turn_json(t) for t in a.turns],
        }


def _turn_json(turn) -> dict:
    d = asdict(turn)
    d.pop("received")
    d.pop("words", None)
    for key in ("first_partial_ms", "end_of_turn_ms"):
        d[key] = None if d[key] is None else round(d[key], 1)
    d["word_final_ms"] = [round(x, 1) for x in d["word_final_ms"]]
    return d


async def run_stream(
    i: int,
    n: int,
    clips: list[Clip],
    pcm: dict[str, bytes],
    url: str,
    trailing_s: float,
    headers: dict[str, str] | None = None,
) -> list[FileResult]:
    """Stream i: every clip, its list rotated by i, one session per clip, back to back."""
    order = clips[i % len(clips) :] + clips[: i % len(clips)]
    results = []
    for k, clip in enumerate(order, 1):
        analyzer = SessionAnalyzer(f"N={n} s{i} {clip.id}")
        chunks = to_chunks(pcm[clip.id] + silence(trailing_s))
        # the first sessions start out of phase, so chunks of different streams interleave
        phase = i * CHUNK_S / n if k == 1 else 0.0
        outcome = await stream_session(url, chunks, analyzer, phase, headers)
        results.append(FileResult(i, clip, outcome))
        log(progress_line(n, i, k, len(order), clip, outcome))
    return results


def progress_line(n: int, i: int, k: int, total: int, clip: Clip, o: SessionOutcome) -> str:
    turns = o.analyzer.turns
    fp = dist([t.first_partial_ms for t in turns if t.first_partial_ms is not None])
    eot = dist([t.end_of_turn_ms for t in turns if t.end_of_turn_ms is not None])
    line = (
        f"[N={n}] stream {i} file {k}/{total} {clip.id} ({clip.duration:.1f} s): "
        f"{len(turns)} turn(s), first partial {fmt(fp['max'])} ms, "
        f"end of turn {fmt(eot['max'])} ms (max), send late {o.max_send_late_s:.2f} s"
    )
    if o.error:
        line += f"  ERROR {o.error}"
    if o.analyzer.anomalies:
        line += f"  anomalies {dict(o.analyzer.anomalies)}"
    return line


async def run_concurrency(
    n: int, clips: list[Clip], pcm: dict[str, bytes], url: str, pid: int | None, args
) -> tuple[dict, list[FileResult]]:
    base = http_base(url)
    info = httpx.get(f"{base}/v1/info", timeout=5).json()
    monitor = ResourceMonitor(pid, base)
    await monitor.poll_once()
    rss_start = monitor.peak_rss_mb()
    lag_seen_before = monitor.last_metrics.get("session_lag_ms_max_seen")
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    monitor.start()
    ws_url = session_url(url, args)
    per_stream = await asyncio.gather(
        *(run_stream(i, n, clips, pcm, ws_url, args.trailing_silence) for i in range(n))
    )
    wall = time.monotonic() - t0
    cpu1 = cpu_seconds(pid)
    await monitor.stop()
    files = [f for stream in per_stream for f in stream]
    resources = {
        "wall_s": round(wall, 1),
        "cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 1),
        "rss_start_mb": rnd(rss_start),
        "rss_peak_mb": rnd(monitor.peak_rss_mb(t0)),
        "lag_polled_max_ms": monitor.max_lag_ms(t0),
        "lag_polled": monitor.lag_profile(t0),
        "backlog_polled_max_ms": monitor.max_backlog_ms(t0),
        "lag_seen_before_ms": lag_seen_before,
        "server_metrics": monitor.last_metrics,
        "server_model": info.get("model"),
    }
    return summarise(n, files, resources), files


def summarise(n: int, files: list[FileResult], res: dict) -> dict:
    ok = [f for f in files if f.outcome.error is None]
    turns = [t for f in files for t in f.outcome.analyzer.turns]
    connects = [f.outcome.connect_ms for f in files if f.outcome.connect_ms is not None]
    anomalies: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for f in files:
        anomalies.update(f.outcome.analyzer.anomalies)
        for kind, ex in f.outcome.analyzer.examples.items():
            examples.setdefault(kind, ex)
    audio_sent = sum(f.outcome.audio_s for f in files)
    late_by_stream: dict[int, float] = {}
    for f in files:
        late_by_stream[f.stream] = max(late_by_stream.get(f.stream, 0.0), f.outcome.max_send_late_s)
    metrics = res["server_metrics"]
    cpu = res["cpu_s"]
    return {
        "streams": n,
        "files": len(files),
        "failed_sessions": len(files) - len(ok),
        "errors": sorted({f.outcome.error for f in files if f.outcome.error})[:10],
        "speech_s": round(sum(f.clip.duration for f in files), 1),
        "audio_sent_s": round(audio_sent, 1),
        "wer_stream": corpus_wer(
            [f.clip.text for f in files], [f.outcome.analyzer.hypothesis() for f in files]
        ),
        "turns": len(turns),
        "turns_without_partial": sum(not t.partial_before_end for t in turns),
        "eot_after_terminate": sum(t.after_terminate for t in turns),
        "first_partial_ms": dist([t.first_partial_ms for t in turns]),
        "word_final_ms": dist([x for t in turns for x in t.word_final_ms]),
        "end_of_turn_ms": dist([t.end_of_turn_ms for t in turns]),
        "connect_ms": dist(connects),
        "send_late_max_s": round(max(late_by_stream.values(), default=0.0), 3),
        "streams_late": sum(v > LATE_LIMIT_S for v in late_by_stream.values()),
        "server_lag_max_seen_ms": metrics.get("session_lag_ms_max_seen"),
        "cpu_per_audio_s": None if cpu is None or not audio_sent else round(cpu / audio_sent, 3),
        "cores_busy": None if cpu is None else round(cpu / res["wall_s"], 2),
        "anomalies": dict(anomalies),
        "anomaly_examples": examples,
        **res,
    }


# ---------------------------------------------------------------------------------- servers
@contextlib.contextmanager
def server_for(args, label: str) -> Iterator[tuple[str, int | None, ServerProcess | None]]:
    """A fresh server per run (so peak RSS and max lag belong to it), or the one at --url."""
    if args.url:
        yield args.url, args.server_pid or find_listening_pid(args.url), None
        return
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="streamscribe-bench-") as tmp:
        server = ServerProcess(Path(tmp), RESULTS / f"server-{stamp}-{label}.log")
        server.start()
        try:
            ready_s = server.wait_ready()
            log(f"server pid {server.pid} ready on {server.url} in {ready_s:.1f} s")
            yield server.url, server.pid, server
        finally:
            server.stop()


def log_report(server: ServerProcess | None) -> dict:
    if server is None:
        return {}
    count, lines = server.log_problems()
    return {"server_log": str(server.log_path), "log_problems": count, "log_examples": lines}


# ---------------------------------------------------------------------------------- report
def header(args, machine: dict) -> dict:
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine,
        "model": model_path(),
        "min_turn_silence_ms": args.min_turn_silence or DEFAULT_MIN_TURN_SILENCE_MS,
        "min_turn_silence_source": "query" if args.min_turn_silence else "server default",
    }


def print_header(h: dict) -> None:
    m = h["machine"]
    print(f"date:    {h['date']}")
    print(f"command: {h['command']}")
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM")
    print(f"load:    {m['loadavg_at_start']} (1/5/15 min load average at start)")
    print(f"model:   {h['model']}")


def print_tables(h: dict, runs: list[dict]) -> None:
    mts = f"{h['min_turn_silence_ms']} ms, {h['min_turn_silence_source']}"
    print("\nAccuracy and latency (latencies in ms, P50 / P95)")
    print(
        "| streams | files | speech s | WER stream | WER offline | stream/offline | first partial "
        f"| word final | end of turn [min_turn_silence {mts}] | turns | EOT after Terminate |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['streams']} | {r['files']} | {r['speech_s']} "
            f"| {fmt_pct(r['wer_stream'])} | {fmt_pct(r.get('wer_offline'))} "
            f"| {fmt(r.get('wer_ratio'), '.2f')} "
            f"| {fmt_dist(r['first_partial_ms'])} | {fmt_dist(r['word_final_ms'])} "
            f"| {fmt_dist(r['end_of_turn_ms'])} | {r['turns']} | {r['eot_after_terminate']} |"
        )
    print("\nReal time and resources")
    print(
        "| streams | connect ms P50 / P95 | send late max s | streams late > 0.5 s "
        "| server lag max ms (metrics / polled) | CPU s per audio s | cores busy "
        "| RSS start / peak MB | failed sessions | anomalies |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['streams']} | {fmt_dist(r['connect_ms'])} | {r['send_late_max_s']:.2f} "
            f"| {r['streams_late']} | {fmt(r['server_lag_max_seen_ms'])} / "
            f"{fmt(r['lag_polled_max_ms'])} | {fmt(r['cpu_per_audio_s'], '.3f')} "
            f"| {fmt(r['cores_busy'], '.2f')} | {fmt(r['rss_start_mb'])} / "
            f"{fmt(r['rss_peak_mb'])} | {r['failed_sessions']} "
            f"| {sum(r['anomalies'].values())} |"
        )
    print_details(runs)


def print_details(runs: list[dict]) -> None:
    for r in runs:
        m = r["server_metrics"]
        print(
            f"\nN={r['streams']}: wall {r['wall_s']} s, audio sent {r['audio_sent_s']} s, "
            f"CPU {fmt(r['cpu_s'], '.1f')} s; turns without a partial before the end "
            f"{r['turns_without_partial']}/{r['turns']}; first partial max "
            f"{fmt(r['first_partial_ms']['max'])} ms, end of turn max "
            f"{fmt(r['end_of_turn_ms']['max'])} ms"
        )
        print(
            f"  scheduler: batches {m.get('decode_batches')}, requests {m.get('decode_requests')}, "
            f"superseded {m.get('decode_superseded')}, promoted {m.get('decode_promoted')}, "
            f"failed {m.get('decode_failed')}, "
            f"decode P50 {m.get('decode_ms_p50')} ms, mean batch {m.get('batch_size_mean')}"
        )
        if r.get("lag_polled"):
            lp = r["lag_polled"]
            print(
                f"  lag polled every {POLL_S:g} s (the most-behind session): P50 {lp['p50']} ms, "
                f"P95 {lp['p95']} ms, a session over {lp['over_ms']} ms behind in "
                f"{100 * lp['share_over']:.1f} % of {lp['polls']} polls; the peak "
                f"{lp['peak_at_s']} s into the run"
            )
            if lp.get("peak"):
                print(f"  the most-behind session at the peak: {lp['peak']}")
            if lp.get("causes_p95"):
                print(f"  polls at or over P95 (state/waiting on): {lp['causes_p95']}")
        kinds = m.get("decode_kinds") or {}
        if kinds:
            print(
                "  decodes by kind (count, mean model ms, mean queue ms): "
                + ", ".join(
                    f"{k} {v['decodes']}, {v['mean_model_ms']:.0f}, {v['mean_queue_ms']:.0f}"
                    for k, v in kinds.items()
                )
            )
        if r.get("backlog_polled_max_ms") is not None:
            print(
                f"  uncovered audio, pauses included (the lag before session 9), polled max: "
                f"{r['backlog_polled_max_ms']} ms"
            )
        if r.get("lag_seen_before_ms"):
            print(f"  note: server lag high-water before this run: {r['lag_seen_before_ms']} ms")
        for err in r["errors"]:
            print(f"  error: {err}")
        for kind, count in r["anomalies"].items():
            print(f"  anomaly x{count}: {kind} (e.g. {r['anomaly_examples'][kind]})")
        if r.get("server_log"):
            print(f"  server log {r['server_log']}: {r['log_problems']} warning/error lines")
            for line in r["log_examples"]:
                print(f"    {line[:200]}")


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


# ---------------------------------------------------------------------------------- concurrency
def run_benchmark(args, h: dict) -> dict:
    clips = load_manifest(args.eval_dir, args.kind, args.limit)
    log(f"{len(clips)} {args.kind} files, {sum(c.duration for c in clips):.0f} s of speech")
    offline_wer = None
    if not args.no_offline:
        offline = offline_hypotheses(clips, RESULTS)
        offline_wer = corpus_wer([c.text for c in clips], [offline[c.id] for c in clips])
        log(f"offline WER {100 * offline_wer:.2f}%")
    pcm = {c.id: read_pcm(c.path) for c in clips}
    runs = []
    for n in args.streams:
        with server_for(args, f"n{n}") as (url, pid, server):
            summary, files = asyncio.run(run_concurrency(n, clips, pcm, url, pid, args))
        summary.update(log_report(server))
        summary["wer_offline"] = offline_wer
        summary["wer_ratio"] = (
            summary["wer_stream"] / offline_wer
            if offline_wer and summary["wer_stream"] is not None
            else None
        )
        summary["per_file"] = [f.to_json() for f in files]
        runs.append(summary)
    print_header(h)
    print(f"corpus:  {args.kind} x{len(clips)} from {args.eval_dir}")
    print_tables(h, runs)
    return {**h, "corpus": {"kind": args.kind, "files": [c.id for c in clips]}, "runs": runs}


# ---------------------------------------------------------------------------------- soak
SOAK_GAP_S = 1.0
SOAK_REPORT_S = 60.0


def soak_chunks(pcm: bytes, loops: int, trailing_s: float) -> Iterator[bytes]:
    """The clip plus a gap, `loops` times, then trailing silence: generated, never held whole."""
    one = to_chunks(pcm + silence(SOAK_GAP_S))
    for _ in range(loops):
        yield from one
    yield from to_chunks(silence(trailing_s))


def minute_row(k: int, analyzer: SessionAnalyzer, monitor: ResourceMonitor, w0: float, w1: float):
    turns = [t for t in analyzer.turns if w0 <= t.received < w1]
    samples = monitor.window(w0, w1)
    cpus = [s.cpu_s for s in samples if s.cpu_s is not None]
    rss = [s.rss for s in samples if s.rss is not None]
    return {
        "minute": k,
        "rss_mb": round(rss[-1] / 2**20) if rss else None,
        "rss_peak_mb": rnd(monitor.peak_rss_mb(w0, w1)),
        "turns": len(turns),
        "first_partial_p50_ms": dist([t.first_partial_ms for t in turns])["p50"],
        "word_final_p50_ms": dist([x for t in turns for x in t.word_final_ms])["p50"],
        "end_of_turn_p50_ms": dist([t.end_of_turn_ms for t in turns])["p50"],
        "lag_max_ms": monitor.max_lag_ms(w0, w1),
        "cores_busy": round((cpus[-1] - cpus[0]) / (w1 - w0), 2) if len(cpus) > 1 else None,
    }


def print_minute(row: dict) -> None:
    print(
        f"| {row['minute']} | {fmt(row['rss_mb'])} | {fmt(row['rss_peak_mb'])} | {row['turns']} "
        f"| {fmt(row['first_partial_p50_ms'])} | {fmt(row['word_final_p50_ms'])} "
        f"| {fmt(row['end_of_turn_p50_ms'])} | {fmt(row['lag_max_ms'])} "
        f"| {fmt(row['cores_busy'], '.2f')} |",
        flush=True,
    )


async def soak_reporter(
    analyzer: SessionAnalyzer, monitor: ResourceMonitor, rows: list, t_start: float
) -> None:
    for k in range(1, 10**6):
        await asyncio.sleep(t_start + k * SOAK_REPORT_S - time.monotonic())
        w0, w1 = t_start + (k - 1) * SOAK_REPORT_S, t_start + k * SOAK_REPORT_S
        rows.append(minute_row(k, analyzer, monitor, w0, w1))
        print_minute(rows[-1])


def per_loop_wer(analyzer: SessionAnalyzer, clip: Clip, period_ms: int, loops: int) -> list:
    """WER of each pass over the clip: words are assigned to a pass by their start time."""
    hyps: list[list[str]] = [[] for _ in range(loops)]
    for turn in analyzer.turns:
        for text, start in turn.words:
            hyps[min(loops - 1, start // period_ms)].append(text)
    return [corpus_wer([clip.text], [" ".join(h)]) for h in hyps]


async def run_soak_session(args, url: str, pid: int | None, clip: Clip) -> dict:
    pcm = read_pcm(clip.path)
    period_s = len(to_chunks(pcm + silence(SOAK_GAP_S))) * CHUNK_S
    loops = max(1, int(np.ceil(args.soak * 60 / period_s)))
    log(f"soak: {clip.id} ({period_s:.1f} s with gap) x{loops} = {loops * period_s / 60:.1f} min")
    monitor = ResourceMonitor(pid, http_base(url))
    monitor.start()
    analyzer = SessionAnalyzer(f"soak {clip.id}")
    rows: list[dict] = []
    print("| minute | RSS MB | RSS peak MB | turns | first partial P50 ms | word final P50 ms "
          "| end of turn P50 ms | server lag max ms | cores busy |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    t_start = time.monotonic()
    reporter = asyncio.create_task(soak_reporter(analyzer, monitor, rows, t_start))
    outcome = await stream_session(
        session_url(url, args), soak_chunks(pcm, loops, args.trailing_silence), analyzer
    )
    reporter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reporter
    await monitor.stop()
    w0, w1 = t_start + len(rows) * SOAK_REPORT_S, time.monotonic()
    if w1 - w0 > 5:  # the last, shorter stretch
        rows.append(minute_row(len(rows) + 1, analyzer, monitor, w0, w1))
        print_minute(rows[-1])
    wers = per_loop_wer(analyzer, clip, int(period_s * 1000), loops)
    print(f"\nWER per pass (%): {' '.join(fmt(_pct(w), '.1f') for w in wers)}")
    print(f"session error: {outcome.error}" if outcome.error else "session ended normally")
    for kind, count in analyzer.anomalies.items():
        print(f"anomaly x{count}: {kind} (e.g. {analyzer.examples[kind]})")
    return {
        "clip": clip.id,
        "loops": loops,
        "minutes": rows,
        "wer_per_pass": wers,
        "error": outcome.error,
        "send_late_max_s": round(outcome.max_send_late_s, 3),
        "server_lag_max_seen_ms": monitor.last_metrics.get("session_lag_ms_max_seen"),
        "anomalies": dict(analyzer.anomalies),
        "turns": [_turn_json(t) for t in analyzer.turns],
    }


def run_soak(args, h: dict) -> dict:
    clip = load_manifest(args.eval_dir, "long")[0]
    print_header(h)
    with server_for(args, "soak") as (url, pid, server):
        result = asyncio.run(run_soak_session(args, url, pid, clip))
    result.update(log_report(server))
    if result.get("server_log"):
        print(f"server log {result['server_log']}: {result['log_problems']} warning/error lines")
    return {**h, "soak": result}


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    h = header(args, machine_info())
    report = run_soak(args, h) if args.soak else run_benchmark(args, h)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
        log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pool benchmark: what one decode request costs in-process and through the Ray Serve pool.

Why this exists: the decode pool buys scale (replicas on other machines) at a price per request:
serialising the audio, the hop through the Serve router to a replica and back. This measures
that price on one machine: the same model (tiny.en, one thread), the same requests (real speech
windows of the sizes sessions send), one request at a time, first decoded by the model in this
process, then through a local Ray cluster with one replica. It prints per-request latency
(p50/p95) and CPU seconds per request; for the pool the CPU is that of this process plus every
Ray process it started (GCS, raylet, Serve controller, replica), so the difference is the full
cost of going through Ray. Concurrency is not measured here (see stream_bench.py for sessions).

Usage:
    .venv/bin/python bench/pool_bench.py --requests 40 --window-s 5
"""

from __future__ import annotations

import os

# a Ray replica with one CPU runs with OMP_NUM_THREADS=1; the local decoder gets the same, or
# the comparison measures OpenMP's spinning threads rather than the cost of Ray
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from speech import utterances  # noqa: E402

from streamscribe.config import Settings  # noqa: E402
from streamscribe.engine.backends import load_local_transcriber  # noqa: E402
from streamscribe.engine.decoding import DecodeRequest, Transcriber  # noqa: E402


def cpu_seconds(include_children: bool) -> float:
    me = psutil.Process()
    procs = [me, *(me.children(recursive=True) if include_children else [])]
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # a process that ended meanwhile
            pass
    return total


def measure(
    transcriber: Transcriber, requests: list[DecodeRequest], ray_stack: bool
) -> dict[str, float]:
    transcriber.transcribe_batch(requests[:2])  # warm-up
    latencies = []
    cpu0, wall0 = cpu_seconds(ray_stack), time.perf_counter()
    for r in requests:
        t = time.perf_counter()
        result = transcriber.transcribe_batch([r])
        latencies.append((time.perf_counter() - t) * 1000)
        assert len(result) == 1
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds(ray_stack) - cpu0
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
        "cpu_ms_per_request": cpu / len(requests) * 1000,
        "requests_per_s": len(requests) / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--window-s", type=float, default=5.0, help="audio per request")
    ap.add_argument("--model", default="tiny.en")
    args = ap.parse_args()
    os.environ.update(RAY_DISABLE_USAGE_STATS="1", RAY_USAGE_STATS_ENABLED="0")

    clips = utterances(4)
    if not clips:
        sys.exit("no speech: ../shared/eval is absent and espeak-ng is not installed")
    speech = np.concatenate([c.audio for c in clips])
    n = int(args.window_s * 16000)
    requests = [
        DecodeRequest(speech[(i * n // 3) % (len(speech) - n) :][:n], final=i % 4 == 0)
        for i in range(args.requests)
    ]
    settings = Settings(model=args.model, cpu_threads=1, data_dir=Path("data"))
    print(f"machine: {psutil.cpu_count()} cores, load {os.getloadavg()[0]:.2f} (shared)")
    print(f"{args.requests} requests of {args.window_s:g} s, {args.model}, 1 thread, one at a time")

    model = load_local_transcriber(settings)
    local = measure(model, requests, ray_stack=False)

    import ray
    from ray import serve

    from streamscribe.pool.client import RayPoolTranscriber
    from streamscribe.pool.deployment import PoolOptions, build_app

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 2**20,
        log_to_driver=False,
    )
    try:
        serve.start(proxy_location="Disabled")
        serve.run(
            build_app(settings, PoolOptions(replicas=1, max_batch_size=8, batch_wait_ms=10)),
            name="bench",
            route_prefix=None,
        )
        pooled = measure(RayPoolTranscriber("bench", model=args.model), requests, ray_stack=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    again = measure(model, requests, ray_stack=False)  # the machine is shared: measure it twice

    print(f"{'decoder':<10}{'p50 ms':>9}{'p95 ms':>9}{'CPU ms/req':>12}{'req/s':>8}")
    for name, m in (("local", local), ("ray pool", pooled), ("local", again)):
        print(
            f"{name:<10}{m['p50_ms']:>9.1f}{m['p95_ms']:>9.1f}"
            f"{m['cpu_ms_per_request']:>12.1f}{m['requests_per_s']:>8.2f}"
        )
    base = {k: (local[k] + again[k]) / 2 for k in local}
    print(
        f"through Ray: {pooled['p50_ms'] - base['p50_ms']:+.1f} ms p50 latency, "
        f"{pooled['cpu_ms_per_request'] - base['cpu_ms_per_request']:+.1f} ms CPU per request "
        "(against the mean of the two local runs)"
    )


if __name__ == "__main__":
    main()

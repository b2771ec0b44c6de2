"""Backend benchmark: throughput, per-batch decode latency and WER of ct2 vs torch, per device.

Why this exists: the torch backend is there to use GPUs that CTranslate2's wheels cannot, and to
decode many sessions' windows in one batch. What it buys is only known measured: audio seconds
decoded per wall second and the latency of one batched decode, at the batch sizes the scheduler
forms, on real speech, with the WER showing nothing was traded away. It runs where the server's
own dependencies are absent (a GPU box with only torch, numpy and tokenizers): it reads WAVs with
the standard library, scores WER itself, and imports only the backend modules it measures.

Partials (`--partials`, torch): streams whose windows grow by 0.5 s as a session's partials
do, each step decoded as one batch twice, back to back in alternating order: without drafts and
with each stream's previous tokens as its draft. It prints per partial the decoder's time (the
prefill or verification pass plus greedy steps) and its passes, the accepted share of the
drafts, and how many windows came out token-identical (they must all).

Usage:
    .venv/bin/python bench/backend_bench.py --backends ct2,torch --device cpu --limit 16
    .venv/bin/python bench/backend_bench.py --partials --threads 1 --batch-sizes 1,4 --limit 24
    python3 bench/backend_bench.py --backends torch --device cuda --model-dir DIR \\
        --batch-sizes 1,4,8,16,64 --json bench/results/gpu.json
    .venv/bin/python bench/backend_bench.py pack --out bench/results/tiny.en-int8
      (an int8 copy of the model, ~40 MB for tiny.en, small enough to carry to a GPU box)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import shutil
import statistics
import sys
import threading
import time
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamscribe.engine.decoding import DecodeRequest  # noqa: E402

RATE = 16000


@dataclass
class Utterance:
    id: str
    audio: np.ndarray
    text: str

    @property
    def seconds(self) -> float:
        return len(self.audio) / RATE


@dataclass
class Row:
    backend: str
    device: str
    batch: int
    beam: int
    batches: int
    audio_s: float
    wall_s: float
    throughput: float  # audio seconds per wall second
    latency_p50_ms: float
    latency_max_ms: float
    wer: float
    gpu_util: float | None = None
    warmup_s: float = 0.0


# ----------------------------------------------------------------------------- corpus, WER


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != RATE or w.getsampwidth() != 2:
            raise SystemExit(f"{path}: expected 16 kHz 16-bit PCM")
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        if w.getnchannels() > 1:
            pcm = pcm.reshape(-1, w.getnchannels()).mean(axis=1)
    return (pcm / 32768.0).astype(np.float32)


def load_utterances(eval_dir: Path, limit: int | None) -> list[Utterance]:
    manifest = eval_dir / "manifest.jsonl"
    if not manifest.is_file():
        return []
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["kind"] == "utterance"][:limit]
    return [Utterance(r["id"], read_wav(eval_dir / r["audio"]), r["text"]) for r in rows]


def normalize(text: str) -> list[str]:
    text = text.lower().replace("mister", "mr").replace("mr.", "mr")
    return re.sub(r"[^a-z0-9' ]+", " ", text).split()


def word_errors(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    errors = sum(word_errors(normalize(r), normalize(h)) for r, h in pairs)
    words = sum(len(normalize(r)) for r, _ in pairs)
    return errors / max(1, words)


# ----------------------------------------------------------------------------- backends


def load_backend(name: str, model_dir: str, device: str, args: argparse.Namespace):
    from streamscribe.config import Settings
    from streamscribe.engine.host_threads import limit_blas_threads

    limit_blas_threads(Settings().blas_threads)  # as the server does (engine/host_threads.py)
    if name == "ct2":
        try:
            from streamscribe.engine.whisper_ct2 import WhisperCT2Transcriber
        except ImportError as exc:
            print(f"# ct2: not installed here ({exc})")
            return None
        try:
            return WhisperCT2Transcriber(
                model_dir,
                device=device,
                compute_type=args.compute_type or ("int8" if device == "cpu" else "float16"),
                cpu_threads=args.threads,
            )
        except (RuntimeError, ValueError) as exc:
            print(f"# ct2 on {device}: cannot load ({str(exc).splitlines()[0]})")
            return None
    from streamscribe.engine.whisper_torch.transcriber import WhisperTorchTranscriber

    return WhisperTorchTranscriber(
        model_dir,
        device=device,
        compute_type=args.compute_type or "default",
        cpu_threads=args.threads,
        cuda_graphs=not args.no_graphs,
        compile_encoder=args.compile_encoder,
        encoder=args.encoder,
    )


@contextlib.contextmanager
def gpu_sampler(enabled: bool):
    """Mean GPU utilisation (%) over the block, sampled every 50 ms through NVML."""
    samples: list[float] = []
    if not enabled:
        yield samples
        return
    import torch

    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                samples.append(float(torch.cuda.utilization()))
            stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def batches_of(utts: list[Utterance], size: int) -> list[list[Utterance]]:
    """Full batches covering every utterance once (the last one topped up from the start)."""
    n = max(1, math.ceil(len(utts) / size))
    return [[utts[(k * size + i) % len(utts)] for i in range(size)] for k in range(n)]


def measure(
    model,
    name: str,
    device: str,
    utts: list[Utterance],
    size: int,
    beam: int,
    warmup: str,
    texts: dict[str, tuple[str, str]] | None = None,
) -> Row:
    batches = batches_of(utts, size)
    requests = [
        [DecodeRequest(u.audio, beam_size=beam, final=beam > 1) for u in b] for b in batches
    ]
    t0 = time.perf_counter()
    for reqs in requests if warmup == "full" else requests[:1]:
        model.transcribe_batch(reqs)
    warm = time.perf_counter() - t0
    sync = _sync(device)
    latencies: list[float] = []
    texts = {} if texts is None else texts
    with gpu_sampler(device.startswith("cuda")) as util:
        start = time.perf_counter()
        for batch, reqs in zip(batches, requests, strict=True):
            t = time.perf_counter()
            results = model.transcribe_batch(reqs)
            sync()
            latencies.append((time.perf_counter() - t) * 1000)
            for u, r in zip(batch, results, strict=True):
                texts.setdefault(u.id, (u.text, r.text))
        wall = time.perf_counter() - start
    audio = sum(u.seconds for b in batches for u in b)
    return Row(
        backend=name,
        device=device,
        batch=size,
        beam=beam,
        batches=len(batches),
        audio_s=round(audio, 1),
        wall_s=round(wall, 3),
        throughput=round(audio / wall, 1),
        latency_p50_ms=round(statistics.median(latencies), 1),
        latency_max_ms=round(max(latencies), 1),
        wer=round(100 * corpus_wer(list(texts.values())), 2),
        gpu_util=round(statistics.mean(util), 1) if util else None,
        warmup_s=round(warm, 2),
    )


def _sync(device: str):
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


# ----------------------------------------------------------------------------- commands


def resolve(args: argparse.Namespace) -> str:
    if args.model_dir:
        return args.model_dir
    from streamscribe.engine.model_files import resolve_model

    return resolve_model(args.model, ROOT / "data" / "models")


def bench(args: argparse.Namespace) -> int:
    utts = load_utterances(Path(args.eval_dir), args.limit)
    if not utts:
        print(f"# no utterances under {args.eval_dir}: nothing to measure")
        return 0
    model_dir = resolve(args)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    total = sum(u.seconds for u in utts)
    print(f"# {len(utts)} utterances, {total:.1f} s of speech; model {model_dir}")
    if args.device.startswith("cuda"):
        import torch

        print(f"# {torch.cuda.get_device_name()}; torch {torch.__version__}")
    rows: list[Row] = []
    transcripts: dict[str, dict[str, str]] = {}
    for name in args.backends.split(","):
        t = time.perf_counter()
        model = load_backend(name, model_dir, args.device, args)
        if model is None:
            continue
        print(f"# {name}: loaded in {time.perf_counter() - t:.1f} s")
        warmup = args.warmup or ("full" if args.device.startswith("cuda") else "first")
        for size in sizes:
            texts: dict[str, tuple[str, str]] = {}
            row = measure(model, name, args.device, utts, size, args.beam, warmup, texts)
            rows.append(row)
            transcripts[f"{name}/{size}"] = {k: hyp for k, (_, hyp) in texts.items()}
            print(_line(row), flush=True)
        graphs = getattr(getattr(model, "slots", None), "captured", None)
        if graphs:
            print(f"# {name}: {graphs} CUDA graphs captured")
        del model
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        out = {"rows": [asdict(r) for r in rows], "transcripts": transcripts}
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


@dataclass
class PartialRow:
    streams: int
    windows: int  # partials decoded (each twice)
    identical: int  # of which the drafted decode wrote the same tokens and words
    decoder_ms_plain: float  # mean per partial: prefill + greedy steps
    decoder_ms_draft: float  # mean per partial: verification pass + greedy steps
    decoder_ms_plain_long: float  # the same over partials of 20+ tokens
    decoder_ms_draft_long: float
    passes_plain: float  # mean decoder passes per batch
    passes_draft: float
    decode_ms_plain: float  # mean per partial, everything (features, encoder, align)
    decode_ms_draft: float
    cpu_ms_plain: float  # process CPU time per partial, everything (less moved by other load)
    cpu_ms_draft: float
    unchanged: int  # drafted partials whose output was their draft, nothing new
    accepted_share: float  # draft tokens accepted / draft tokens verified
    accepted_median: float  # per partial with a draft
    drafted_median: float
    new_median: float  # tokens written after the accepted draft


def partial_steps(utts: list[Utterance], first_s: float, step_s: float):
    """Per step, the streams' windows (audio so far) for the streams still speaking."""
    end = first_s
    while True:
        live = [
            (k, u.audio[: int(end * RATE)]) for k, u in enumerate(utts) if u.seconds > end - step_s
        ]
        if not live:
            return
        yield live
        end += step_s


def measure_partials(model, utts: list[Utterance], size: int) -> PartialRow:
    acc = {"plain": [], "draft": [], "plain_long": [], "draft_long": []}
    total = {"plain": [], "draft": []}
    cpu = {"plain": [], "draft": []}
    unchanged = 0
    passes = {"plain": [], "draft": []}
    accepted, drafted, new = [], [], []
    windows = identical = 0
    flip = False
    for group in batches_of(utts, size) if size > 1 else [[u] for u in utts]:
        drafts: dict[int, tuple[int, ...]] = {}
        for live in partial_steps(group, 1.0, 0.5):
            plain_req = [DecodeRequest(a) for _, a in live]
            draft_req = [DecodeRequest(a, draft=drafts.get(k, ())) for k, a in live]
            flip = not flip  # back to back, alternating which goes first
            order = [("plain", plain_req), ("draft", draft_req)]
            got = {}
            for name, reqs in order[::-1] if flip else order:
                t, c = time.perf_counter(), time.process_time()
                got[name] = model.transcribe_batch(reqs)
                got[name + "_ms"] = (time.perf_counter() - t) * 1000
                got[name + "_cpu"] = (time.process_time() - c) * 1000
            n = len(live)
            for name in ("plain", "draft"):
                res = got[name]
                search = res[0].meta["search_ms"] / n
                acc[name].append(search)
                if max(len(r.tokens) for r in res) >= 20:
                    acc[name + "_long"].append(search)
                total[name].append(got[name + "_ms"] / n)
                cpu[name].append(got[name + "_cpu"] / n)
                passes[name].append(max(r.meta["passes"] for r in res))
            for (k, _), p, d in zip(live, got["plain"], got["draft"], strict=True):
                windows += 1
                same = p.tokens == d.tokens and [(w.text, w.start, w.end) for w in p.words] == [
                    (w.text, w.start, w.end) for w in d.words
                ]
                identical += same
                if d.meta["draft"]:
                    drafted.append(d.meta["draft"])
                    accepted.append(d.meta["accepted"])
                    new.append(d.meta["new"])
                    unchanged += d.meta["new"] == 0 and d.meta["accepted"] == d.meta["draft"]
                drafts[k] = d.tokens

    def mean(xs: list[float]) -> float:
        return round(statistics.mean(xs), 2) if xs else float("nan")

    def median(xs: list[float]) -> float:
        return round(float(statistics.median(xs)), 1) if xs else float("nan")

    return PartialRow(
        streams=size,
        windows=windows,
        identical=identical,
        decoder_ms_plain=mean(acc["plain"]),
        decoder_ms_draft=mean(acc["draft"]),
        decoder_ms_plain_long=mean(acc["plain_long"]),
        decoder_ms_draft_long=mean(acc["draft_long"]),
        passes_plain=mean(passes["plain"]),
        passes_draft=mean(passes["draft"]),
        decode_ms_plain=mean(total["plain"]),
        decode_ms_draft=mean(total["draft"]),
        cpu_ms_plain=mean(cpu["plain"]),
        cpu_ms_draft=mean(cpu["draft"]),
        unchanged=unchanged,
        accepted_share=round(sum(accepted) / max(1, sum(drafted)), 3),
        accepted_median=median(accepted),
        drafted_median=median(drafted),
        new_median=median(new),
    )


def bench_partials(args: argparse.Namespace) -> int:
    utts = load_utterances(Path(args.eval_dir), args.limit)
    if not utts:
        print(f"# no utterances under {args.eval_dir}: nothing to measure")
        return 0
    model = load_backend("torch", resolve(args), args.device, args)
    print(
        f"# {len(utts)} utterances; partials every 0.5 s from 1 s; torch {args.device}, "
        f"encoder {args.encoder}, {args.threads or 'all'} thread(s)"
    )
    rows = []
    for size in [int(x) for x in args.batch_sizes.split(",")]:
        measure_partials(model, utts[:1], size)  # warm-up
        r = measure_partials(model, utts, size)
        rows.append(r)
        print(
            f"streams {r.streams:2d}: {r.identical}/{r.windows} windows identical; decoder ms "
            f"per partial {r.decoder_ms_plain:.1f} -> {r.decoder_ms_draft:.1f} "
            f"({r.decoder_ms_plain / r.decoder_ms_draft:.2f}x; 20+ tokens "
            f"{r.decoder_ms_plain_long:.1f} -> {r.decoder_ms_draft_long:.1f}); passes per batch "
            f"{r.passes_plain:.1f} -> {r.passes_draft:.1f}; whole decode ms per partial "
            f"{r.decode_ms_plain:.1f} -> {r.decode_ms_draft:.1f} (CPU "
            f"{r.cpu_ms_plain:.1f} -> {r.cpu_ms_draft:.1f}); drafts accepted "
            f"{100 * r.accepted_share:.0f}% (median {r.accepted_median:.0f} of "
            f"{r.drafted_median:.0f}, {r.new_median:.0f} new; {r.unchanged} unchanged)",
            flush=True,
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"partials": [asdict(r) for r in rows]}, indent=1))
    return 0


def _line(r: Row) -> str:
    util = f"  gpu {r.gpu_util:5.1f}%" if r.gpu_util is not None else ""
    return (
        f"{r.backend:5s} {r.device:6s} batch {r.batch:4d} beam {r.beam}  "
        f"{r.throughput:8.1f} audio-s/s  decode p50 {r.latency_p50_ms:8.1f} ms "
        f"max {r.latency_max_ms:8.1f} ms  WER {r.wer:5.2f}%{util}  "
        f"({r.batches} batches, warm-up {r.warmup_s:.1f} s)"
    )


def pack(args: argparse.Namespace) -> int:
    from streamscribe.engine.whisper_torch.ct2_reader import quantize_int8, read_ct2, write_ct2

    src = Path(resolve(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_ct2(out / "model.bin", quantize_int8(read_ct2(src)))
    for name in (
        "config.json",
        "tokenizer.json",
        "preprocessor_config.json",
        "vocabulary.txt",
        "vocabulary.json",
    ):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{out}: int8 copy of {src}, {size / 1e6:.1f} MB")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--model-dir", help="a model directory (instead of --model)")
    if argv[:1] == ["pack"]:
        parser.add_argument("--out", required=True)
        return pack(parser.parse_args(argv[1:]))
    parser.add_argument("--backends", default="ct2,torch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", default="1,4,8,16")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--limit", type=int, help="first N utterances of the dev set")
    parser.add_argument("--eval-dir", default=str(ROOT.parent / "shared" / "eval" / "dev"))
    parser.add_argument(
        "--compute-type",
        help="ct2: int8 (CPU default), float16 ...; "
        "torch: float32 (CPU default), float16 (CUDA default), bfloat16",
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    parser.add_argument("--no-graphs", action="store_true", help="torch: eager decoding steps")
    parser.add_argument("--compile-encoder", action="store_true", help="torch: torch.compile")
    parser.add_argument(
        "--encoder",
        choices=("auto", "torch", "ct2"),
        default="torch",
        help="torch: whose encoder (ct2: CTranslate2's float32 one, CPU; auto: ct2 where it "
        "can run, as the server does)",
    )
    parser.add_argument(
        "--warmup",
        choices=("first", "full"),
        help="untimed pass over the first batch or all (default: full on cuda)",
    )
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument(
        "--partials",
        action="store_true",
        help="torch: partials of growing windows with and without drafts (batch sizes = streams)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        with contextlib.suppress(ImportError):
            import torch

            torch.set_num_threads(args.threads)
    return bench_partials(args) if args.partials else bench(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Policy replay: the streaming policy's accuracy without the wall clock, deterministic.

Why this exists: `stream_bench.py` measures the real server in real time, so its WER moves with
decode timing (a partial that came back 80 ms later changes which words LocalAgreement fixes) and
one run of the corpus takes minutes of wall time per concurrency level. Tuning the streaming
policy (pre-roll, window, prompt, endpointing) needs the opposite: the same input giving the same
output, as fast as the CPU decodes. This script feeds each clip of the dev set through a real
`StreamingSession` in 100 ms chunks, decodes every request with the real model, and hands each
result back a fixed amount of audio time later (`--latency-ms`, the decode round trip it models).
It prints the corpus WER of the final turns (formatted, as `stream_bench` scores them), the
offline WER of the same model on the same files, their ratio, the WER of the words as they were
made final one by one (the unformatted end-of-turn words: what a finality rule costs, which the
formatted re-send hides), the files that differ most, and the policy's latencies in audio time,
measured as `stream_bench` measures them (first partial, word final, end of turn: P50 / P95)
with each result arriving `--latency-ms` after its request, and the word final split by the
kind of decode that made each word final (partial, eager, final). They are the policy's share
of the latency without the machine's: a change to the policy (a partial cadence, a finality rule)
shows its effect deterministically here, then on the real server in `stream_bench.py`.

With `--backend torch` it also prints what the partials cost the decoder: per partial the
decoder's time (prefill or draft verification plus greedy steps) and passes, and the share of
the session's drafts the model accepted; `--no-drafts` sends the same partials without drafts
(the same text must come out: drafts change the cost, never the output).

Usage:
    .venv/bin/python bench/replay_bench.py                      # all utterances
    .venv/bin/python bench/replay_bench.py --limit 12 --latency-ms 400 --set pre_roll_ms=600
    .venv/bin/python bench/replay_bench.py --backend torch --threads 1 --limit 12 [--no-drafts]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from bench_corpus import corpus_wer, load_manifest, model_path, offline_hypotheses, read_pcm

from streamscribe.config import Settings
from streamscribe.engine.host_threads import limit_blas_threads
from streamscribe.engine.session import StreamingSession, TurnSettings
from streamscribe.engine.whisper_ct2 import WhisperCT2Transcriber
from streamscribe.events import TurnUpdate

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
RATE = 16000
CHUNK = RATE // 10  # 100 ms, as the stream benchmark sends


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--eval-dir", type=Path, default=REPO.parent / "shared" / "eval" / "dev")
    p.add_argument("--kind", choices=["utterance", "conversation", "long"], default="utterance")
    p.add_argument("--limit", type=int, help="use only the first LIMIT files")
    p.add_argument("--latency-ms", type=int, default=300, help="modelled decode round trip")
    p.add_argument("--trailing-silence", type=float, default=1.5, help="s of zeros after a file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a TurnSettings field (repeatable), e.g. pre_roll_ms=600",
    )
    p.add_argument("--backend", choices=["ct2", "torch"], default="ct2")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    p.add_argument("--no-drafts", action="store_true", help="send partials without drafts")
    p.add_argument("--json", type=Path, help="also write per-file hypotheses to this file")
    p.add_argument("--show", type=int, default=5, help="print the N files that lose most")
    return p.parse_args(argv)


def settings_from(overrides: list[str]) -> TurnSettings:
    base = TurnSettings(format_turns=True)
    changes: dict = {}
    for item in overrides:
        name, _, raw = item.partition("=")
        current = getattr(base, name, None)
        if current is None and name not in {"language"}:
            sys.exit(f"error: unknown setting {name!r}; see TurnSettings in engine/session.py")
        value = json.loads(raw) if not isinstance(current, str) else raw
        changes[name] = value
    return base.updated(changes)


def replay(
    model,
    audio: np.ndarray,
    settings: TurnSettings,
    latency_ms: int,
    partials: list[dict] | None = None,
    drafts: bool = True,
    timeline: list[tuple[int, TurnUpdate, str]] | None = None,
    cpu: dict[str, list[float]] | None = None,
) -> list[TurnUpdate]:
    """Stream `audio` through one session; return its end-of-turn updates in order. The
    partials' decoder figures (the result's meta) are appended to `partials`; every turn update,
    with the audio time it was sent at and the kind of decode that produced it ("feed": the
    audio itself, such as a silence endpoint), to `timeline`; and each decode's CPU seconds to
    `cpu` under its kind ("partial", "eager", "final", "catchup")."""
    session = StreamingSession(settings=settings)
    events: list = []
    pending = None  # (ready at audio ms, ticket, result)

    def emit(new: list, at_ms: int, kind: str = "feed") -> None:
        events.extend(new)
        if timeline is not None:
            timeline.extend((at_ms, e, kind) for e in new if isinstance(e, TurnUpdate))

    def pump() -> None:
        nonlocal pending
        if pending is not None:
            return
        ticket = session.next_request()
        if ticket is not None:
            request = ticket.request if drafts else dataclasses.replace(ticket.request, draft=())
            used = time.process_time()
            result = model.transcribe_batch([request])[0]
            if cpu is not None:
                cpu.setdefault(ticket.kind, []).append(time.process_time() - used)
            if partials is not None and ticket.kind == "partial":
                partials.append({**result.meta, "tokens": len(result.tokens)})
            pending = (session.audio_ms + latency_ms, ticket, result)

    def deliver(now_ms: int | None) -> None:
        nonlocal pending
        while pending is not None and (now_ms is None or pending[0] <= now_ms):
            ready_ms, ticket, result = pending
            pending = None
            session.note_round_trip(latency_ms)
            emit(session.apply(ticket, result), ready_ms, ticket.kind)
            pump()

    for i in range(0, len(audio), CHUNK):
        emit(session.feed(audio[i : i + CHUNK]), session.audio_ms)
        deliver(session.audio_ms)
        pump()
    emit(session.force_endpoint(), session.audio_ms)
    pump()
    deliver(None)
    return [e for e in events if isinstance(e, TurnUpdate) and e.end_of_turn]


def latencies(timeline: list[tuple[int, TurnUpdate, str]]) -> dict[str, list[float]]:
    """First partial, word final and end of turn (ms) of one replayed stream, defined as
    `bench_session` defines them for the real server: against the words of each turn's
    unformatted end-of-turn update. Word final is also split by the kind of decode that made
    each word final ("word_final:partial", ":eager", ":final", ...)."""
    out: dict[str, list[float]] = {"first_partial": [], "word_final": [], "end_of_turn": []}
    first_words: dict[int, int] = {}
    final_at: dict[int, list[tuple[int, str]]] = {}
    for at, u, kind in timeline:
        if u.formatted:
            continue
        if u.words and u.turn_order not in first_words:
            first_words[u.turn_order] = at
        finals = final_at.setdefault(u.turn_order, [])
        n_final = sum(1 for w in u.words if w.final)
        finals.extend([(at, kind)] * (n_final - len(finals)))
        if u.end_of_turn and u.words:
            out["first_partial"].append(first_words[u.turn_order] - u.words[0].start_ms)
            for (t, by), w in zip(finals, u.words, strict=False):
                out["word_final"].append(t - w.end_ms)
                out.setdefault(f"word_final:{by}", []).append(t - w.end_ms)
            out["end_of_turn"].append(at - u.words[-1].end_ms)
    return out


def p50_p95(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{np.percentile(values, 50):.0f} / {np.percentile(values, 95):.0f}"


def partial_cost(partials: list[dict]) -> dict | None:
    """What the partials cost the decoder (backends that report it: torch)."""
    timed = [p for p in partials if "search_ms" in p]
    if not timed:
        return None
    long = [p["search_ms"] for p in timed if p["tokens"] >= 20]
    drafted = [p for p in timed if p.get("draft")]
    return {
        "partials": len(timed),
        "decoder_ms": statistics.mean(p["search_ms"] for p in timed),
        "decoder_ms_long": statistics.mean(long) if long else float("nan"),
        "passes": statistics.mean(p["passes"] for p in timed),
        "decode_ms": statistics.mean(
            p["encode_ms"] + p["search_ms"] + p["align_ms"] for p in timed
        ),
        "with_draft": len(drafted),
        "accepted_share": sum(p["accepted"] for p in drafted)
        / max(1, sum(p["draft"] for p in drafted)),
    }


def hypothesis(turns: list[TurnUpdate]) -> str:
    """The formatted re-send of each turn where there is one, as `stream_bench` scores."""
    by_order: dict[int, TurnUpdate] = {}
    for t in turns:
        if t.formatted or t.turn_order not in by_order:
            by_order[t.turn_order] = t
    return " ".join(" ".join(w.text for w in by_order[k].words) for k in sorted(by_order))


def as_finalized(turns: list[TurnUpdate]) -> str:
    """Each turn's unformatted end-of-turn words: what clients were told was final, word by
    word, while the turn ran (scores the finality policy, which the formatted re-send hides)."""
    return " ".join(
        " ".join(w.text for w in t.words) for t in turns if not t.formatted and t.end_of_turn
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args.set)
    clips = load_manifest(args.eval_dir, args.kind, args.limit)
    offline = offline_hypotheses(clips, RESULTS)
    limit_blas_threads(Settings().blas_threads)  # as the server does (engine/host_threads.py)
    if args.backend == "torch":
        from streamscribe.engine.whisper_torch.transcriber import WhisperTorchTranscriber

        model = WhisperTorchTranscriber(model_path(), device="cpu", cpu_threads=args.threads)
    else:
        model = WhisperCT2Transcriber(
            model_path(), device="cpu", compute_type="int8", cpu_threads=args.threads
        )
    rows = []
    partials: list[dict] = []
    lat: dict[str, list[float]] = {"first_partial": [], "word_final": [], "end_of_turn": []}
    decodes = 0
    cpu: dict[str, list[float]] = {}
    t0 = time.monotonic()
    for i, clip in enumerate(clips, 1):
        pcm = np.frombuffer(read_pcm(clip.path), dtype="<i2").astype(np.float32) / 32768.0
        audio = np.concatenate([pcm, np.zeros(int(args.trailing_silence * RATE), np.float32)])
        timeline: list[tuple[int, TurnUpdate, str]] = []
        before = len(partials)
        turns = replay(
            model, audio, settings, args.latency_ms, partials, not args.no_drafts, timeline, cpu
        )
        decodes += len(partials) - before
        for k, v in latencies(timeline).items():
            lat.setdefault(k, []).extend(v)
        hyp = hypothesis(turns)
        row = {
            "clip": clip.id,
            "reference": clip.text,
            "hypothesis": hyp,
            "finalized": as_finalized(turns),
        }
        rows.append({**row, "turns": len(turns)})
        print(f"  {i}/{len(clips)} {clip.id}: {len(turns)} turns", file=sys.stderr, flush=True)
    wall = time.monotonic() - t0
    refs = [r["reference"] for r in rows]
    stream = corpus_wer(refs, [r["hypothesis"] for r in rows])
    base = corpus_wer(refs, [offline[r["clip"]] for r in rows])
    finalized = corpus_wer(refs, [r["finalized"] for r in rows])
    for r in rows:
        r["wer"] = corpus_wer([r["reference"]], [r["hypothesis"]])
        r["wer_offline"] = corpus_wer([r["reference"]], [offline[r["clip"]]])
    worst = sorted(rows, key=lambda r: (r["wer"] or 0) - (r["wer_offline"] or 0), reverse=True)
    for r in worst[: args.show]:
        print(f"\n{r['clip']}  stream {r['wer']:.3f}  offline {r['wer_offline']:.3f}")
        print(f"  ref:     {r['reference'].lower()}")
        print(f"  stream:  {r['hypothesis']}")
        print(f"  offline: {offline[r['clip']]}")
    ratio = stream / base if stream is not None and base else None
    print(
        f"\nreplay: {len(rows)} {args.kind} files, latency {args.latency_ms} ms, "
        f"settings {' '.join(args.set) or 'default'}"
    )
    print(
        f"WER stream {stream:.4f}  offline {base:.4f}  ratio {ratio:.3f}  "
        f"as finalized word by word {finalized:.4f}  ({wall:.0f} s wall)"
    )
    audio_s = sum(c.duration for c in clips) if all(c.duration for c in clips) else None
    if audio_s:
        print(
            "decode CPU s per audio s: "
            + ", ".join(
                f"{kind} {sum(v) / audio_s:.3f} ({len(v)} x {1000 * statistics.mean(v):.0f} ms)"
                for kind, v in sorted(cpu.items())
            )
            + f"; all {sum(map(sum, cpu.values())) / audio_s:.3f}"
        )
    print(
        f"latency in audio time (P50 / P95 ms): first partial {p50_p95(lat['first_partial'])}, "
        f"word final {p50_p95(lat['word_final'])}, end of turn {p50_p95(lat['end_of_turn'])}; "
        f"{decodes} partials" + (f" ({decodes / audio_s:.2f} per audio s)" if audio_s else "")
    )
    by_kind = sorted(k for k in lat if k.startswith("word_final:"))
    print(
        "word final by the decode that made the word final (words, P50 / P95 ms): "
        + ", ".join(f"{k.split(':')[1]} {len(lat[k])}, {p50_p95(lat[k])}" for k in by_kind)
    )
    cost = partial_cost(partials)
    if cost:
        print(
            f"partials {cost['partials']}: decoder {cost['decoder_ms']:.1f} ms and "
            f"{cost['passes']:.1f} passes per partial "
            f"(20+ tokens: {cost['decoder_ms_long']:.1f} ms); "
            f"whole decode {cost['decode_ms']:.1f} ms; drafts on {cost['with_draft']} partials, "
            f"{100 * cost['accepted_share']:.0f}% of their tokens accepted"
        )
    if args.json:
        payload = {"settings": args.set, "latency_ms": args.latency_ms, "wer": stream}
        payload.update(
            {
                "wer_offline": base,
                "ratio": ratio,
                "wer_finalized": finalized,
                "partial_cost": cost,
                "files": rows,
            }
        )
        payload["latencies"] = {k: p50_p95(v) for k, v in lat.items()}
        args.json.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Policy replay: the streaming policy's accuracy without the wall clock, deterministic.

Why this exists: `stream_bench.py` measures the real server in real time, so its WER moves with
decode timing (a partial that came back 80 ms later changes which words LocalAgreement fixes) and
one run of the corpus takes minutes of wall time per concurrency level. Tuning the streaming
policy (pre-roll, window, prompt, endpointing) needs the opposite: the same input giving the same
output, as fast as the CPU decodes. This script feeds each clip of the dev set through a real
`StreamingSession` in 100 ms chunks, decodes every request with the real model, and hands each
result back a fixed amount of audio time later (`--latency-ms`, the decode round trip it models).
It prints the corpus WER of the final turns (formatted, as `stream_bench` scores them), the
offline WER of the same model on the same files, their ratio, and the files that differ most.

Usage:
    .venv/bin/python bench/replay_bench.py                      # all utterances
    .venv/bin/python bench/replay_bench.py --limit 12 --latency-ms 400 --set pre_roll_ms=600
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from bench_corpus import corpus_wer, load_manifest, model_path, offline_hypotheses, read_pcm

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
    model: WhisperCT2Transcriber, audio: np.ndarray, settings: TurnSettings, latency_ms: int
) -> list[TurnUpdate]:
    """Stream `audio` through one session; return its end-of-turn updates in order."""
    session = StreamingSession(settings=settings)
    events: list = []
    pending = None  # (ready at audio ms, ticket, result)

    def pump() -> None:
        nonlocal pending
        if pending is not None:
            return
        ticket = session.next_request()
        if ticket is not None:
            result = model.transcribe_batch([ticket.request])[0]
            pending = (session.audio_ms + latency_ms, ticket, result)

    def deliver(now_ms: int | None) -> None:
        nonlocal pending
        while pending is not None and (now_ms is None or pending[0] <= now_ms):
            _, ticket, result = pending
            pending = None
            session.note_round_trip(latency_ms)
            events.extend(session.apply(ticket, result))
            pump()

    for i in range(0, len(audio), CHUNK):
        events.extend(session.feed(audio[i : i + CHUNK]))
        deliver(session.audio_ms)
        pump()
    events.extend(session.force_endpoint())
    pump()
    deliver(None)
    return [e for e in events if isinstance(e, TurnUpdate) and e.end_of_turn]


def hypothesis(turns: list[TurnUpdate]) -> str:
    """The formatted re-send of each turn where there is one, as `stream_bench` scores."""
    by_order: dict[int, TurnUpdate] = {}
    for t in turns:
        if t.formatted or t.turn_order not in by_order:
            by_order[t.turn_order] = t
    return " ".join(" ".join(w.text for w in by_order[k].words) for k in sorted(by_order))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args.set)
    clips = load_manifest(args.eval_dir, args.kind, args.limit)
    offline = offline_hypotheses(clips, RESULTS)
    model = WhisperCT2Transcriber(model_path(), device="cpu", compute_type="int8")
    rows = []
    t0 = time.monotonic()
    for i, clip in enumerate(clips, 1):
        pcm = np.frombuffer(read_pcm(clip.path), dtype="<i2").astype(np.float32) / 32768.0
        audio = np.concatenate([pcm, np.zeros(int(args.trailing_silence * RATE), np.float32)])
        turns = replay(model, audio, settings, args.latency_ms)
        hyp = hypothesis(turns)
        row = {"clip": clip.id, "reference": clip.text, "hypothesis": hyp}
        rows.append({**row, "turns": len(turns)})
        print(f"  {i}/{len(clips)} {clip.id}: {len(turns)} turns", file=sys.stderr, flush=True)
    wall = time.monotonic() - t0
    refs = [r["reference"] for r in rows]
    stream = corpus_wer(refs, [r["hypothesis"] for r in rows])
    base = corpus_wer(refs, [offline[r["clip"]] for r in rows])
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
    print(f"WER stream {stream:.4f}  offline {base:.4f}  ratio {ratio:.3f}  ({wall:.0f} s wall)")
    if args.json:
        payload = {"settings": args.set, "latency_ms": args.latency_ms, "wer": stream}
        payload.update({"wer_offline": base, "ratio": ratio, "files": rows})
        args.json.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

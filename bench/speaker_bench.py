"""Speaker labels on the dev set's two-speaker conversations: accuracy, speakers found, CPU cost.

Why: the figures of issue 7 (turn-level attribution >= 95 %, the right number of speakers, the
added cost per turn) measured the way the engine uses the tracker: one `SessionSpeakers` per
conversation, final turns fed in order, each with its own audio and word times.

Three ways to cut the turns:
  a  reference turns (the utterance boundaries of the mix), words timed by a proportional split of
     each turn's duration by characters
  b  neighbouring reference turns joined in pairs (A+B, A+B, ...), the same word times, so every
     merged turn holds a change of voice that only the within-turn split can find
  pa, pb  as a and b on more conversations built the same way from the dev set's utterances,
     one per pair of its speakers with 4+ utterances (10 pairs; the dev conversations have 3)
  c  real turns: tiny.en on the CPU through `engine.offline.transcribe_audio` (silero regions,
     Whisper word times); each word's reference speaker is the reference turn its middle falls in
     (or the nearest one). The transcripts are cached in bench/results/.

Accuracy is word-weighted over all conversations, with the best one-to-one mapping of labels to
reference speakers per conversation (a label left unmapped counts as wrong). Cost is the CPU time
of `label_turn` (embedding + clustering) per turn on the calling thread (torch on one thread, so
all of its work is there; CPU time, unlike wall time, does not grow when other processes compete
for the cores), and the wall time beside it; the model is loaded before.

    .venv/bin/python bench/speaker_bench.py                 # a, b and c, a table
    .venv/bin/python bench/speaker_bench.py --modes a b --json bench/results/speakers.json
    .venv/bin/python bench/speaker_bench.py --set change_similarity=0.65   # try a threshold
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import wave
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamscribe.speakers import SessionSpeakers, SpeakerSettings  # noqa: E402
from streamscribe.speakers.encoder import SpeakerEncoder  # noqa: E402

RATE = 16000
RESULTS = ROOT / "bench" / "results"


@dataclass
class Turn:
    audio: np.ndarray
    words: list[tuple[int, int]]  # ms relative to `audio`
    refs: list[str]  # the reference speaker of each word


@dataclass
class ModeResult:
    mode: str
    words: int = 0
    correct: int = 0
    turns: int = 0
    audio_s: float = 0.0
    speakers_found: list[int] = field(default_factory=list)
    per_conversation: dict[str, float] = field(default_factory=dict)
    turn_ms: list[float] = field(default_factory=list)  # wall
    turn_cpu_ms: list[float] = field(default_factory=list)  # this thread's CPU time

    @property
    def accuracy(self) -> float:
        return self.correct / self.words if self.words else 0.0

    def summary(self) -> dict:
        ms = np.array(self.turn_ms) if self.turn_ms else np.zeros(1)
        cpu = np.array(self.turn_cpu_ms) if self.turn_cpu_ms else np.zeros(1)
        return {
            "mode": self.mode,
            "accuracy": round(self.accuracy, 4),
            "words": self.words,
            "turns": self.turns,
            "speakers_found": self.speakers_found,
            "speakers_expected": [2] * len(self.speakers_found),
            "per_conversation_accuracy": self.per_conversation,
            "cpu_ms_per_turn_mean": round(float(cpu.mean()), 1),
            "cpu_ms_per_turn_p95": round(float(np.percentile(cpu, 95)), 1),
            "wall_ms_per_turn_mean": round(float(ms.mean()), 1),
            "wall_ms_per_turn_p95": round(float(np.percentile(ms, 95)), 1),
            "turn_seconds_mean": round(self.audio_s / max(self.turns, 1), 2),
        }


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (RATE, 1, 2):
            sys.exit(f"error: {path} is not 16 kHz mono 16-bit PCM")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def proportional_words(text: str, start_ms: float, end_ms: float) -> list[tuple[int, int]]:
    """Word times from splitting [start, end) by characters (a space counts as one)."""
    tokens = text.split()
    total = sum(len(t) for t in tokens) + len(tokens) - 1
    span = (end_ms - start_ms) / max(total, 1)
    out, pos = [], 0
    for tok in tokens:
        a = start_ms + pos * span
        out.append((round(a), round(a + len(tok) * span)))
        pos += len(tok) + 1
    return out


def reference_turns(row: dict, audio: np.ndarray, merge: bool) -> list[Turn]:
    ref = row["turns"]
    groups = [ref[i : i + 2] for i in range(0, len(ref), 2)] if merge else [[t] for t in ref]
    turns = []
    for group in groups:
        t0, t1 = group[0]["start"], group[-1]["end"]
        words: list[tuple[int, int]] = []
        refs: list[str] = []
        for t in group:
            offset = (t["start"] - t0) * 1000
            words += proportional_words(t["text"], offset, offset + (t["end"] - t["start"]) * 1000)
            refs += [t["speaker"]] * len(t["text"].split())
        turns.append(Turn(audio[int(t0 * RATE) : int(t1 * RATE)], words, refs))
    return turns


def asr_turns(row: dict, audio: np.ndarray, eval_dir: Path) -> list[Turn]:
    """Turns as the engine makes them (cached: decoding costs a minute of CPU per file)."""
    cache = RESULTS / f"speaker-asr-{row['id']}.json"
    if cache.is_file():
        raw = json.loads(cache.read_text())
    else:
        from streamscribe.config import Settings
        from streamscribe.engine.offline import transcribe_audio
        from streamscribe.server.decoder_choice import load_transcriber

        settings = Settings()
        got = transcribe_audio(audio, load_transcriber(settings), settings.final_beam_size)
        raw = [[[w.text, w.start_ms, w.end_ms] for w in t.words] for t in got]
        RESULTS.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(raw))
    spans = [(t["start"] * 1000, t["end"] * 1000, t["speaker"]) for t in row["turns"]]

    def speaker_at(mid: float) -> str:
        inside = [s for a, b, s in spans if a <= mid < b]
        if inside:
            return inside[0]
        return min(spans, key=lambda x: min(abs(mid - x[0]), abs(mid - x[1])))[2]

    turns = []
    for words in raw:
        if not words:
            continue
        a = max(0, words[0][1] - 300)
        b = min(len(audio) * 1000 // RATE, words[-1][2] + 300)
        rel = [(s - a, e - a) for _, s, e in words]
        refs = [speaker_at((s + e) / 2) for _, s, e in words]
        turns.append(Turn(audio[a * RATE // 1000 : b * RATE // 1000], rel, refs))
    return turns


def speaker_pair_rows(eval_dir: Path, min_utterances: int = 4) -> list[dict]:
    """More conversations like the dev set's, for every pair of its speakers: their utterances
    alternate (x1 y1 x2 y2 ...) with 0.3-1.5 s of silence between (seeded), as the dev set's own
    conversations were built. The utterances are the dev set's, so this is not a hold-out: it
    only covers the speaker pairs the three conversations do not."""
    rows = [json.loads(x) for x in (eval_dir / "manifest.jsonl").read_text().splitlines() if x]
    by_speaker: dict[str, list[dict]] = {}
    for r in rows:
        if r["kind"] == "utterance":
            by_speaker.setdefault(r["speaker"], []).append(r)
    speakers = sorted(s for s, u in by_speaker.items() if len(u) >= min_utterances)
    rng = np.random.default_rng(1234)
    out = []
    for x, y in itertools.combinations(speakers, 2):
        n = min(len(by_speaker[x]), len(by_speaker[y]))
        order = [u for pair in zip(by_speaker[x][:n], by_speaker[y][:n], strict=True) for u in pair]
        pieces, turns, t = [], [], 0.0
        for u in order:
            audio = read_wav(eval_dir / u["audio"])
            gap = np.zeros(int(rng.uniform(0.3, 1.5) * RATE), dtype=np.float32)
            end = t + len(audio) / RATE
            turns.append({"speaker": u["speaker"], "start": t, "end": end, "text": u["text"]})
            pieces += [audio, gap]
            t = end + len(gap) / RATE
        out.append({"id": f"pair-{x}-{y}", "turns": turns, "samples": np.concatenate(pieces)})
    return out


def best_mapping_correct(pairs: list[tuple[str, str]]) -> int:
    """Words right under the best one-to-one mapping of hypothesis labels to reference speakers."""
    hyps = sorted({h for _, h in pairs})
    refs = sorted({r for r, _ in pairs})
    counts = {(h, r): 0 for h in hyps for r in refs}
    for r, h in pairs:
        counts[h, r] += 1
    best = 0
    for chosen in itertools.permutations(refs + [None] * len(hyps), len(hyps)):
        best = max(best, sum(counts[h, r] for h, r in zip(hyps, chosen, strict=True) if r))
    return best


def run_mode(
    mode: str,
    rows: list[dict],
    eval_dir: Path,
    settings: SpeakerSettings,
    encoder: SpeakerEncoder,
    verbose: bool,
) -> ModeResult:
    result = ModeResult(mode)
    if mode in ("pa", "pb"):
        rows = speaker_pair_rows(eval_dir)
    for row in rows:
        audio = row["samples"] if "samples" in row else read_wav(eval_dir / row["audio"])
        if mode == "c":
            turns = asr_turns(row, audio, eval_dir)
        else:
            turns = reference_turns(row, audio, merge=mode in ("b", "pb"))
        session = SessionSpeakers(settings=settings, encoder=encoder)
        pairs: list[tuple[str, str]] = []
        for turn in turns:
            t, c = time.perf_counter(), time.thread_time()
            labels = session.label_turn(turn.audio, turn.words)
            result.turn_cpu_ms.append((time.thread_time() - c) * 1000)
            result.turn_ms.append((time.perf_counter() - t) * 1000)
            result.audio_s += len(turn.audio) / RATE
            pairs += list(zip(turn.refs, labels, strict=True))
            if verbose:
                shown = "".join(labels[i] for i in range(len(labels)))
                print(f"  {mode} {row['id']} {len(turn.audio) / RATE:5.1f}s {shown}")
                print(f"  {' ' * (len(mode) + len(row['id']) + 8)}{_ref_letters(turn.refs)}")
        correct = best_mapping_correct(pairs)
        result.words += len(pairs)
        result.correct += correct
        result.turns += len(turns)
        result.speakers_found.append(len(session.speakers))
        result.per_conversation[row["id"]] = round(correct / len(pairs), 4)
    return result


def _ref_letters(refs: list[str]) -> str:
    names = sorted(set(refs))
    return "".join("xy"[names.index(r) % 2] for r in refs)


def calibrate(eval_dir: Path, settings: SpeakerSettings, encoder: SpeakerEncoder) -> dict:
    """Where the thresholds come from: the dev set's single-speaker utterances (8 speakers).

    - utterance vs utterance cosine, same speaker vs different speakers (new_speaker_similarity
      sits between them)
    - pieces of 0.5 and 1.0 s against whole utterances (provisional_similarity, and why short
      turns keep the previous speaker)
    - the cut score (left/right similarity at a word gap): at every gap of one utterance or of
      two of one speaker joined with 0.5 s of silence (no change: above the threshold) vs at
      the true gap of a different-speaker join (below), for short (< short_side_ms) and long
      sides (change_similarity_short_side, change_similarity)
    """
    from streamscribe.speakers import SpeakerTracker, embed_turn
    from streamscribe.speakers.clustering import _Bounds, _unit

    rows = [json.loads(x) for x in (eval_dir / "manifest.jsonl").read_text().splitlines() if x]
    utts = [r for r in rows if r["kind"] == "utterance" and r["duration"] >= 1.5]
    audio = {r["id"]: read_wav(eval_dir / r["audio"]) for r in utts}
    words = {r["id"]: proportional_words(r["text"], 0, r["duration"] * 1000) for r in utts}
    vecs = {
        u: embed_turn(encoder, audio[u], words[u], hop_s=settings.hop_s).vectors.mean(0)
        for u in audio
    }
    same, diff = [], []
    for x, y in itertools.combinations(utts, 2):
        sim = float(_unit(vecs[x["id"]]) @ _unit(vecs[y["id"]]))
        (same if x["speaker"] == y["speaker"] else diff).append(sim)
    tracker = SpeakerTracker(settings)
    gap = np.zeros(RATE // 2, dtype=np.float32)
    # cut scores by the shorter side's speech (< short_side_ms: "short", else "long"): every
    # candidate cut of an utterance or of a same-speaker join (none may fall below the
    # threshold), and the true cut of a different-speaker join (it must)
    cuts: dict[str, list[float]] = {}
    rng = np.random.default_rng(1234)
    pairs = list(itertools.combinations(utts, 2))
    picked = [pairs[i] for i in rng.choice(len(pairs), size=min(400, len(pairs)), replace=False)]
    for x, y in [(u, None) for u in utts] + picked:  # single utterances: every cut is wrong
        if y is None:
            joined, ws, one_voice = audio[x["id"]], words[x["id"]], True
        else:
            joined = np.concatenate([audio[x["id"]], gap, audio[y["id"]]])
            shift = (len(audio[x["id"]]) + len(gap)) * 1000 / RATE
            ws = words[x["id"]] + [(round(a + shift), round(b + shift)) for a, b in words[y["id"]]]
            one_voice = x["speaker"] == y["speaker"]
        turn = embed_turn(encoder, joined, ws, hop_s=settings.hop_s)
        bounds = _Bounds(turn, ws)
        for k in range(1, len(ws)):
            t = bounds.at(k)
            side = min(t, turn.total_speech_ms - t)
            if side < settings.min_segment_ms or not (one_voice or k == len(words[x["id"]])):
                continue
            left = tracker._windows_in(turn, 0, t)
            right = tracker._windows_in(turn, t, turn.total_speech_ms)
            if left.any() and right.any():
                sim = float(_unit(turn.vectors[left].mean(0)) @ _unit(turn.vectors[right].mean(0)))
                length = "short" if side < settings.short_side_ms else "long"
                cuts.setdefault(f"{'same' if one_voice else 'diff'}_{length}", []).append(sim)

    def pct(v: list[float], qs: list[int]) -> list[float]:
        return [round(float(np.percentile(v, q)), 3) for q in qs]

    # short pieces (the middle 0.5 / 1.0 s of an utterance) against whole utterances
    crops: dict[str, list[float]] = {}
    for seconds in (0.5, 1.0):
        n = int(seconds * RATE)
        for r in utts:
            a = audio[r["id"]]
            piece = encoder.embed(a[len(a) // 2 - n // 2 :][:n])
            for q in utts:
                if q["id"] != r["id"]:
                    kind = "same" if q["speaker"] == r["speaker"] else "diff"
                    crops.setdefault(f"{seconds}_{kind}", []).append(
                        float(piece @ _unit(vecs[q["id"]]))
                    )

    return {
        "piece_0.5s_similarity_same_p25_p50": pct(crops["0.5_same"], [25, 50]),
        "piece_0.5s_similarity_diff_p95_p99": pct(crops["0.5_diff"], [95, 99]),
        "piece_1.0s_similarity_same_p25_p50": pct(crops["1.0_same"], [25, 50]),
        "piece_1.0s_similarity_diff_p95_p99": pct(crops["1.0_diff"], [95, 99]),
        "utterance_similarity_same_p0_p1_p5": pct(same, [0, 1, 5]),
        "utterance_similarity_diff_p95_p99_p100": pct(diff, [95, 99, 100]),
        "cut_score_same_speaker_short_side_p0_p1": pct(cuts["same_short"], [0, 1]),
        "cut_score_diff_speakers_short_side_p99_p100": pct(cuts["diff_short"], [99, 100]),
        "cut_score_same_speaker_long_side_p0_p1": pct(cuts["same_long"], [0, 1]),
        "cut_score_diff_speakers_long_side_p99_p100": pct(cuts["diff_long"], [99, 100]),
        "cuts_counted": {k: len(v) for k, v in sorted(cuts.items())},
    }


def parse_settings(items: list[str]) -> SpeakerSettings:
    names = {f.name: f.type for f in fields(SpeakerSettings)}
    values = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in names:
            sys.exit(f"error: unknown setting {key!r}; known: {', '.join(names)}")
        values[key] = int(value) if names[key] in ("int", int) else float(value)
    return SpeakerSettings(**values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eval-dir", type=Path, default=ROOT.parent / "shared" / "eval" / "dev")
    parser.add_argument(
        "--modes", nargs="+", choices=["a", "b", "c", "pa", "pb"], default=["a", "b", "c"]
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--calibrate", action="store_true", help="threshold statistics only")
    parser.add_argument("--verbose", action="store_true", help="print each turn's labels")
    args = parser.parse_args()

    manifest = args.eval_dir / "manifest.jsonl"
    if not manifest.is_file():
        sys.exit(f"error: no manifest at {manifest}; fix: pass --eval-dir (the dev set folder)")
    rows = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r.get("kind") == "conversation"]
    settings = parse_settings(args.set)
    t = time.perf_counter()
    encoder = SpeakerEncoder(threads=args.threads).load()
    load_s = time.perf_counter() - t
    encoder.embed(np.zeros(RATE, dtype=np.float32) + 1e-3)  # warm the first call

    if args.calibrate:
        print(json.dumps(calibrate(args.eval_dir, settings, encoder), indent=2))
        return
    results = [
        run_mode(m, rows, args.eval_dir, settings, encoder, args.verbose) for m in args.modes
    ]
    print(
        f"{len(rows)} dev conversations, encoder loaded in {load_s:.2f} s, "
        f"torch threads {args.threads}, hop {settings.hop_s} s"
    )
    print(
        f"{'mode':<36} {'accuracy':>8} {'words':>6} {'turns':>5} {'speakers':>9} "
        f"{'turn s':>6} {'CPU ms/turn':>11} {'P95':>6} {'wall ms':>7} {'P95':>6}"
    )
    titles = {
        "a": "a reference turns",
        "b": "b reference turns joined in pairs",
        "c": "c tiny.en turns",
        "pa": "pa every speaker pair, a's turns",
        "pb": "pb every speaker pair, b's turns",
    }
    for r in results:
        s = r.summary()
        found = "/".join(str(n) for n in r.speakers_found)
        if len(r.speakers_found) > 3:
            found = f"{sum(n == 2 for n in r.speakers_found)}/{len(r.speakers_found)} x2"
        print(
            f"{titles[r.mode]:<36} {100 * r.accuracy:7.1f}% {r.words:>6} {r.turns:>5} "
            f"{found:>9} {s['turn_seconds_mean']:>6.1f} {s['cpu_ms_per_turn_mean']:>11.1f} "
            f"{s['cpu_ms_per_turn_p95']:>6.1f} {s['wall_ms_per_turn_mean']:>7.1f} "
            f"{s['wall_ms_per_turn_p95']:>6.1f}"
        )
    if args.json:
        out = {
            "settings": asdict(settings),
            "torch_threads": args.threads,
            "encoder_load_s": round(load_s, 2),
            "modes": [r.summary() for r in results],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The decode rules both Whisper backends follow, written once (no torch, no CTranslate2).

Why it exists: a session must not be able to tell which backend decoded its request, so the
CTranslate2 backend (`whisper_ct2.py`) and the PyTorch one (`whisper_torch/`) group a batch the
same way, build the same prompts, keep a session's language the same way, clean up aligned
words the same way and guard the result the same way. Those steps are plain Python over token
ids, words and numbers; they live here so that a fix to one is a fix to both.

What lives elsewhere: the encoder windows (`decoding.window_seconds`), the hallucination checks
themselves (`guards.py`), and everything that runs the network (features, encoding, search,
cross-attention alignment), which each backend does on its own runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from streamscribe.engine.decoding import DecodeRequest, DecodeResult, RawWord
from streamscribe.engine.guards import compression_ratio, loop_start, rejection_reason

# Whisper's punctuation merging (its `transcribe.py` defaults): opening marks join the next word,
# closing marks the previous one
PREPEND_PUNCT = "\"'“¿([{-"
APPEND_PUNCT = "\"'.。,，!！?？:：”)]}、"
MAX_PREVIOUS_TOKENS = 223 - 8  # prompt tokens kept at most (n_text_ctx // 2 - 1, less 8)
# a speaker rarely says more than ~5 tokens/s: new tokens are capped at 8 per second of audio
# plus 12, which bounds loops and runaway output
MAX_TOKENS_PER_S = 8
EXTRA_TOKENS = 12
MAX_WORD_S = 0.7  # the typical word length is taken as the median, at most this ...
MIN_LONG_WORD_S = 0.4  # ... and a word may last twice that, at least this ...
STRETCH = 1.5  # ... and a first/last word this much longer than that was stretched over a pause

GroupKey = tuple[str | None, str, int, bool, float]

# Whisper leaves out "um" and "uh" unless its prompt shows them: a session that asked for filler
# words (Deepgram's filler_words=true) starts its prompt with this disfluent sentence, so the
# decoder keeps the fillers it hears (measured in README.md, "filler words").
FILLER_PROMPT = "Umm, let me think like, hmm... Okay, here's what I'm, like, thinking. Uh, um, so."


class PromptTokenizer(Protocol):
    """What prompt building needs of a backend's tokenizer (both backends' have it)."""

    @property
    def sot_prev(self) -> int: ...
    @property
    def sot_sequence(self) -> Sequence[int]: ...
    @property
    def no_timestamps(self) -> int: ...
    def encode(self, text: str) -> list[int]: ...


def group_requests(requests: list[DecodeRequest]) -> dict[GroupKey, list[int]]:
    """Indices of the requests that decode together: same language, task, beam size, prompt or
    not, and encoder window minimum (one model call each)."""
    groups: dict[GroupKey, list[int]] = {}
    for i, r in enumerate(requests):
        key = (r.language, r.task, r.beam_size, bool(r.prompt.strip()), r.min_window_s)
        groups.setdefault(key, []).append(i)
    return groups


def build_prompts(
    reqs: list[DecodeRequest], tokenizers: Sequence[PromptTokenizer], sample_rate: int
) -> tuple[list[list[int]], list[int]]:
    """The decoder prompt of each request, and how many new tokens each may produce.

    Every item of a batch keeps the same number of (most recent) previous-text tokens, so the
    start-of-transcript token sits at the same position in all of them (CTranslate2 needs that;
    the PyTorch backend's batched prefill does too)."""
    previous = [
        tok.encode(" " + r.prompt.strip()) if r.prompt.strip() else []
        for r, tok in zip(reqs, tokenizers, strict=True)
    ]
    keep = min(MAX_PREVIOUS_TOKENS, *(len(p) for p in previous))
    prompts: list[list[int]] = []
    max_new: list[int] = []
    for prev, r, tok in zip(previous, reqs, tokenizers, strict=True):
        prompt: list[int] = [tok.sot_prev, *prev[len(prev) - keep :]] if keep else []
        prompt += [*tok.sot_sequence, tok.no_timestamps]
        prompts.append(prompt)
        max_new.append(int(MAX_TOKENS_PER_S * len(r.audio) / sample_rate) + EXTRA_TOKENS)
    return prompts, max_new


def stick_to_hint(ranked: list[tuple[str, float]], request: DecodeRequest) -> tuple[str, float]:
    """The language to decode in: the detected one, unless the request's hint (the session's
    language so far) differs and the detection is not confident enough to switch.

    `ranked`: [(language, probability)], best first; a language is its code ("de") or Whisper's
    token for it ("<|de|>", as CTranslate2's detection names it)."""
    ranked = [(_code(lang), float(p)) for lang, p in ranked]
    best, p = ranked[0]
    hint = request.language_hint
    if hint is None or best == hint or p >= request.switch_confidence:
        return best, p
    return hint, next((q for lang, q in ranked if lang == hint), 0.0)


def _code(language: str) -> str:
    return language[2:-2] if language.startswith("<|") and language.endswith("|>") else language


def merge_punctuations(alignment: list[dict], prepended: str, appended: str) -> None:
    """Opening marks join the next word, closing marks the previous one (in place; the rule of
    Whisper's and faster-whisper's `merge_punctuations`)."""
    i, j = len(alignment) - 2, len(alignment) - 1
    while i >= 0:
        prev, nxt = alignment[i], alignment[j]
        if prev["word"].startswith(" ") and prev["word"].strip() in prepended:
            nxt["word"] = prev["word"] + nxt["word"]
            nxt["tokens"] = prev["tokens"] + nxt["tokens"]
            prev["word"], prev["tokens"] = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(alignment):
        prev, nxt = alignment[i], alignment[j]
        if not prev["word"].endswith(" ") and nxt["word"] in appended:
            prev["word"] = prev["word"] + nxt["word"]
            prev["tokens"] = prev["tokens"] + nxt["tokens"]
            nxt["word"], nxt["tokens"] = "", []
        else:
            i = j
        j += 1


def words_from_alignment(alignment: list[dict], audio_s: float) -> list[RawWord]:
    """Words from a word-level alignment ([{"word", "tokens", "start", "end", "probability"}]):
    punctuation merged, stray punctuation joined to its word, first/last words that Whisper
    stretches over pauses cut to a plausible length, nothing past `audio_s`."""
    if not alignment:
        return []
    merge_punctuations(alignment, PREPEND_PUNCT, APPEND_PUNCT)
    words: list[dict] = []
    for a in alignment:
        if not a["word"].strip():
            continue
        if words and not any(c.isalnum() for c in a["word"]):
            words[-1]["word"] += a["word"].strip()  # stray punctuation joins its word
            continue
        words.append(a)
    durations = np.array([w["end"] - w["start"] for w in words])
    durations = durations[durations > 0]
    median = min(MAX_WORD_S, float(np.median(durations))) if len(durations) else 0.0
    max_d = max(median * 2, MIN_LONG_WORD_S)
    out = []
    for k, w in enumerate(words):
        start, end = float(w["start"]), float(w["end"])
        if end - start > max_d * STRETCH:  # Whisper stretches the first/last word over pauses
            if k == 0:
                start = end - max_d
            else:
                end = start + max_d
        end = min(end, audio_s)
        start = min(start, end)
        out.append(RawWord(w["word"].strip(), start, end, float(w["probability"])))
    return out


def guarded_results(
    scores: list[tuple[float, float]],
    words: list[list[RawWord]],
    languages: list[tuple[str | None, float | None]],
    *,
    multilingual: bool,
    decode_ms: float,
    meta: dict | None = None,
) -> list[DecodeResult]:
    """One `DecodeResult` per hypothesis, after the guards: a hypothesis that loops is cut where
    the loop starts, and one the rejection checks refuse keeps no words (with the reason).

    `scores`: (average log-probability, no-speech probability) per hypothesis."""
    out = []
    for (avg_lp, nsp), ws, (lang, lang_p) in zip(scores, words, languages, strict=True):
        cut = loop_start([w.text for w in ws])
        if cut is not None:
            ws = ws[:cut]
        kept = " ".join(w.text for w in ws)
        ratio = compression_ratio(kept)
        reason = rejection_reason(kept, avg_lp, nsp, ratio)
        if reason is not None:
            ws = []
        out.append(
            DecodeResult(
                words=tuple(ws),
                text=" ".join(w.text for w in ws),
                avg_logprob=avg_lp,
                no_speech_prob=nsp,
                compression_ratio=ratio,
                language=lang or ("en" if not multilingual else None),
                language_probability=lang_p,
                rejected=reason,
                decode_ms=decode_ms,
                meta=dict(meta or {}),
            )
        )
    return out

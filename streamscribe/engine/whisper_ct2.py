"""The default model backend: Whisper on CTranslate2 (faster-whisper's engine), batched.

faster-whisper's own `transcribe()` pads every call to a 30 s encoder window, which costs ~10x
more than the few seconds a streaming window holds. This backend keeps faster-whisper for what
it does well (loading any model name or directory, features, tokenizer, word alignment) and
calls the CTranslate2 model directly: windows are zero-padded only up to a small bucket, all
requests of a batch are encoded, generated and aligned together.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens, merge_punctuations

from streamscribe.engine.decoding import DecodeRequest, DecodeResult, RawWord, window_seconds
from streamscribe.engine.guards import compression_ratio, loop_start, rejection_reason

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP = 160
PREPEND_PUNCT = "\"'“¿([{-"
APPEND_PUNCT = "\"'.。,，!！?？:：”)]}、"


def pad_with_silence(feats: np.ndarray, frames: int) -> np.ndarray:
    """Log-mel `feats` extended to `frames` with digital silence.

    Whisper's features are clamped 8 log10 units below the clip's peak, then mapped by
    (x + 4) / 4, so silence is `max - 2`. Zeros there would be a constant hum, not silence; with
    long padding (the full 30 s window) that costs words."""
    if feats.shape[1] >= frames:
        return feats
    floor = float(feats.max()) - 2.0 if feats.size else -1.5
    return np.pad(feats, ((0, 0), (0, frames - feats.shape[1])), constant_values=floor)


class WhisperCT2Transcriber:
    """Batched Whisper decoding with word timestamps on CTranslate2."""

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        num_workers: int = 1,
    ) -> None:
        self._fw = WhisperModel(
            model,
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
            local_files_only=True,
        )
        self.model: ctranslate2.models.Whisper = self._fw.model
        self.multilingual = bool(self.model.is_multilingual)
        self.name = model
        self._tokenizers: dict[tuple[str | None, str], Tokenizer] = {}

    # ------------------------------------------------------------------ helpers
    def tokenizer(self, language: str | None, task: str = "transcribe") -> Tokenizer:
        key = (language, task)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(
                self._fw.hf_tokenizer,
                self.multilingual,
                task=task,
                language=language or ("en" if self.multilingual else None),
            )
        return self._tokenizers[key]

    def _features(self, audio: np.ndarray, window_s: float) -> tuple[np.ndarray, int]:
        n = int(window_s * SAMPLE_RATE)
        clip = audio[:n]
        frames = n // HOP
        feats = self._fw.feature_extractor(clip, padding=160)[:, :frames]
        return pad_with_silence(feats, frames), min(frames, max(2, len(clip) // HOP))

    # ------------------------------------------------------------------ decoding
    def transcribe_batch(self, requests: list[DecodeRequest]) -> list[DecodeResult]:
        """Decode a batch; requests with different languages/tasks run as sub-batches."""
        results: list[DecodeResult | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            key = (r.language, r.task, r.beam_size, bool(r.prompt.strip()), r.min_window_s)
            groups.setdefault(key, []).append(i)
        for (language, task, beam, _, min_window), idx in groups.items():
            out = self._decode_group([requests[i] for i in idx], language, task, beam, min_window)
            for i, res in zip(idx, out, strict=True):
                results[i] = res
        return [r for r in results if r is not None]

    def _decode_group(
        self,
        reqs: list[DecodeRequest],
        language: str | None,
        task: str,
        beam: int,
        min_window_s: float = 0.0,
    ) -> list[DecodeResult]:
        t0 = time.perf_counter()
        window_s = max(window_seconds(len(r.audio) / SAMPLE_RATE, min_window_s) for r in reqs)
        feats, content = zip(*(self._features(r.audio, window_s) for r in reqs), strict=True)
        batch = np.ascontiguousarray(np.stack(feats).astype(np.float32))
        enc = self.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False)

        languages: list[tuple[str | None, float | None]] = [(language, None)] * len(reqs)
        if language is None and self.multilingual:
            detected = self.model.detect_language(enc)
            languages = [stick_to_hint(d, r) for d, r in zip(detected, reqs, strict=True)]

        tokenizers = [self.tokenizer(lang, task) for lang, _ in languages]
        previous = [
            tok.encode(" " + r.prompt.strip()) if r.prompt.strip() else []
            for r, tok in zip(reqs, tokenizers, strict=True)
        ]
        # CTranslate2 needs <|startoftranscript|> at the same position in every batch item:
        # every item keeps the same number of (most recent) previous-text tokens
        keep = min(223 - 8, *(len(p) for p in previous))
        prompts = []
        max_new = []
        for prev, r, tok in zip(previous, reqs, tokenizers, strict=True):
            prompt: list[int] = [tok.sot_prev, *prev[len(prev) - keep :]] if keep else []
            prompt += [*tok.sot_sequence, tok.no_timestamps]
            prompts.append(prompt)
            # a speaker rarely says more than ~5 tokens/s; bounds loops and runaway output
            max_new.append(int(8 * len(r.audio) / SAMPLE_RATE) + 12)
        max_length = min(448, max(len(p) + m for p, m in zip(prompts, max_new, strict=True)))
        suppress = list(get_suppressed_tokens(tokenizers[0], [-1]))
        gen = self.model.generate(
            enc,
            prompts,
            beam_size=beam,
            patience=1.0,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=suppress,
        )
        token_lists = []
        metas = []
        for g, tok, m in zip(gen, tokenizers, max_new, strict=True):
            tokens = [t for t in g.sequences_ids[0][:m] if t < tok.eot]
            seq_len = len(tokens)
            avg_logprob = g.scores[0] * seq_len / (seq_len + 1) if seq_len else 0.0
            text = tok.decode(tokens).strip()
            metas.append((text, float(avg_logprob), float(g.no_speech_prob)))
            token_lists.append(tokens)

        # words are aligned within each request's own audio, never to the padding after it
        aligned = self._align(enc, tokenizers, token_lists, list(content), languages)
        # words the aligner places after the real audio are the model running on into padding;
        # the last word's end never reaches into the padding either
        aligned = [
            [
                dataclasses.replace(w, end=min(w.end, len(r.audio) / SAMPLE_RATE))
                for w in ws
                if w.start < len(r.audio) / SAMPLE_RATE - 0.1
            ]
            for ws, r in zip(aligned, reqs, strict=True)
        ]
        elapsed = (time.perf_counter() - t0) * 1000
        out = []
        for (_text, avg_lp, nsp), words, (lang, lang_p) in zip(
            metas, aligned, languages, strict=True
        ):
            cut = loop_start([w.text for w in words])
            if cut is not None:
                words = words[:cut]
            kept = " ".join(w.text for w in words)
            ratio = compression_ratio(kept)
            reason = rejection_reason(kept, avg_lp, nsp, ratio)
            if reason is not None:
                words = []
            out.append(
                DecodeResult(
                    words=tuple(words),
                    text=" ".join(w.text for w in words),
                    avg_logprob=avg_lp,
                    no_speech_prob=nsp,
                    compression_ratio=ratio,
                    language=lang or ("en" if not self.multilingual else None),
                    language_probability=lang_p,
                    rejected=reason,
                    decode_ms=elapsed,
                )
            )
        return out

    def _align(
        self, enc, tokenizers, token_lists, content_frames, languages
    ) -> list[list[RawWord]]:
        out: list[list[RawWord]] = [[] for _ in token_lists]
        todo = [i for i, t in enumerate(token_lists) if t]
        if not todo:
            return out
        # one sot sequence per align call: group by language
        by_lang: dict[str | None, list[int]] = {}
        for i in todo:
            by_lang.setdefault(languages[i][0], []).append(i)
        for _, idx in by_lang.items():
            tok = tokenizers[idx[0]]
            sub_enc = enc if len(idx) == len(token_lists) else _select(enc, idx)
            alignments = self._fw.find_alignment(
                tok, [token_lists[i] for i in idx], sub_enc, [content_frames[i] for i in idx]
            )
            for i, alignment in zip(idx, alignments, strict=True):
                out[i] = _words_from_alignment(alignment, content_frames[i] * HOP / SAMPLE_RATE)
        return out


def _speech_tokens(sequence: list[int], tok: Tokenizer, audio_s: float) -> list[int]:
    """Text tokens of the segments that start inside the real audio.

    The window is padded past the audio; a model that runs on into the padding repeats itself.
    Its timestamp tokens say where each segment starts, so segments starting after the end of
    the audio are cut.
    """
    out: list[int] = []
    pending: list[int] = []
    seen: set[str] = set()
    seg_start = 0.0
    limit = audio_s - 0.25
    for t in sequence:
        if t >= tok.timestamp_begin:
            ts = (t - tok.timestamp_begin) * 0.02
            if pending:
                key = "".join(c for c in tok.decode(pending).lower() if c.isalnum())
                if seg_start > limit or key in seen:  # past the audio, or a segment loop
                    return out
                seen.add(key)
                out.extend(pending)
                pending = []
            seg_start = ts
        elif t < tok.eot:
            pending.append(t)
    if pending and seg_start <= limit:
        out.extend(pending)
    return out


def _select(enc: ctranslate2.StorageView, idx: list[int]) -> ctranslate2.StorageView:
    arr = np.asarray(enc)  # CPU storage views expose the array interface
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(arr[idx]))


def _words_from_alignment(alignment: list[dict], audio_s: float) -> list[RawWord]:
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
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    max_d = max(median * 2, 0.4)
    out = []
    for k, w in enumerate(words):
        start, end = float(w["start"]), float(w["end"])
        if end - start > max_d * 1.5:  # Whisper stretches the first/last word over pauses
            if k == 0:
                start = end - max_d
            else:
                end = start + max_d
        end = min(end, audio_s)
        start = min(start, end)
        out.append(RawWord(w["word"].strip(), start, end, float(w["probability"])))
    return out


def stick_to_hint(detected: list[tuple[str, float]], request: DecodeRequest) -> tuple[str, float]:
    """The language to decode in: the detected one, unless the request's hint (the session's
    language so far) differs and the detection is not confident enough to switch.

    `detected` is CTranslate2's ranking, [("<|de|>", p), ...], best first."""
    ranked = [(token[2:-2], float(p)) for token, p in detected]
    best, p = ranked[0]
    hint = request.language_hint
    if hint is None or best == hint or p >= request.switch_confidence:
        return best, p
    return hint, next((q for lang, q in ranked if lang == hint), 0.0)

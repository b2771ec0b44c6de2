"""The default model backend: Whisper on CTranslate2 (faster-whisper's engine), batched.

faster-whisper's own `transcribe()` pads every call to a 30 s encoder window, which costs ~10x
more than the few seconds a streaming window holds. This backend keeps faster-whisper for what
it does well (loading any model name or directory, features, tokenizer, word alignment) and
calls the CTranslate2 model directly: windows are zero-padded only up to a small bucket, all
requests of a batch are encoded, generated and aligned together.

What lives elsewhere: the decode rules this backend shares with the PyTorch one (grouping,
prompts, language stickiness, word clean-up, guards) are `whisper_rules.py`'s; choosing this
backend is `backends.py`'s.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

from streamscribe.engine import whisper_rules
from streamscribe.engine.decoding import DecodeRequest, DecodeResult, RawWord, window_seconds

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP = 160
MAX_LENGTH = 448  # Whisper's text context: prompt and new tokens together


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
        groups = whisper_rules.group_requests(requests)
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
            languages = [
                whisper_rules.stick_to_hint(d, r) for d, r in zip(detected, reqs, strict=True)
            ]

        tokenizers = [self.tokenizer(lang, task) for lang, _ in languages]
        # CTranslate2 needs <|startoftranscript|> at the same position in every batch item
        prompts, max_new = whisper_rules.build_prompts(reqs, tokenizers, SAMPLE_RATE)
        max_length = min(MAX_LENGTH, max(len(p) + m for p, m in zip(prompts, max_new, strict=True)))
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
        scores = []
        for g, tok, m in zip(gen, tokenizers, max_new, strict=True):
            tokens = [t for t in g.sequences_ids[0][:m] if t < tok.eot]
            seq_len = len(tokens)
            avg_logprob = g.scores[0] * seq_len / (seq_len + 1) if seq_len else 0.0
            scores.append((float(avg_logprob), float(g.no_speech_prob)))
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
        return whisper_rules.guarded_results(
            scores, aligned, languages, multilingual=self.multilingual, decode_ms=elapsed
        )

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
                out[i] = whisper_rules.words_from_alignment(
                    alignment, content_frames[i] * HOP / SAMPLE_RATE
                )
        return out


def _select(enc: ctranslate2.StorageView, idx: list[int]) -> ctranslate2.StorageView:
    arr = np.asarray(enc)  # CPU storage views expose the array interface
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(arr[idx]))

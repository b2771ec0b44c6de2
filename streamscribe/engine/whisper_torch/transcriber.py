"""The PyTorch `Transcriber`: the CTranslate2 backend's decode rules on our own Whisper module.

Requests are grouped exactly as the CTranslate2 backend groups them (language, task, beam size,
prompt or not), windows are padded to the same 2 s buckets, prompts built the same way, the same
tokens suppressed and the same guards applied, so a session cannot tell which backend decoded
it. What differs is where it runs: features, encoder and decoder all on the torch device, with
the decoding steps replayed from CUDA graphs there. A CUDA out-of-memory error halves the batch
and retries instead of failing the sessions in it.

A greedy request may carry a draft (the session's previous tokens over the same window start and
prompt): on eager steps (the CPU) one decoder pass over prompt + draft verifies it and is the
prefill; greedy continues from the first token the model would not have written
(`search.greedy_from_drafts`). The output is plain greedy's; the passes saved are in each
result's meta (draft, accepted, passes, new) with the time of each stage.

What lives elsewhere: the rules shared with the CTranslate2 backend (grouping, prompts, language
stickiness, word clean-up, guards) are `engine/whisper_rules.py`'s, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import threading
import time
from pathlib import Path

import numpy as np
import torch

from streamscribe.engine import whisper_rules
from streamscribe.engine.decoding import DecodeRequest, DecodeResult, RawWord, window_seconds
from streamscribe.engine.whisper_torch.align import find_alignment
from streamscribe.engine.whisper_torch.features import HOP, SAMPLE_RATE, log_mel_batch
from streamscribe.engine.whisper_torch.search import (
    DecodeSlots,
    beam_search,
    draft_rows,
    greedy,
    greedy_from_drafts,
    prefill,
)
from streamscribe.engine.whisper_torch.tokenizer import WhisperTokenizer, load_bpe
from streamscribe.engine.whisper_torch.weights import load_whisper
from streamscribe.errors import StreamscribeError

log = logging.getLogger(__name__)

__all__ = ["WhisperTorchTranscriber", "resolve_device"]


def resolve_device(device: str) -> torch.device:
    """torch.device for `device` ("cpu", "cuda", "cuda:1", "auto"); a clear error if unusable."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise StreamscribeError(
                f"--device {device}: this PyTorch ({torch.__version__}) sees no usable CUDA GPU; "
                "install a CUDA build of torch or run with --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise StreamscribeError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    elif dev.type != "cpu":
        raise StreamscribeError(f"--device {device}: the torch backend runs on cpu or cuda")
    return dev


class WhisperTorchTranscriber:
    """Batched Whisper decoding with word timestamps on PyTorch (CPU or CUDA)."""

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model: str | Path,
        device: str = "cpu",
        compute_type: str = "default",
        cpu_threads: int = 0,
        cuda_graphs: bool = True,
        compile_encoder: bool = False,
        static_shapes: bool = False,
        encoder: str = "auto",
    ) -> None:
        self.device = resolve_device(device)
        if self.device.type == "cpu" and cpu_threads > 0:
            torch.set_num_threads(cpu_threads)
        self.dtype = _dtype(compute_type, self.device)
        self.name = str(model)
        self.model, self.config = load_whisper(model, self.device, self.dtype)
        self.dims = self.model.dims
        self.multilingual = self.dims.n_vocab >= 51865
        self._bpe = load_bpe(Path(model))
        self._tokenizers: dict[tuple[str | None, str], WhisperTokenizer] = {}
        base = self.tokenizer(None)
        self.eot = base.eot
        self.no_speech = base.no_speech
        fallback = list(range(base.sot + 1, base.translate)) if self.multilingual else []
        self.lang_ids = self.config.lang_ids or fallback
        suppress = torch.zeros(self.dims.n_vocab, device=self.device)
        suppress[base.suppressed()] = float("-inf")
        begin = torch.zeros(self.dims.n_vocab, device=self.device)
        begin[self.config.suppress_ids_begin or [base.encode(" ")[0], self.eot]] = float("-inf")
        self._suppress_begin = begin
        self.slots = DecodeSlots(
            self.model.decoder,
            suppress,
            self.eot,
            self.dtype,
            self.device,
            use_graphs=cuda_graphs,
            static_shapes=static_shapes,  # CPU: run the GPU's graph bodies eagerly (tests)
        )
        self._encoder = self.model.encoder
        if compile_encoder and self.device.type == "cuda":
            self._encoder = torch.compile(self.model.encoder, dynamic=True)
        self.encoder = _pick_encoder(encoder, Path(model), self.device, self.dtype)
        self._ct2 = _ct2_encoder(self.encoder, Path(model), self.device, self.dtype, cpu_threads)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ helpers
    def tokenizer(self, language: str | None, task: str = "transcribe") -> WhisperTokenizer:
        key = (language, task)
        if key not in self._tokenizers:
            self._tokenizers[key] = WhisperTokenizer(
                self._bpe, self.multilingual, task=task, language=language
            )
        return self._tokenizers[key]

    @property
    def cuda_graphs(self) -> bool:
        """Whether decoding steps replay CUDA graphs (False on the CPU)."""
        return self.slots.use_graphs

    # ------------------------------------------------------------------ decoding
    def transcribe_batch(self, requests: list[DecodeRequest]) -> list[DecodeResult]:
        """Decode a batch; requests with different languages/tasks run as sub-batches."""
        results: list[DecodeResult | None] = [None] * len(requests)
        groups = whisper_rules.group_requests(requests)
        with self._lock, torch.inference_mode():
            for (language, task, beam, _, _full), idx in groups.items():
                out = self._decode_safely([requests[i] for i in idx], language, task, beam)
                for i, res in zip(idx, out, strict=True):
                    results[i] = res
        return [r for r in results if r is not None]

    def _decode_safely(
        self, reqs: list[DecodeRequest], language: str | None, task: str, beam: int
    ) -> list[DecodeResult]:
        try:
            return self._decode_group(reqs, language, task, beam)
        except torch.cuda.OutOfMemoryError:
            # free the captured graphs' buffers and decode in halves: smaller, slower, alive
            self.slots.release()
            torch.cuda.empty_cache()
            if len(reqs) == 1:
                raise
            log.warning("CUDA out of memory decoding %d requests: retrying in halves", len(reqs))
            half = len(reqs) // 2
            return self._decode_safely(reqs[:half], language, task, beam) + self._decode_safely(
                reqs[half:], language, task, beam
            )

    def _decode_group(
        self, reqs: list[DecodeRequest], language: str | None, task: str, beam: int
    ) -> list[DecodeResult]:
        t0 = time.perf_counter()
        n = len(reqs)
        # grouped by min_window_s: the same for every request here
        minimum = reqs[0].min_window_s
        window_s = max(window_seconds(len(r.audio) / SAMPLE_RATE, minimum) for r in reqs)
        frames = int(window_s * SAMPLE_RATE // HOP)
        clips = [r.audio[: int(window_s * SAMPLE_RATE)] for r in reqs]
        mel = log_mel_batch(clips, frames, self.dims.n_mels, self.device).to(self.dtype)
        enc = self._encode(mel)
        t_enc = enc.shape[1]

        rows = n * beam
        slot = self.slots.get(rows, t_enc)
        view = slot.view(t_enc, rows)
        self.model.decoder.set_cross(view, enc.repeat_interleave(beam, 0) if beam > 1 else enc)

        languages: list[tuple[str | None, float | None]] = [(language, None)] * n
        if language is None and self.multilingual:
            languages = self._detect(slot, t_enc, reqs, beam)

        tokenizers = [self.tokenizer(lang, task) for lang, _ in languages]
        prompts, max_new = whisper_rules.build_prompts(reqs, tokenizers, SAMPLE_RATE)
        p_len = len(prompts[0])
        max_length = min(self.dims.n_text_ctx, max(p_len + m for m in max_new))
        n_steps = max(1, min(max_length // 2, max_length - (p_len - 1)))
        sot_index = prompts[0].index(tokenizers[0].sot)

        t_search = time.perf_counter()
        drafts = [list(r.draft) for r in reqs] if self._drafts_apply(reqs, beam) else None
        if drafts is not None:
            # one pass over prompt + draft verifies the drafts (and is the prefill)
            rows_in, drafts = draft_rows(prompts, drafts, self.eot, n_steps)
            logits = prefill(self.model.decoder, slot, t_enc, rows_in)
        else:
            logits = prefill(
                self.model.decoder, slot, t_enc, [p for p in prompts for _ in range(beam)]
            )
        sot_logits = logits[::beam, sot_index]
        no_speech = torch.softmax(sot_logits, dim=-1)[:, self.no_speech].tolist()
        if drafts is not None:
            hyps = greedy_from_drafts(
                self.slots, slot, t_enc, logits, p_len, drafts, n_steps, self._suppress_begin
            )
        elif beam == 1:
            last = logits[:, -1]
            hyps = greedy(self.slots, slot, t_enc, last, p_len, n_steps, self._suppress_begin)
        else:
            last = logits[:, -1]
            hyps = beam_search(
                self.slots, slot, t_enc, last, p_len, n_steps, self._suppress_begin, beam
            )

        token_lists, scores = [], []
        for h, m, nsp in zip(hyps, max_new, no_speech, strict=True):
            tokens = [t for t in h.tokens[:m] if t < self.eot]
            seq_len = len(tokens)
            avg_logprob = h.score * seq_len / (seq_len + 1) if seq_len else 0.0
            scores.append((float(avg_logprob), float(nsp)))
            token_lists.append(tokens)

        t_align = time.perf_counter()
        content = [min(frames, max(2, len(c) // HOP)) for c in clips]
        aligned = self._align(slot, t_enc, beam, tokenizers, token_lists, content, languages)
        aligned = [
            [w for w in ws if w.start < len(r.audio) / SAMPLE_RATE - 0.1]
            for ws, r in zip(aligned, reqs, strict=True)
        ]
        t_end = time.perf_counter()
        meta = {
            "backend": "torch",
            "device": str(self.device),
            "batch": n,
            "encode_ms": round((t_search - t0) * 1000, 2),  # features, encoder, cross keys
            "search_ms": round((t_align - t_search) * 1000, 2),  # prefill/verification + steps
            "align_ms": round((t_end - t_align) * 1000, 2),
        }
        results = whisper_rules.guarded_results(
            scores,
            aligned,
            languages,
            multilingual=self.multilingual,
            decode_ms=(t_end - t0) * 1000,
            meta=meta,
        )
        out = []
        for res, h, tokens in zip(results, hyps, token_lists, strict=True):
            res.meta.update(
                draft=h.drafted,
                accepted=h.accepted,
                passes=h.passes,
                new=max(0, len(tokens) - h.accepted),
            )
            out.append(dataclasses.replace(res, tokens=tuple(tokens)))
        return out

    def _drafts_apply(self, reqs: list[DecodeRequest], beam: int) -> bool:
        """Greedy requests carrying a draft, decoded with eager steps (the CUDA-graph path
        replays fixed-position steps: it decodes as if there were no draft)."""
        return beam == 1 and not self.slots.use_graphs and any(r.draft for r in reqs)

    def _encode(self, mel: torch.Tensor) -> torch.Tensor:
        if self._ct2 is not None:
            import ctranslate2

            features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy()))
            return torch.from_numpy(np.array(self._ct2.encode(features, to_cpu=True)))
        n = mel.shape[0]
        rows = self.slots.rows_for(n) if self._encoder is not self.model.encoder else n
        if rows > n:  # a compiled encoder sees few distinct batch sizes
            mel = torch.cat([mel, mel[:1].expand(rows - n, -1, -1)])
        return self._encoder(mel)[:n]

    def _detect(
        self, slot, t_enc: int, reqs: list[DecodeRequest], beam: int
    ) -> list[tuple[str | None, float | None]]:
        sot = self.tokenizer(None).sot
        logits = prefill(self.model.decoder, slot, t_enc, [[sot]] * (len(reqs) * beam))
        lang_logits = logits[::beam, 0][:, self.lang_ids]
        probs = torch.softmax(lang_logits.float(), dim=-1).cpu().numpy()
        out: list[tuple[str | None, float | None]] = []
        for r, p in zip(reqs, probs, strict=True):
            order = np.argsort(-p, kind="stable")
            ranked = [(self._bpe.id_to_token(self.lang_ids[j])[2:-2], float(p[j])) for j in order]
            out.append(whisper_rules.stick_to_hint(ranked, r))
        return out

    def _align(
        self, slot, t_enc, beam, tokenizers, token_lists, frames, languages
    ) -> list[list[RawWord]]:
        out: list[list[RawWord]] = [[] for _ in token_lists]
        todo = [i for i, t in enumerate(token_lists) if t]
        by_lang: dict[str | None, list[int]] = {}
        for i in todo:
            by_lang.setdefault(languages[i][0], []).append(i)
        cache = slot.view(t_enc)
        for idx in by_lang.values():
            rows = torch.tensor([i * beam for i in idx], device=self.device)
            alignments = find_alignment(
                self.model.decoder,
                tokenizers[idx[0]],
                cache.cross_k.index_select(1, rows),
                cache.cross_v.index_select(1, rows),
                [token_lists[i] for i in idx],
                [frames[i] for i in idx],
                self.config.alignment_heads,
            )
            for i, alignment in zip(idx, alignments, strict=True):
                out[i] = whisper_rules.words_from_alignment(
                    alignment, frames[i] * HOP / SAMPLE_RATE
                )
        return out


ENCODERS = ("auto", "torch", "ct2")


def _pick_encoder(encoder: str, model: Path, device: torch.device, dtype) -> str:
    """`auto`: CTranslate2's float32 encoder where it can run (CPU, float32, a CTranslate2 model
    directory, ctranslate2 installed) since it is cheaper with the same output; ours otherwise."""
    if encoder not in ENCODERS:
        raise StreamscribeError(f"encoder {encoder!r}: pass one of {', '.join(ENCODERS)}")
    if encoder != "auto":
        return encoder
    usable = (
        device.type == "cpu"
        and dtype == torch.float32
        and (model / "model.bin").is_file()
        and importlib.util.find_spec("ctranslate2") is not None
    )
    return "ct2" if usable else "torch"


def _ct2_encoder(encoder: str, model: Path, device: torch.device, dtype, threads: int):
    """CTranslate2's float32 encoder for `encoder="ct2"` (None for "torch").

    On this project's 2-core CPU it costs ~20-25 % less CPU than ours in float32 and feeds the
    torch decoder the same text and word times (113 of 113 replayed windows; a test holds it to
    that); bfloat16 or int8 encoders are cheaper still but change words (bench/README.md)."""
    if encoder == "torch":
        return None
    if device.type != "cpu" or dtype != torch.float32 or not (model / "model.bin").is_file():
        raise StreamscribeError(
            "the CTranslate2 encoder feeds the torch decoder on the CPU, in float32, "
            "from a CTranslate2 model directory"
        )
    import ctranslate2

    return ctranslate2.models.Whisper(
        str(model),
        device="cpu",
        compute_type="float32",
        intra_threads=threads or torch.get_num_threads(),
    )


def _dtype(compute_type: str, device: torch.device) -> torch.dtype:
    """float16 on CUDA, float32 on the CPU unless asked otherwise (int8 weights are
    dequantized on load: this backend computes in floating point)."""
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if compute_type in table:
        return table[compute_type]
    return torch.float16 if device.type == "cuda" else torch.float32

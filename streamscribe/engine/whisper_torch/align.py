"""Word timestamps from cross-attention, as Whisper computes them, batched in PyTorch.

The decoder is run once more over [start sequence, <|notimestamps|>, text, <|endoftext|>]; the
cross-attention of the model's alignment heads says which audio frames each token looks at. The
weights are softmaxed over the audio frames, standardised over the tokens, median-filtered over
time (width 7) and averaged over the heads; dynamic time warping through the negated matrix gives
a monotonic token -> frame path, and a word starts where the path first reaches its first token.
The words then get the clean-up both backends share (`words_from_alignment` in
`engine/whisper_rules.py`: punctuation merged into words, over-long first/last words cut), so the
engine cannot tell the backends apart.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from streamscribe.engine.whisper_torch.network import TextDecoder
from streamscribe.engine.whisper_torch.tokenizer import WhisperTokenizer

__all__ = ["dtw_path", "find_alignment"]

TOKENS_PER_SECOND = 50  # encoder frames per second (16 kHz, hop 160, conv stride 2)
MEDIAN_WIDTH = 7


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic alignment through `cost` (N, M): (token indices, frame indices) of the path.

    Each row's recurrence C[i,j] = x[i,j] + min(C[i-1,j-1], C[i-1,j], C[i,j-1]) is a prefix
    minimum of (best from the row above - cumulative row cost), so rows are vectorised."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        above = np.minimum(acc[i - 1, :-1], acc[i - 1, 1:])  # diagonal or up, for j = 1..m
        csum = np.cumsum(cost[i - 1])
        shifted = np.concatenate([[0.0], csum[:-1]])
        acc[i, 1:] = csum + np.minimum.accumulate(above - shifted)
    # the move into each cell (0 diagonal, 1 up, 2 left; ties go left, as Whisper's reference)
    c0, c1, c2 = acc[:-1, :-1], acc[:-1, 1:], acc[1:, :-1]
    move = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2)).tolist()
    i, j = n, m
    rows, cols = [], []
    while i > 0 and j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        step = move[i - 1][j - 1]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    while i > 0:  # reached the first frame: the remaining tokens sit on frame 0
        i -= 1
        rows.append(i)
        cols.append(0)
    return np.array(rows[::-1]), np.array(cols[::-1])


def _median_filter(x: torch.Tensor, width: int) -> torch.Tensor:
    """Median over the last axis with reflected edges; short axes pass through."""
    half = width // 2
    if x.shape[-1] <= half:
        return x
    lead = x.shape[:-1]
    flat = x.reshape(-1, 1, x.shape[-1])
    padded = F.pad(flat, (half, half), mode="reflect")
    return padded.unfold(-1, width, 1).median(dim=-1).values.reshape(*lead, -1)


@torch.inference_mode()
def find_alignment(
    decoder: TextDecoder,
    tokenizer: WhisperTokenizer,
    cross_k: torch.Tensor,
    cross_v: torch.Tensor,
    text_tokens: list[list[int]],
    num_frames: list[int],
    heads: list[tuple[int, int]],
) -> list[list[dict]]:
    """Per item, the words of `text_tokens` with start/end (s) and mean token probability.

    cross_k/cross_v: (layers, B, H, T, d) for the B items; the first `num_frames[b]` mel frames
    of item b are its audio (the rest is padding, which no word may be aligned to).
    """
    start = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    eot = tokenizer.eot
    seqs = [start + toks + [eot] for toks in text_tokens]
    width = max(len(s) for s in seqs)
    device = cross_k.device
    inputs = torch.tensor([s + [eot] * (width - len(s)) for s in seqs], device=device)
    layers = {layer for layer, _ in heads}
    logits, scores = decoder.forward_with_qk(inputs, cross_k, cross_v, layers)
    probs = torch.softmax(logits[..., :eot], dim=-1)  # text tokens only, as CTranslate2
    nexts = torch.cat([inputs[:, 1:], inputs[:, :1]], dim=1)
    token_probs = probs.gather(-1, nexts.clamp(max=eot - 1)[..., None])[..., 0].cpu().numpy()
    qk = torch.stack([scores[layer][:, head] for layer, head in heads], dim=1)  # (B, h, S, T)
    spans = [max(1, n // 2) for n in num_frames]  # encoder frames are two mel frames
    qk = qk[..., : max(spans)].float()
    content = (
        torch.arange(qk.shape[-1], device=device)[None, :]
        < torch.tensor(spans, device=device)[:, None]
    )
    qk = qk.masked_fill(~content[:, None, None, :], -math.inf)
    weights = torch.softmax(qk, dim=-1)
    offset = len(tokenizer.sot_sequence)
    # standardise each item over its own token rows (padding rows excluded), then filter and
    # average the heads for the whole batch at once: one transfer to the host, DTW there
    lengths = torch.tensor([len(s) for s in seqs], device=device)
    valid = (torch.arange(width, device=device)[None, :] < lengths[:, None]).float()
    valid = valid[:, None, :, None]  # (B, 1, S, 1)
    count = lengths.float()[:, None, None, None]
    mean = (weights * valid).sum(dim=2, keepdim=True) / count
    var = (((weights - mean) * valid) ** 2).sum(dim=2, keepdim=True) / count
    weights = (weights - mean) / var.sqrt().clamp_min(1e-12)
    matrices = _median_filter(weights, MEDIAN_WIDTH).mean(dim=1).cpu().double().numpy()
    results: list[list[dict]] = []
    for b, toks in enumerate(text_tokens):
        n_rows = len(seqs[b])
        matrix = matrices[b, offset : n_rows - 1, : spans[b]]  # <|notimestamps|> + text rows
        text_idx, time_idx = dtw_path(-matrix)
        tok_probs = token_probs[b, offset : offset + len(toks)]
        results.append(_words(tokenizer, toks, text_idx, time_idx, tok_probs))
    return results


def _words(
    tokenizer: WhisperTokenizer,
    tokens: list[int],
    text_idx: np.ndarray,
    time_idx: np.ndarray,
    token_probs: np.ndarray,
) -> list[dict]:
    words, word_tokens = tokenizer.split_to_word_tokens(tokens + [tokenizer.eot])
    if len(word_tokens) <= 1:
        return []
    bounds = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
    jump_times = time_idx[jumps] / TOKENS_PER_SECOND
    starts = jump_times[bounds[:-1]]
    ends = jump_times[bounds[1:]]
    probs = [float(np.mean(token_probs[i:j])) for i, j in zip(bounds[:-1], bounds[1:], strict=True)]
    return [
        {"word": w, "tokens": t, "start": float(s), "end": float(e), "probability": p}
        for w, t, s, e, p in zip(words, word_tokens, starts, ends, probs, strict=False)
    ]

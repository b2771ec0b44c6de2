"""A compact Whisper in PyTorch, shaped for serving rather than training.

Why our own module and not Hugging Face `transformers`: the decoder keeps a *static* key/value
cache (fixed buffers written in place at a position held in a tensor), so one decoding step has
fixed shapes and pointers and can be captured in a CUDA graph; the cross-attention keys/values
are computed once per batch; and the alignment forward returns the raw cross-attention scores of
the alignment heads, which word timestamps need. The projections are fused as CTranslate2 stores
them (q|k|v for self-attention, k|v for cross-attention), so its weights load without reshaping.

Named `network` because "model" means the model files elsewhere (`engine/model_files.py`);
loading weights into it is `weights.py`'s, decoding with it `search.py`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Dims", "KVCache", "Whisper"]


@dataclass(frozen=True)
class Dims:
    n_mels: int
    n_audio_ctx: int  # encoder positions (1500: 30 s)
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int  # decoder positions (448)
    n_text_state: int
    n_text_head: int
    n_text_layer: int


class MLP(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.ln(x))))


def _heads(x: Tensor, n_head: int) -> Tensor:
    """(B, T, D) -> (B, H, T, D/H)"""
    b, t, d = x.shape
    return x.view(b, t, n_head, d // n_head).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """(B, H, T, d) -> (B, T, H*d)"""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


class EncoderLayer(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.attn_ln = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.mlp = MLP(d)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(self.attn_ln(x)).chunk(3, dim=-1)
        a = F.scaled_dot_product_attention(
            _heads(q, self.n_head), _heads(k, self.n_head), _heads(v, self.n_head)
        )
        return self.mlp(x + self.out(_merge(a)))


class AudioEncoder(nn.Module):
    def __init__(self, dims: Dims) -> None:
        super().__init__()
        d = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(dims.n_audio_ctx, d))
        self.layers = nn.ModuleList(
            EncoderLayer(d, dims.n_audio_head) for _ in range(dims.n_audio_layer)
        )
        self.ln = nn.LayerNorm(d)

    def forward(self, mel: Tensor) -> Tensor:
        """(B, n_mels, frames) -> (B, frames/2, D); any even frame count up to 3000."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.ln(x)


@dataclass
class KVCache:
    """Static self-attention cache plus the batch's cross-attention keys/values.

    self_k/self_v: (layers, B, H, n_text_ctx, d); cross_k/cross_v: (layers, B, H, T_enc, d).
    Buffers are written in place, so their storage never moves (a CUDA graph may hold them).
    """

    self_k: Tensor
    self_v: Tensor
    cross_k: Tensor
    cross_v: Tensor

    @property
    def batch(self) -> int:
        return self.self_k.shape[1]

    def reorder(self, index: Tensor, length: int) -> None:
        """Beam search: row i takes the history of row index[i] (first `length` positions)."""
        for buf in (self.self_k, self.self_v):
            part = buf[:, :, :, :length]
            part.copy_(part.index_select(1, index))


class DecoderLayer(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.attn_ln = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.cross_ln = nn.LayerNorm(d)
        self.cross_q = nn.Linear(d, d)
        self.cross_kv = nn.Linear(d, 2 * d)
        self.cross_out = nn.Linear(d, d)
        self.mlp = MLP(d)

    def cross_keys_values(self, enc: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.cross_kv(enc).chunk(2, dim=-1)
        return _heads(k, self.n_head), _heads(v, self.n_head)

    def forward(
        self,
        x: Tensor,
        k_cache: Tensor,
        v_cache: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        pos: Tensor | None,
        mask: Tensor | None,
        want_qk: bool = False,
        length: int | None = None,
        per_row: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """x: (B, S, D). With `pos` (a 1-element tensor) S is 1 and the new key/value is written
        at `pos`; without it the S keys/values fill positions [0, S) of the cache. `per_row`:
        `pos` holds one position per row (B,), each row's key/value written at its own."""
        q, k, v = self.qkv(self.attn_ln(x)).chunk(3, dim=-1)
        q, k, v = _heads(q, self.n_head), _heads(k, self.n_head), _heads(v, self.n_head)
        if pos is None:
            s = x.shape[1]
            k_cache[:, :, :s].copy_(k)
            v_cache[:, :, :s].copy_(v)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=s > 1)
        else:
            if per_row:
                rows = torch.arange(k.shape[0], device=k.device)
                k_cache[rows, :, pos] = k[:, :, 0]
                v_cache[rows, :, pos] = v[:, :, 0]
            else:
                k_cache.index_copy_(2, pos, k)
                v_cache.index_copy_(2, pos, v)
            if length is not None:
                k_cache, v_cache = k_cache[:, :, :length], v_cache[:, :, :length]
            a = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask)
        x = x + self.out(_merge(a))
        cq = _heads(self.cross_q(self.cross_ln(x)), self.n_head)
        qk = None
        if want_qk:  # raw scores, as the alignment needs them (softmax over real frames later)
            qk = (cq @ cross_k.transpose(-1, -2)) * (cq.shape[-1] ** -0.5)
            a = torch.softmax(qk.float(), dim=-1).to(cq.dtype) @ cross_v
        else:
            a = F.scaled_dot_product_attention(cq, cross_k, cross_v)
        x = x + self.cross_out(_merge(a))
        return self.mlp(x), qk


class TextDecoder(nn.Module):
    def __init__(self, dims: Dims) -> None:
        super().__init__()
        d = dims.n_text_state
        self.dims = dims
        self.embedding = nn.Embedding(dims.n_vocab, d)
        self.register_buffer("positions", torch.zeros(dims.n_text_ctx, d))
        self.layers = nn.ModuleList(
            DecoderLayer(d, dims.n_text_head) for _ in range(dims.n_text_layer)
        )
        self.ln = nn.LayerNorm(d)
        self.register_buffer("_arange", torch.arange(dims.n_text_ctx), persistent=False)

    def set_cross(self, cache: KVCache, enc: Tensor) -> None:
        """Refill a cache's cross keys/values in place from a new encoder output."""
        for i, layer in enumerate(self.layers):
            k, v = layer.cross_keys_values(enc)
            cache.cross_k[i].copy_(k)
            cache.cross_v[i].copy_(v)

    def logits(self, x: Tensor) -> Tensor:
        return F.linear(self.ln(x), self.embedding.weight).float()

    def prefill(self, tokens: Tensor, cache: KVCache) -> Tensor:
        """Run the prompt (B, S) from position 0; returns logits (B, S, V) as float32."""
        s = tokens.shape[1]
        x = self.embedding(tokens) + self.positions[:s]
        for i, layer in enumerate(self.layers):
            x, _ = layer(
                x, cache.self_k[i], cache.self_v[i], cache.cross_k[i], cache.cross_v[i], None, None
            )
        return self.logits(x)

    def step(
        self, tokens: Tensor, pos: Tensor, cache: KVCache, length: int | None = None
    ) -> Tensor:
        """One token per row (B,) at position `pos` (a 1-element long tensor); logits (B, V).

        Without `length`, attention masks the whole static cache past `pos`: fixed shapes and
        buffers, what a CUDA graph captures. With `length` (= pos + 1, known on the host when
        running eagerly) it reads only the filled part, which is cheaper on a CPU."""
        x = self.embedding(tokens[:, None]) + self.positions.index_select(0, pos)
        mask = None if length is not None else (self._arange <= pos)[None, None, None, :]
        for i, layer in enumerate(self.layers):
            k, v = cache.self_k[i], cache.self_v[i]
            x, _ = layer(x, k, v, cache.cross_k[i], cache.cross_v[i], pos, mask, length=length)
        return self.logits(x)[:, 0]

    def step_rows(self, tokens: Tensor, pos: Tensor, cache: KVCache, length: int) -> Tensor:
        """One token per row (B,), each at its own position `pos` (B,); logits (B, V).

        What greedy decoding continues with after draft verification, when rows accepted
        drafts of different lengths: each row attends over [0, its position], the cache read
        up to `length` (= the largest position + 1) with the rest of a row masked."""
        x = self.embedding(tokens[:, None]) + self.positions.index_select(0, pos)[:, None]
        mask = (self._arange[:length][None, :] <= pos[:, None])[:, None, None, :]
        for i, layer in enumerate(self.layers):
            k, v = cache.self_k[i], cache.self_v[i]
            x, _ = layer(
                x, k, v, cache.cross_k[i], cache.cross_v[i], pos, mask, length=length, per_row=True
            )
        return self.logits(x)[:, 0]

    def forward_with_qk(
        self, tokens: Tensor, cross_k: Tensor, cross_v: Tensor, layers: set[int]
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """Teacher-forced pass over (B, S) tokens without a cache, for word alignment: logits
        (B, S, V) and the raw cross-attention scores (B, H, S, T) of the listed layers."""
        b, s = tokens.shape
        dims = self.dims
        h, hd = dims.n_text_head, dims.n_text_state // dims.n_text_head
        scratch = tokens.new_zeros((b, h, s, hd), dtype=cross_k.dtype)
        x = self.embedding(tokens) + self.positions[:s]
        scores: dict[int, Tensor] = {}
        for i, layer in enumerate(self.layers):
            x, qk = layer(
                x, scratch, scratch.clone(), cross_k[i], cross_v[i], None, None, i in layers
            )
            if qk is not None:
                scores[i] = qk
        return self.logits(x), scores


class Whisper(nn.Module):
    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(dims)
        self.decoder = TextDecoder(dims)

"""Fills our PyTorch Whisper from a model directory: CTranslate2 (what we ship) or Hugging Face.

CTranslate2 names follow its Whisper spec: `encoder/conv{1,2}`, `encoder/layer_N/self_attention/
linear_0` (q|k|v fused, k's zero bias included), `linear_1` (output), `ffn/linear_{0,1}`,
`layer_norm/{gamma,beta}`; the decoder adds `attention/linear_0` (cross q), `linear_1` (cross
k|v fused), `linear_2` (output); `decoder/projection` aliases `decoder/embeddings`. Hugging Face
checkpoints (`model.safetensors` or `pytorch_model.bin`, `model.` prefixed names) are fused the
same way on load. Quantized weights are dequantized; everything becomes `dtype`.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from streamscribe.engine.whisper_torch.ct2_reader import read_ct2
from streamscribe.engine.whisper_torch.network import Dims, Whisper
from streamscribe.errors import ModelNotFoundError

__all__ = ["ModelConfig", "load_whisper", "model_format"]


@dataclass
class ModelConfig:
    """What decoding needs besides the weights (CTranslate2's config.json, or HF's)."""

    alignment_heads: list[tuple[int, int]]
    suppress_ids: list[int] = field(default_factory=list)
    suppress_ids_begin: list[int] = field(default_factory=list)
    lang_ids: list[int] = field(default_factory=list)


def model_format(path: Path) -> str:
    """ "ct2" or "hf" for a model directory; ModelNotFoundError naming what is accepted."""
    if (path / "model.bin").is_file():
        return "ct2"
    if (path / "model.safetensors").is_file() or (path / "pytorch_model.bin").is_file():
        return "hf"
    raise ModelNotFoundError(
        f"{path} holds no Whisper model the torch backend can read: it needs model.bin "
        "(CTranslate2) or model.safetensors / pytorch_model.bin (Hugging Face), plus "
        "tokenizer.json"
    )


def load_whisper(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Whisper, ModelConfig]:
    path = Path(path)
    if not path.is_dir():
        raise ModelNotFoundError(f"model directory {path} does not exist")
    fmt = model_format(path)
    tensors, dims, config = _from_ct2(path) if fmt == "ct2" else _from_hf(path)
    with torch.device("meta"):
        model = Whisper(dims)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ModelNotFoundError(
            f"{path}: the weights do not form a Whisper model (missing {sorted(missing)[:4]}, "
            f"unexpected {sorted(unexpected)[:4]})"
        )
    model.load_state_dict(state, assign=True)
    model.decoder._arange = torch.arange(dims.n_text_ctx)
    model = model.to(device=device, dtype=dtype).eval()
    model.decoder._arange = model.decoder._arange.to(device=device, dtype=torch.long)
    model.requires_grad_(False)
    return model, config


# ----------------------------------------------------------------------------- CTranslate2


def _from_ct2(path: Path) -> tuple[dict[str, np.ndarray], Dims, ModelConfig]:
    ct2 = read_ct2(path)
    if ct2.spec != "WhisperSpec":
        kind = ct2.spec or "pre-spec"
        raise ModelNotFoundError(f"{path}/model.bin is a {kind} model, not Whisper")
    get = ct2.array
    out: dict[str, np.ndarray] = {}

    def norm(dst: str, src: str) -> None:
        out[dst + ".weight"] = get(src + "/gamma")
        out[dst + ".bias"] = get(src + "/beta")

    def lin(dst: str, src: str) -> None:
        out[dst + ".weight"] = get(src + "/weight")
        out[dst + ".bias"] = get(src + "/bias")

    for i in (1, 2):
        lin(f"encoder.conv{i}", f"encoder/conv{i}")
    out["encoder.positions"] = get("encoder/position_encodings/encodings")
    norm("encoder.ln", "encoder/layer_norm")
    n_enc = _count(ct2.names(), "encoder/layer_")
    for i in range(n_enc):
        s, d = f"encoder/layer_{i}", f"encoder.layers.{i}"
        norm(f"{d}.attn_ln", f"{s}/self_attention/layer_norm")
        lin(f"{d}.qkv", f"{s}/self_attention/linear_0")
        lin(f"{d}.out", f"{s}/self_attention/linear_1")
        norm(f"{d}.mlp.ln", f"{s}/ffn/layer_norm")
        lin(f"{d}.mlp.fc1", f"{s}/ffn/linear_0")
        lin(f"{d}.mlp.fc2", f"{s}/ffn/linear_1")
    out["decoder.embedding.weight"] = get("decoder/embeddings/weight")
    out["decoder.positions"] = get("decoder/position_encodings/encodings")
    norm("decoder.ln", "decoder/layer_norm")
    n_dec = _count(ct2.names(), "decoder/layer_")
    for i in range(n_dec):
        s, d = f"decoder/layer_{i}", f"decoder.layers.{i}"
        norm(f"{d}.attn_ln", f"{s}/self_attention/layer_norm")
        lin(f"{d}.qkv", f"{s}/self_attention/linear_0")
        lin(f"{d}.out", f"{s}/self_attention/linear_1")
        norm(f"{d}.cross_ln", f"{s}/attention/layer_norm")
        lin(f"{d}.cross_q", f"{s}/attention/linear_0")
        lin(f"{d}.cross_kv", f"{s}/attention/linear_1")
        lin(f"{d}.cross_out", f"{s}/attention/linear_2")
        norm(f"{d}.mlp.ln", f"{s}/ffn/layer_norm")
        lin(f"{d}.mlp.fc1", f"{s}/ffn/linear_0")
        lin(f"{d}.mlp.fc2", f"{s}/ffn/linear_1")
    if "decoder/projection/weight" in ct2:
        proj = get("decoder/projection/weight")
        if not np.array_equal(proj, out["decoder.embedding.weight"]):
            raise ModelNotFoundError(f"{path}: an output projection untied from the embeddings")
    enc_heads = int(ct2.scalar("encoder/num_heads"))
    dec_heads = int(ct2.scalar("decoder/num_heads"))
    dims = _dims(out, n_enc, enc_heads, n_dec, dec_heads)
    cfg = _read_json(path / "config.json")
    config = ModelConfig(
        alignment_heads=[tuple(h) for h in cfg.get("alignment_heads") or []]
        or _default_heads(dims),
        suppress_ids=list(cfg.get("suppress_ids") or []),
        suppress_ids_begin=list(cfg.get("suppress_ids_begin") or []),
        lang_ids=list(cfg.get("lang_ids") or []),
    )
    return out, dims, config


def _count(names: list[str], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)/")
    found = {int(m.group(1)) for n in names if (m := pattern.match(n))}
    if found != set(range(len(found))):
        raise ModelNotFoundError(f"model.bin has gaps in its {prefix}* layers: {sorted(found)}")
    return len(found)


def _dims(w: dict[str, np.ndarray], n_enc: int, enc_heads: int, n_dec: int, dec_heads: int) -> Dims:
    return Dims(
        n_mels=w["encoder.conv1.weight"].shape[1],
        n_audio_ctx=w["encoder.positions"].shape[0],
        n_audio_state=w["encoder.conv1.weight"].shape[0],
        n_audio_head=enc_heads,
        n_audio_layer=n_enc,
        n_vocab=w["decoder.embedding.weight"].shape[0],
        n_text_ctx=w["decoder.positions"].shape[0],
        n_text_state=w["decoder.embedding.weight"].shape[1],
        n_text_head=dec_heads,
        n_text_layer=n_dec,
    )


def _default_heads(dims: Dims) -> list[tuple[int, int]]:
    """Whisper's fallback: every head of the last half of the decoder layers."""
    return [
        (layer, head)
        for layer in range(dims.n_text_layer // 2, dims.n_text_layer)
        for head in range(dims.n_text_head)
    ]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


# ----------------------------------------------------------------------------- Hugging Face


def _from_hf(path: Path) -> tuple[dict[str, np.ndarray], Dims, ModelConfig]:
    hf = _hf_tensors(path)
    cfg = _read_json(path / "config.json")
    gen = _read_json(path / "generation_config.json")

    def get(name: str) -> np.ndarray:
        for candidate in (name, "model." + name):
            if candidate in hf:
                return hf[candidate]()
        raise ModelNotFoundError(f"{path}: the checkpoint lacks {name}; not a Whisper model")

    def has(name: str) -> bool:
        return name in hf or "model." + name in hf

    out: dict[str, np.ndarray] = {}

    def lin(dst: str, src: str, bias: bool = True) -> None:
        out[dst + ".weight"] = get(src + ".weight")
        out[dst + ".bias"] = (
            get(src + ".bias") if bias else np.zeros(out[dst + ".weight"].shape[0], np.float32)
        )

    def fused(dst: str, srcs: list[str]) -> None:
        ws = [get(s + ".weight") for s in srcs]
        bs = [
            get(s + ".bias") if has(s + ".bias") else np.zeros(w.shape[0], np.float32)
            for s, w in zip(srcs, ws, strict=True)
        ]
        out[dst + ".weight"] = np.concatenate(ws, axis=0)
        out[dst + ".bias"] = np.concatenate(bs, axis=0)

    def attn(dst: str, src: str) -> None:
        fused(f"{dst}.qkv", [f"{src}.self_attn.{p}_proj" for p in "qkv"])
        lin(f"{dst}.out", f"{src}.self_attn.out_proj")
        lin(f"{dst}.attn_ln", f"{src}.self_attn_layer_norm")
        lin(f"{dst}.mlp.ln", f"{src}.final_layer_norm")
        lin(f"{dst}.mlp.fc1", f"{src}.fc1")
        lin(f"{dst}.mlp.fc2", f"{src}.fc2")

    for i in (1, 2):
        lin(f"encoder.conv{i}", f"encoder.conv{i}")
    out["encoder.positions"] = get("encoder.embed_positions.weight")
    lin("encoder.ln", "encoder.layer_norm")
    n_enc = int(cfg.get("encoder_layers", 0))
    n_dec = int(cfg.get("decoder_layers", 0))
    if not n_enc or not n_dec:
        raise ModelNotFoundError(f"{path}/config.json lacks encoder_layers/decoder_layers")
    for i in range(n_enc):
        attn(f"encoder.layers.{i}", f"encoder.layers.{i}")
    out["decoder.embedding.weight"] = get("decoder.embed_tokens.weight")
    out["decoder.positions"] = get("decoder.embed_positions.weight")
    lin("decoder.ln", "decoder.layer_norm")
    for i in range(n_dec):
        s, d = f"decoder.layers.{i}", f"decoder.layers.{i}"
        attn(d, s)
        lin(f"{d}.cross_ln", f"{s}.encoder_attn_layer_norm")
        lin(f"{d}.cross_q", f"{s}.encoder_attn.q_proj")
        fused(f"{d}.cross_kv", [f"{s}.encoder_attn.k_proj", f"{s}.encoder_attn.v_proj"])
        lin(f"{d}.cross_out", f"{s}.encoder_attn.out_proj")
    dims = _dims(
        out,
        n_enc,
        int(cfg["encoder_attention_heads"]),
        n_dec,
        int(cfg["decoder_attention_heads"]),
    )
    config = ModelConfig(
        alignment_heads=[tuple(h) for h in gen.get("alignment_heads") or []]
        or _default_heads(dims),
        suppress_ids=list(gen.get("suppress_tokens") or cfg.get("suppress_tokens") or []),
        suppress_ids_begin=list(
            gen.get("begin_suppress_tokens") or cfg.get("begin_suppress_tokens") or []
        ),
        lang_ids=sorted((gen.get("lang_to_id") or {}).values()),
    )
    return out, dims, config


def _hf_tensors(path: Path) -> dict[str, Callable[[], np.ndarray]]:
    """name -> loader of the float32 array, from safetensors (read here) or a torch pickle."""
    st = path / "model.safetensors"
    if st.is_file():
        return _safetensors(st)
    state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    return {k: (lambda t=t: t.float().numpy()) for k, t in state.items()}


_ST_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4"}


def _safetensors(path: Path) -> dict[str, Callable[[], np.ndarray]]:
    """A .safetensors file: u64 header size, a JSON header {name: {dtype, shape,
    data_offsets}}, then the data."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out: dict[str, Callable[[], np.ndarray]] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in _ST_DTYPES:
            raise ModelNotFoundError(f"{path}: {name} has unsupported dtype {meta['dtype']}")

        def load(meta: dict = meta) -> np.ndarray:
            start, end = meta["data_offsets"]
            raw = np.frombuffer(
                data,
                _ST_DTYPES[meta["dtype"]],
                offset=base + start,
                count=(end - start) // np.dtype(_ST_DTYPES[meta["dtype"]]).itemsize,
            )
            if meta["dtype"] == "BF16":
                raw = (raw.astype(np.uint32) << 16).view(np.float32)
            return raw.astype(np.float32).reshape(meta["shape"])

        out[name] = load
    return out

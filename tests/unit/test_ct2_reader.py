"""The CTranslate2 model.bin reader: header, dtypes, quantization scales, aliases, old binary
versions, damaged files, and the real tiny.en file that CTranslate2 itself wrote.

Fixtures are packed byte by byte here (not with the module's own writer), so a mistake shared by
the reader and the writer cannot hide.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from streamscribe.engine.whisper_torch.ct2_reader import (
    CT2File,
    CT2Variable,
    quantize_int8,
    read_ct2,
    write_ct2,
)
from streamscribe.errors import ModelNotFoundError

DTYPE_ID = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}


def s(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def var(name: str, dtype: str, values: np.ndarray) -> bytes:
    shape = values.shape
    head = s(name) + struct.pack("<B", len(shape)) + struct.pack(f"<{len(shape)}I", *shape)
    data = values.tobytes()
    return head + struct.pack("<BI", DTYPE_ID[dtype], len(data)) + data


def bf16_bits(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


WEIGHT = np.array([[0.5, -1.0, 0.25], [2.0, 0.0, -2.0]], np.float32)
SCALE = 127.0 / np.abs(WEIGHT).max(axis=1)


def v6_file(tmp_path: Path) -> Path:
    q = np.rint(WEIGHT * SCALE[:, None]).astype(np.int8)
    variables = [
        var("a/bias", "float32", np.array([1.5, -2.25], np.float32)),
        var("a/half", "float16", np.array([0.5, 3.0], np.float16)),
        var("a/brain", "bfloat16", bf16_bits(np.array([1.0, -0.375], np.float32))),
        var("a/weight", "int8", q),
        var("a/weight_scale", "float32", SCALE.astype(np.float32)),
        var("b/weight", "int16", np.array([[1000, -500]], np.int16)),
        var("b/weight_scale", "float32", np.array(1000.0, np.float32)),
        var("c/ids", "int32", np.array([7, 70000], np.int32)),
        var("flag", "int8", np.array(1, np.int8)),
        var("heads", "int16", np.array(6, np.int16)),
    ]
    body = struct.pack("<I", 6) + s("WhisperSpec") + struct.pack("<II", 3, len(variables))
    body += b"".join(variables) + struct.pack("<I", 1) + s("d/weight") + s("a/weight")
    path = tmp_path / "model.bin"
    path.write_bytes(body)
    return path


def test_header_dtypes_and_aliases(tmp_path: Path) -> None:
    m = read_ct2(v6_file(tmp_path).parent)  # a directory names its model.bin
    assert (m.binary_version, m.spec, m.revision) == (6, "WhisperSpec", 3)
    assert m.variable("a/half").dtype == "float16"
    assert m.variable("c/ids").dtype == "int32"
    np.testing.assert_array_equal(m.array("a/bias"), [1.5, -2.25])
    np.testing.assert_array_equal(m.array("a/half"), [0.5, 3.0])
    np.testing.assert_array_equal(m.array("a/brain"), [1.0, -0.375])
    np.testing.assert_array_equal(m.array("c/ids", np.int64), [7, 70000])
    assert m.scalar("heads") == 6 and m.scalar("flag") == 1
    assert m.variable("heads").is_scalar and m.variable("a/weight").shape == (2, 3)


def test_int8_rows_and_int16_dequantized_by_their_scales(tmp_path: Path) -> None:
    m = read_ct2(v6_file(tmp_path))
    np.testing.assert_allclose(m.array("a/weight"), WEIGHT, atol=1 / 127)
    np.testing.assert_allclose(m.array("b/weight"), [[1.0, -0.5]])
    assert m.array("a/weight", np.int8).dtype == np.int8  # raw values on request


def test_alias_resolves_to_target_and_its_scale(tmp_path: Path) -> None:
    m = read_ct2(v6_file(tmp_path))
    assert "d/weight" in m and "d/weight" in m.names()
    assert m.resolve("d/weight") == "a/weight"
    np.testing.assert_array_equal(m.array("d/weight"), m.array("a/weight"))
    assert "nothing" not in m
    with pytest.raises(KeyError):
        m.array("nothing")


def test_binary_version_3_counts_items_not_bytes(tmp_path: Path) -> None:
    values = np.array([[1.0, 2.0]], np.float32)
    entry = s("x/w") + struct.pack("<B2I", 2, 1, 2) + struct.pack("<BI", 4, 2) + values.tobytes()
    body = struct.pack("<I", 3) + s("TransformerSpec") + struct.pack("<II", 1, 1) + entry
    body += struct.pack("<I", 1) + s("y/w") + s("x/w")
    path = tmp_path / "model.bin"
    path.write_bytes(body)
    m = read_ct2(path)
    assert m.binary_version == 3 and m.variable("x/w").dtype == "float32"
    np.testing.assert_array_equal(m.array("y/w"), values)


def test_damaged_files_name_the_problem(tmp_path: Path) -> None:
    good = v6_file(tmp_path).read_bytes()
    path = tmp_path / "model.bin"
    path.write_bytes(good[:-40])
    with pytest.raises(ModelNotFoundError, match="truncated"):
        read_ct2(path)
    path.write_bytes(struct.pack("<I", 99) + good[4:])
    with pytest.raises(ModelNotFoundError, match="binary version 99"):
        read_ct2(path)
    wrong = s("x") + struct.pack("<BI", 1, 4) + struct.pack("<BI", 0, 12) + b"\0" * 12
    path.write_bytes(struct.pack("<I", 6) + s("S") + struct.pack("<II", 1, 1) + wrong)
    with pytest.raises(ModelNotFoundError, match="holds 12 bytes"):
        read_ct2(path)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        read_ct2(tmp_path / "missing")


def test_int8_without_scale_is_refused(tmp_path: Path) -> None:
    body = struct.pack("<I", 6) + s("S") + struct.pack("<II", 1, 1)
    body += var("w/weight", "int8", np.ones((2, 2), np.int8)) + struct.pack("<I", 0)
    (tmp_path / "model.bin").write_bytes(body)
    with pytest.raises(ModelNotFoundError, match="without w/weight_scale"):
        read_ct2(tmp_path).array("w/weight")


def test_quantize_and_write_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 16)).astype(np.float32)
    src = CT2File(
        6,
        "WhisperSpec",
        3,
        {
            "l/weight": CT2Variable("l/weight", w.shape, "float32", w),
            "conv/weight": CT2Variable("conv/weight", (2, 2, 3), "float32", np.ones((2, 2, 3))),
            "l/bias": CT2Variable("l/bias", (8,), "float32", np.arange(8, dtype=np.float32)),
            "n": CT2Variable("n", (), "int16", np.array(4, np.int16)),
        },
        {"p/weight": "l/weight"},
    )
    write_ct2(tmp_path / "model.bin", quantize_int8(src))
    m = read_ct2(tmp_path)
    assert m.variable("l/weight").dtype == "int8"
    assert m.variable("conv/weight").dtype == "float16"  # convolutions stay floating
    assert m.variable("l/bias").dtype == "float16"
    # per-row int8: error at most half a quantization step of that row
    step = np.abs(w).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(m.array("p/weight") - w) <= step / 2 + 1e-6)
    assert m.scalar("n") == 4


def test_reads_the_tiny_en_that_ctranslate2_wrote() -> None:
    from streamscribe.engine.model_files import resolve_model

    try:
        path = Path(resolve_model("tiny.en", Path("/nonexistent-cache")))
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))
    m = read_ct2(path)
    assert (m.binary_version, m.spec, m.revision) == (6, "WhisperSpec", 3)
    assert len(m.variables) == 148
    assert m.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert m.variable("decoder/embeddings/weight").shape == (51864, 384)
    assert m.variable("decoder/embeddings/weight").dtype == "float16"
    assert m.variable("encoder/layer_0/self_attention/linear_0/weight").shape == (1152, 384)
    assert m.variable("decoder/layer_3/attention/linear_1/weight").shape == (768, 384)
    assert m.scalar("encoder/num_heads") == 6 and m.scalar("decoder/num_heads") == 6
    emb = m.array("decoder/projection/weight")
    assert emb.dtype == np.float32 and np.isfinite(emb).all() and 0.01 < np.abs(emb).mean() < 1

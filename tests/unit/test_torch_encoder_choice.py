"""Which encoder the torch backend runs: `auto` takes CTranslate2's float32 encoder where it can
run (the same words for less CPU, bench/README.md) and ours everywhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ctranslate2")

from streamscribe.engine.whisper_torch.transcriber import _pick_encoder  # noqa: E402
from streamscribe.errors import StreamscribeError  # noqa: E402

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def ct2_dir(tmp_path: Path) -> Path:
    (tmp_path / "model.bin").write_bytes(b"")
    return tmp_path


def test_auto_takes_the_ct2_encoder_on_the_cpu_in_float32(ct2_dir: Path) -> None:
    assert _pick_encoder("auto", ct2_dir, CPU, torch.float32) == "ct2"


@pytest.mark.parametrize(
    "device, dtype, has_ct2_files",
    [(CUDA, torch.float16, True), (CPU, torch.bfloat16, True), (CPU, torch.float32, False)],
)
def test_auto_keeps_ours_where_ct2_cannot_feed_it(
    tmp_path: Path, device, dtype, has_ct2_files: bool
) -> None:
    if has_ct2_files:
        (tmp_path / "model.bin").write_bytes(b"")
    assert _pick_encoder("auto", tmp_path, device, dtype) == "torch"


def test_an_explicit_choice_is_kept_and_a_wrong_one_named(ct2_dir: Path) -> None:
    assert _pick_encoder("torch", ct2_dir, CPU, torch.float32) == "torch"
    assert _pick_encoder("ct2", ct2_dir, CPU, torch.float32) == "ct2"
    with pytest.raises(StreamscribeError, match="auto, torch, ct2"):
        _pick_encoder("bf16", ct2_dir, CPU, torch.float32)

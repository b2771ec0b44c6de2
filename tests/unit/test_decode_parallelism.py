"""How many model calls run at once, and with how many threads each (settings left at 0)."""

from __future__ import annotations

import pytest

from streamscribe.config import Settings, decode_batch_size, decode_parallelism


@pytest.mark.parametrize(
    ("cores", "expected"),
    [(1, (1, 1)), (2, (2, 1)), (4, (4, 1)), (8, (4, 2)), (16, (4, 4))],
)
def test_ctranslate2_on_the_cpu_runs_one_call_per_core_up_to_four(cores, expected):
    assert decode_parallelism("ct2", "cpu", 0, 0, cores) == expected


def test_a_gpu_and_the_torch_backend_keep_one_call_at_a_time():
    assert decode_parallelism("ct2", "cuda", 0, 0, 16) == (1, 0)
    assert decode_parallelism("torch", "cpu", 0, 0, 16) == (1, 0)


def test_what_the_user_sets_wins():
    assert decode_parallelism("ct2", "cpu", 1, 0, 2) == (1, 2)  # one call, all cores
    assert decode_parallelism("ct2", "cpu", 3, 2, 2) == (3, 2)
    assert decode_parallelism("ct2", "cpu", 0, 2, 8) == (4, 2)


def test_settings_carry_resolved_values(monkeypatch):
    monkeypatch.setenv("STREAMSCRIBE_DECODE_WORKERS", "1")
    monkeypatch.setenv("STREAMSCRIBE_CPU_THREADS", "1")
    s = Settings()
    assert (s.decode_workers, s.cpu_threads) == (1, 1)
    monkeypatch.delenv("STREAMSCRIBE_DECODE_WORKERS")
    monkeypatch.delenv("STREAMSCRIBE_CPU_THREADS")
    s = Settings()
    assert s.decode_workers >= 1 and s.cpu_threads >= 1
    assert s.model_copy(update={"model": "base"}).decode_workers == s.decode_workers


def test_ctranslate2_on_the_cpu_decodes_one_request_per_call_unless_told_otherwise():
    assert decode_batch_size("ct2", "cpu", 0) == 1
    assert decode_batch_size("ct2", "cuda", 0) == 8
    assert decode_batch_size("torch", "cpu", 0) == 8
    assert decode_batch_size("ct2", "cpu", 4) == 4


def test_settings_carry_the_resolved_batch_size(monkeypatch):
    monkeypatch.delenv("STREAMSCRIBE_MAX_BATCH_SIZE", raising=False)
    assert Settings(backend="ct2", device="cpu").max_batch_size == 1
    assert Settings(backend="ct2", device="cuda").max_batch_size == 8
    monkeypatch.setenv("STREAMSCRIBE_MAX_BATCH_SIZE", "3")
    assert Settings(backend="ct2", device="cpu").max_batch_size == 3

"""numpy's BLAS runs on one thread once a model is loaded (engine/host_threads.py): its idle
threads busy-waited beside the decoders and doubled a partial's CPU time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, threadpoolctl
from streamscribe.config import Settings
from streamscribe.engine.backends import load_local_transcriber

def blas():
    return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]

import numpy
before = blas()
model = load_local_transcriber(Settings())
print(json.dumps({"before": before, "after": blas()}))
"""


def probe(**env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="BLAS already has one thread on one core")
def test_loading_a_model_leaves_numpy_blas_one_thread() -> None:
    threads = probe()
    assert threads["before"] and all(n >= 2 for n in threads["before"])
    assert threads["after"] == [1] * len(threads["before"])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="BLAS already has one thread on one core")
def test_blas_threads_zero_leaves_blas_as_it_was_and_two_allows_two() -> None:
    untouched = probe(STREAMSCRIBE_BLAS_THREADS="0")
    assert untouched["after"] == untouched["before"]
    assert probe(STREAMSCRIBE_BLAS_THREADS="2")["after"] == [2] * len(untouched["before"])

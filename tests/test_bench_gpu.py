"""bench/gpu.py end to end on a tiny random model on the CPU: both sides of every workload are timed and
every estimator is fitted, so a GPU run of the real shape meets no untried path."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfknow.confidence import ESTIMATORS
from selfknow.models import ALIASES

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {
    "choice-prefill", "oe-decode", "oe-decode-static", "probe-features", "ct-training", "sft-training",
    "sft-training-checkpointed",
}  # fmt: skip


def run_bench(out: Path) -> dict:
    """The real command line in a fresh process: CUDA hidden (the Trainer would otherwise move a CPU model
    to a visible GPU) and one thread (tiny matmuls on two busy cores only wait for each other)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "bench/gpu.py", "--shape", "tiny", "--device", "cpu", "--dtype", "float32"]
    done = subprocess.run([*command, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| ct-training |" in done.stdout
    return json.loads(out.read_text())


def test_tiny_cpu_run_times_both_sides_of_every_workload_and_fits_every_estimator(tmp_path):
    if importlib.util.find_spec(ALIASES["smollm2"].package) is None:
        pytest.skip("the embedded model package is not installed (make setup installs it)")
    summary = run_bench(tmp_path / "gpu.json")

    assert set(summary["workloads"]) == WORKLOADS
    for name, row in summary["workloads"].items():
        for side in ("selfknow", "plain"):
            rate = row[side].get("tokens_per_s")
            assert rate is not None and math.isfinite(rate) and rate > 0, (name, side, row[side])
        assert math.isfinite(row["plain_over_selfknow"]) and row["selfknow_over_floor"] > 0, (name, row)
    prefill = summary["workloads"]["choice-prefill"]
    assert 0 < prefill["selfknow"]["computed_tokens"] <= prefill["tokens"]
    for name in ("oe-decode", "oe-decode-static"):  # EOS is unreachable: every row decodes all 8 tokens
        row = summary["workloads"][name]
        assert row["selfknow"]["decoded_tokens"] == row["plain"]["decoded_tokens"] == row["tokens"] == 8 * 8
        assert row["selfknow"]["ms_per_step"] > 0 and row["floor_ms_per_step"] > 0

    statuses = {name: row["status"] for name, row in summary["estimators"].items()}
    assert statuses == {name: "ok" for name in ESTIMATORS if name != "encoder"}
    assert summary["matmul_peak_tflops"] > 0 and summary["bandwidth_gb_per_s"] > 0
    assert summary["parameters"]["body"] > 0 and summary["versions"]["torch"] == torch.__version__
    assert summary["command"] == "python bench/gpu.py --shape tiny --device cpu --dtype float32 --out " + str(
        tmp_path / "gpu.json"
    )

"""bench/training_memory.py on a tiny model: every variant trains in its own process and reports its numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_variant_reports_memory_and_rate(tiny_llama_dir, tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "bench/training_memory.py", "-m", str(tiny_llama_dir), "--device", "cpu"]
    command += ["--batch", "2", "--length", "16", "--steps", "2", "--out", str(tmp_path / "memory.json")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "memory.json").read_text())
    assert [r["variant"] for r in summary["results"]] == ["plain", "selfknow", "selfknow+checkpointing"]
    for result in summary["results"]:
        assert "error" not in result, result
        assert result["peak_added_gb"] >= 0 and result["tokens_per_second"] > 0
    assert summary["settings"]["length"] == 16

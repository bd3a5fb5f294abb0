"""Quirky addition with more distinct equations at the same fine-tuning compute: 16,000 fine-tuning equations
seen once (about 15,900 label-balanced examples) instead of 4,000 seen four times (`BENCHMARKS.md`, latent
knowledge). Runs the data and train stages only and prints the quirky model's agreement on the test split.

    .venv/bin/python bench/elk_fresh_data.py runs/elk-add2-fresh
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from selfknow.elk.run import ElkConfig, ElkRun


def main(run_dir: str) -> None:
    config = ElkConfig(
        statements=20000,
        fractions=(0.8, 0.1, 0.1),
        max_digits=2,
        training={"top_layers": 16, "epochs": 1, "lr": 2e-3, "batch_size": 16, "dropout": 0.0},
    )
    start = time.perf_counter()
    ElkRun(run_dir, config).run(["data", "train"])
    training = json.loads(Path(run_dir, "training.json").read_text())
    print(json.dumps({"seconds": round(time.perf_counter() - start), **training}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/elk-add2-fresh")

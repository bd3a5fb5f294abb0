"""Paired differences between two estimators of one `selfknow tune` run, in family and out of family.

    .venv/bin/python bench/estimator_difference.py runs/mmlu-ref ct+ts choice-logits query

Separate intervals that overlap can still hide a real difference: both estimators score the same answers,
so the test resamples (seeded, 2,000 times) carry the same questions for both. This prints, for the first
estimator against each of the others, AUROC, Brier and ECE differences with their 95% paired-bootstrap
intervals, on the run's test questions of the families it was fitted on and of those it held out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from selfknow.confidence import labels
from selfknow.data.records import read_records
from selfknow.metrics import auroc, bootstrap_interval, brier, ece
from selfknow.pipeline import RunConfig, held_out

METRICS = {"AUROC": auroc, "Brier": brier, "ECE": ece}


def differences(first: np.ndarray, other: np.ndarray, correct: np.ndarray, n: int) -> dict[str, list[float]]:
    rows = {}
    for name, metric in METRICS.items():

        def gap(a, b, y, metric=metric):
            return metric(a, y) - metric(b, y)

        low, high = bootstrap_interval(gap, first, other, correct, n=n, seed=0)
        rows[name] = [round(gap(first, other, correct), 4), round(low, 4), round(high, 4)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("first")
    parser.add_argument("others", nargs="+")
    parser.add_argument("--boot", type=int, default=2000)
    args = parser.parse_args()
    config = RunConfig.from_file(args.run / "config.json")
    test = read_records(args.run / "scores" / "test.jsonl")
    sides = {"in family": [r for r in test if not held_out(r, config.hold_out)]}
    if config.hold_out:
        sides["out of family"] = [r for r in test if held_out(r, config.hold_out)]
    summary = {}
    for side, records in sides.items():
        correct = labels(records)
        first = np.array([r.confidences[args.first] for r in records])
        for other in args.others:
            scores = np.array([r.confidences[other] for r in records])
            summary[f"{side}: {args.first} − {other}"] = differences(first, scores, correct, args.boot)
    print("| questions | difference | AUROC | Brier | ECE |\n|---|---|---|---|---|")
    for key, rows in summary.items():
        side, pair = key.split(": ")
        cells = [f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]" for v, lo, hi in rows.values()]
        print(f"| {side} ({len(sides[side])}) | {pair} | " + " | ".join(cells) + " |")
    out = args.run / "evaluation" / "differences.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

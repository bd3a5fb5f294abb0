"""Paired differences between two estimators of one `selfknow tune` run, in family and out of family.

    .venv/bin/python bench/estimator_difference.py runs/mmlu-ref ct+ts choice-logits query
    .venv/bin/python bench/estimator_difference.py runs/gemma-by-smollm2 probe+platt runs/gemma-own:probe+platt

Separate intervals that overlap can still hide a real difference: both estimators score the same answers,
so the test resamples (seeded, 2,000 times) carry the same questions for both. This prints, for the first
estimator against each of the others, AUROC, within-dataset AUROC, Brier and ECE differences with their 95%
paired-bootstrap intervals, on the run's test questions of the families it was fitted on and of those it
held out. An other written RUN:ESTIMATOR is read from another run that scored the same answers (a
cross-model run against the answering model's own, say); its test records must match question by question.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from selfknow.confidence import labels
from selfknow.data.records import read_records
from selfknow.errors import DataError
from selfknow.metrics import auroc, bootstrap_interval, brier, ece, within_group_auroc
from selfknow.pipeline import RunConfig, held_out

METRICS = {
    "AUROC": lambda p, y, g: auroc(p, y),
    "within-dataset AUROC": within_group_auroc,
    "Brier": lambda p, y, g: brier(p, y),
    "ECE": lambda p, y, g: ece(p, y),
}


def differences(
    first: np.ndarray, other: np.ndarray, correct: np.ndarray, groups: np.ndarray, n: int
) -> dict[str, list[float]]:
    rows = {}
    for name, metric in METRICS.items():

        def gap(a, b, y, g, metric=metric):
            return metric(a, y, g) - metric(b, y, g)

        low, high = bootstrap_interval(gap, first, other, correct, groups, n=n, seed=0)
        rows[name] = [round(gap(first, other, correct, groups), 4), round(low, 4), round(high, 4)]
    return rows


def confidences(run: Path, own: list, spec: str) -> np.ndarray:
    """``spec`` (ESTIMATOR, or RUN:ESTIMATOR from another run over the same answers) on ``own``'s records."""
    if ":" not in spec:
        return np.array([r.confidences[spec] for r in own])
    other_run, name = spec.rsplit(":", 1)
    other = {r.id: r for r in read_records(Path(other_run) / "scores" / "test.jsonl")}
    if any(r.id not in other or other[r.id].correct != r.correct for r in own):
        raise DataError(f"{other_run}: its test records are not {run}'s answers (ids or grades differ)")
    return np.array([other[r.id].confidences[name] for r in own])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("first")
    parser.add_argument("others", nargs="+")
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="where the differences go (default: RUN/evaluation/differences.json)")
    args = parser.parse_args()
    config = RunConfig.from_file(args.run / "config.json")
    test = read_records(args.run / "scores" / "test.jsonl")
    sides = {"in family": [r for r in test if not held_out(r, config.hold_out)]}
    if config.hold_out:
        sides["out of family"] = [r for r in test if held_out(r, config.hold_out)]
    summary = {}
    for side, records in sides.items():
        correct, groups = labels(records), np.array([r.dataset for r in records])
        first = confidences(args.run, records, args.first)
        for other in args.others:
            scores = confidences(args.run, records, other)
            summary[f"{side}: {args.first} − {other}"] = differences(first, scores, correct, groups, args.boot)
    print("| questions | difference | AUROC | within-dataset AUROC | Brier | ECE |\n|---|---|---|---|---|---|")
    for key, rows in summary.items():
        side, pair = key.split(": ")
        cells = [f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]" for v, lo, hi in rows.values()]
        print(f"| {side} ({len(sides[side])}) | {pair} | " + " | ".join(cells) + " |")
    out = args.out or args.run / "evaluation" / "differences.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

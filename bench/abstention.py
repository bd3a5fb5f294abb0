"""Abstention at several target risks on a calibration run: thresholds chosen on validation, checked on test.

    .venv/bin/python bench/abstention.py --run runs/bench      # writes bench/results/abstention.json

Reads only the run's stored scores (seconds). Each risk is ``Run.abstention_report``, the same as
``selfknow evaluate RUN --risk R``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfknow.pipeline import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/bench"))
    parser.add_argument("--risks", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/abstention.json"))
    args = parser.parse_args()
    run = Run(args.run, progress=False)
    results = {str(risk): run.abstention_report(risk, args.delta) for risk in args.risks}
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

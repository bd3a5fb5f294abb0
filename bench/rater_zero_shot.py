"""Can a model rate instruction-answer pairs before any tuning? The self-curation rubric, asked of the base model
(no adapter) on the backtranslation evaluation's labelled curation set: 20% held-out human pairs, 80% negatives
made from them (shuffled, truncated, boilerplate). Reports how often the reply ends with a parsable
"Score: n", the expected score's AUROC against the labels, and the no-judgement controls beside them.

It uses a backtranslation run folder (only its data stage is run), so a full run in the same folder later
reuses the data:

    .venv/bin/python bench/rater_zero_shot.py runs/bt-ref -m qwen2.5-coder-1.5b
    .venv/bin/python bench/rater_zero_shot.py runs/bt-small               # an existing run, its own model
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from selfknow.backtranslate.curate import rate
from selfknow.backtranslate.data import LICENCES
from selfknow.backtranslate.evaluation import curation_controls, curation_scores, labelled_pairs
from selfknow.backtranslate.run import BacktranslateConfig, BacktranslateRun


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("-m", "--model", help="for a new run folder: the model (default: the embedded one)")
    parser.add_argument("--labelled", type=int, help="for a new run folder: labelled pairs (default 250)")
    args = parser.parse_args()
    settings = {"model": args.model, "labelled": args.labelled}
    new = not (args.run_dir / "config.json").exists()
    config = BacktranslateConfig(**{k: v for k, v in settings.items() if v is not None}) if new else None
    run = BacktranslateRun(args.run_dir, config)
    run.run(["data"])
    config = run.config
    boilerplate = [text for text in LICENCES.values() if text]
    labelled = labelled_pairs(run.heldout(), config.labelled, boilerplate, config.seed)
    model, tokenizer = run.base()
    start = time.perf_counter()
    ratings, _ = rate(
        model,
        tokenizer,
        [(i, x, y) for i, x, y, _, _ in labelled],
        run.dir / "answers" / "rating-zero-shot.jsonl",
        max_new_tokens=config.rating_tokens,
    )
    good = {row[0]: row[3] for row in labelled}
    summary = {
        "model": config.model,
        "seconds": round(time.perf_counter() - start, 1),
        "base model, zero-shot": curation_scores(ratings, good, config.bootstrap, config.seed),
        "controls (AUROC)": curation_controls(labelled, config.bootstrap, config.seed),
        "replies": [{"id": r.id, "expected": r.expected, "parsed": r.parsed, "reply": r.reply} for r in ratings[:5]],
    }
    (run.dir / "rater-zero-shot.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "replies"}, indent=2, default=float))


if __name__ == "__main__":
    main()

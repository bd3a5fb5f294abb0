"""Can a model rate instruction-answer pairs before any tuning? The self-curation rubric, asked of the base model
(no adapter) on the backtranslation evaluation's labelled curation set: 20% held-out human pairs, 80% negatives
made from them (shuffled, truncated, boilerplate). Reports how often the reply ends with a parsable
"Score: n", the expected score's AUROC against the labels, and the no-judgement controls beside them.

It uses a backtranslation run folder (only its data stage is run), so a full run in the same folder later
reuses the data:

    .venv/bin/python bench/rater_zero_shot.py runs/bt-ref -m qwen2.5-coder-1.5b
    .venv/bin/python bench/rater_zero_shot.py runs/bt-small               # an existing run, its own model
    .venv/bin/python bench/rater_zero_shot.py runs/bt-ref --so-far         # the pairs rated so far, no model
    .venv/bin/python bench/rater_zero_shot.py runs/bt-ref --rating-prompt score-first --rating-tokens 16

The run's own rating prompt and budget are the default; another prompt is measured beside it in its own files
(rater-zero-shot-<prompt>.json), the run's settings untouched.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from selfknow.backtranslate.curate import Rating, rate, rating_of
from selfknow.backtranslate.data import LICENCES
from selfknow.backtranslate.evaluation import curation_controls, curation_scores, labelled_pairs
from selfknow.backtranslate.prompts import RATING_PROMPTS
from selfknow.backtranslate.run import BacktranslateConfig, BacktranslateRun
from selfknow.metrics import bootstrap_interval, score_auroc


def journal_ratings(journal: Path) -> list[Rating]:
    """The ratings a (possibly unfinished) rating journal holds, read as :func:`rate` reads them."""
    paths = sorted(journal.parent.glob(journal.name + "*"))
    rows = [json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()]
    # the journal's batch markers carry no id
    return [rating_of(row["id"], row.get("output"), row["scores"]["cue_logprobs"]) for row in rows if "id" in row]


def against_length(ratings: list[Rating], labelled: list, bootstrap: int, seed: int) -> dict[str, float]:
    """AUROC of the expected score minus the answer-length control's, with a paired bootstrap interval (the same
    resamples for both)."""
    by_id = {r.id: r.expected for r in ratings}
    expected = np.array([by_id[row[0]] for row in labelled])
    length = np.array([len(row[2]) for row in labelled], dtype=float)
    labels = np.array([row[3] for row in labelled])

    def difference(score, control, hit):
        return score_auroc(score, hit) - score_auroc(control, hit)

    low, high = bootstrap_interval(difference, expected, length, labels, n=bootstrap, seed=seed)
    return {"value": difference(expected, length, labels), "low": low, "high": high}


def by_negative_kind(ratings: list[Rating], labelled: list) -> dict[str, dict[str, float]]:
    """AUROC of the expected score and of the answer-length control on the positives against one kind of
    negative at a time (shuffled, truncated, boilerplate): which failures the rater sees."""
    by_id = {r.id: r.expected for r in ratings}
    good = [row for row in labelled if row[3]]
    out = {}
    for kind in sorted({row[4] for row in labelled if not row[3]}):
        rows = good + [row for row in labelled if row[4] == kind and not row[3]]
        labels = np.array([row[3] for row in rows])
        out[kind] = {
            "negatives": len(rows) - len(good),
            "expected score": score_auroc(np.array([by_id[row[0]] for row in rows]), labels),
            "answer length": score_auroc(np.array([len(row[2]) for row in rows], dtype=float), labels),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("-m", "--model", help="for a new run folder: the model (default: the embedded one)")
    parser.add_argument("--labelled", type=int, help="for a new run folder: labelled pairs (default 250)")
    parser.add_argument("--so-far", action="store_true", help="score the pairs in the rating journal, no model")
    parser.add_argument("--rating-prompt", choices=list(RATING_PROMPTS), help="default: the run's")
    parser.add_argument("--rating-tokens", type=int, help="most tokens of each reply (default: the run's)")
    args = parser.parse_args()
    settings = {"model": args.model, "labelled": args.labelled}
    new = not (args.run_dir / "config.json").exists()
    config = BacktranslateConfig(**{k: v for k, v in settings.items() if v is not None}) if new else None
    run = BacktranslateRun(args.run_dir, config)
    run.run(["data"])
    config = run.config
    boilerplate = [text for text in LICENCES.values() if text]
    labelled = labelled_pairs(run.heldout(), config.labelled, boilerplate, config.seed)
    prompt = args.rating_prompt or config.rating_prompt
    tokens = args.rating_tokens or config.rating_tokens
    name = "rating-zero-shot" if prompt == config.rating_prompt else f"rating-zero-shot-{prompt}"
    journal = run.dir / "answers" / f"{name}.jsonl"
    start = time.perf_counter()
    if args.so_far:  # a stopped rating: the pairs its journal holds (rated in length order, not at random)
        ratings = journal_ratings(journal)
        labelled = [row for row in labelled if row[0] in {r.id for r in ratings}]
    else:
        model, tokenizer = run.base()
        pairs = [(i, x, y) for i, x, y, _, _ in labelled]
        ratings, _ = rate(model, tokenizer, pairs, journal, max_new_tokens=tokens, prompt=prompt)
    good = {row[0]: row[3] for row in labelled}
    summary = {
        "model": config.model,
        "rating prompt": prompt,
        "rating tokens": tokens,
        "seconds": None if args.so_far else round(time.perf_counter() - start, 1),  # rating time, not scoring
        "base model, zero-shot": curation_scores(ratings, good, config.bootstrap, config.seed),
        "controls (AUROC)": curation_controls(labelled, config.bootstrap, config.seed),
        "AUROC by kind of negative": by_negative_kind(ratings, labelled),
        "expected score minus answer length (AUROC, paired)": against_length(
            ratings, labelled, config.bootstrap, config.seed
        ),
        "replies": [{"id": r.id, "expected": r.expected, "parsed": r.parsed, "reply": r.reply} for r in ratings[:5]],
    }
    (run.dir / f"{name.replace('rating', 'rater')}.json").write_text(
        json.dumps(summary, indent=2, default=float) + "\n"
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "replies"}, indent=2, default=float))


if __name__ == "__main__":
    main()

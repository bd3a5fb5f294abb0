"""What gated retrieval could reach at 75% retrieval on a finished Self-RAG run, from its cached outputs only.

At a retrieval rate of 75% the quarter of questions kept closed-book are answered from the model's memory, so
accuracy = (closed-book hits among the skipped + retrieved hits) / n. This prints, for the test questions:
the oracle gate (skip exactly the questions the base model knows), each real gate (the calibrated P(correct),
p([Retrieval]), and a logistic combination of both fit on the validation questions), with the precision of
its skipped quarter (how many of them the base model really answers), and the precision the 2-point target
needs.

The same again with the retrieved questions answered from the top-1 passage, for when critique ranking
picks worse candidates than the retriever's first passage.

A run with only its closed-book stage done (no Self-RAG model yet) gets the part that needs no retrieval: for
every calibrated estimator, how many of the quarter it is most confident about the base model answers right,
with a bootstrap interval. With always-retrieve accuracy r, the target (r − 0.02 at 75% retrieval) needs that
share to be at least r − 0.08, so a share of 0.92 or more meets it whatever retrieval reaches:

    .venv/bin/python bench/rag_gate_bound.py runs/rag
    .venv/bin/python bench/rag_gate_bound.py runs/rag-ref        # closed-book stage only
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn.linear_model import LogisticRegression

from selfknow.data.records import read_records
from selfknow.metrics import bootstrap_interval, score_auroc
from selfknow.rag.evaluation import outcome_arrays
from selfknow.rag.infer import read_results
from selfknow.rag.run import RagRun

RATE = 0.75


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _features(a: dict[str, np.ndarray]) -> np.ndarray:
    return np.c_[_logit(a["confidence"]), _logit(a["p_ret"])]


def _skip_count(n: int) -> int:
    """How many of ``n`` questions a 75% retrieval rate answers closed-book."""
    return n - int(round(RATE * n))


def _skipped(score: np.ndarray) -> np.ndarray:
    """The questions a 75% retrieval rate keeps closed-book: the quarter with the highest score."""
    return np.argsort(-score, kind="stable")[: _skip_count(len(score))]


def _top_quarter_right(score: np.ndarray, known: np.ndarray) -> float:
    """Closed-book accuracy on the skipped quarter; the bootstrap recomputes the quarter in each resample,
    so the interval includes which questions it holds."""
    return float(known[_skipped(score)].mean())


def _gain(score: np.ndarray, known: np.ndarray, retrieved: np.ndarray) -> float:
    """Accuracy at 75% retrieval minus always retrieving, the skipped quarter chosen again in each resample."""
    skipped = _skipped(score)
    return float((known[skipped].astype(float) - retrieved[skipped]).sum() / len(known))


def closed_book_only(run: RagRun) -> None:
    """The skipped quarter's closed-book precision under each calibrated estimator, before any retrieval."""
    scored = read_records(run.calibration.scores("test"))
    known = np.array([bool(r.correct) for r in scored])
    n = len(known)
    skip = _skip_count(n)
    print(f"{n} test questions, base closed-book accuracy {known.mean():.3f}; no Self-RAG answers yet")
    print(f"the {skip} most confident skip retrieval; the target needs them right ≥ r − 0.08 (r: always-retrieve)")
    print("| gate | AUROC for closed-book hits | skipped quarter right closed-book [95% CI] |")
    print("|---|---|---|")
    print(f"| oracle | 1.000 | {min(known.sum(), skip) / skip:.3f} |")
    for name in sorted(scored[0].confidences):
        score = np.array([r.confidences[name] for r in scored])
        low, high = bootstrap_interval(_top_quarter_right, score, known, seed=run.config.seed)
        auroc = score_auroc(score, known.astype(int))
        print(f"| {name} | {auroc:.3f} | {_top_quarter_right(score, known):.3f} [{low:.3f}, {high:.3f}] |")


def gate_table(validation: dict[str, np.ndarray], test: dict[str, np.ndarray], retrieving: str) -> None:
    """Each gate at 75% retrieval, answering the retrieved questions with ``retrieving`` ("topk": Self-RAG's
    critique-ranked candidate, its always-retrieve mode; "top1": the candidate from the best-ranked passage)."""
    known, retrieved = test["base"], test[retrieving]
    n = len(known)
    skip = _skip_count(n)
    target = retrieved.mean() - 0.02
    # accuracy with a skipped set S: (Σ_S known + Σ_notS retrieved) / n; for the target, the skipped quarter's
    # closed-book precision must be at least (target·n − Σ_notS retrieved) / |S|, taking Σ_notS ≈ (n − |S|)·mean.
    needed = (target * n - (n - skip) * retrieved.mean()) / skip
    combined = LogisticRegression().fit(_features(validation), validation["base"])
    gates = {
        "oracle (skips questions the base model knows)": known.astype(float) * 2 - retrieved.astype(float),
        "calibrated P(correct)": test["confidence"],
        "1 - p([Retrieval])": 1 - test["p_ret"],
        "both, logistic fit on validation": combined.predict_proba(_features(test))[:, 1],
    }
    label = {"topk": "critique-ranked top-k (Self-RAG's always-retrieve)", "top1": "the top-1 passage's answer"}
    print(f"\nretrieving with {label[retrieving]}: {n} test questions, base closed-book {known.mean():.3f}, "
          f"always retrieving {retrieved.mean():.3f}")  # fmt: skip
    print(f"target at {RATE:.0%} retrieval: ≥ {target:.3f}, i.e. skipped-quarter precision ≥ {needed:.2f}")
    print("| gate | AUROC for closed-book hits | accuracy at 75% retrieval | minus always retrieving, paired [95% CI] "
          "| precision of the skipped quarter |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name, score in gates.items():
        gain = _gain(score, known, retrieved)
        low, high = bootstrap_interval(_gain, score, known, retrieved, seed=0)
        auroc = score_auroc(score, known.astype(int)) if "oracle" not in name else 1.0
        print(f"| {name} | {auroc:.3f} | {retrieved.mean() + gain:.3f} | {gain:+.3f} [{low:+.3f}, {high:+.3f}] "
              f"| {_top_quarter_right(score, known):.3f} |")  # fmt: skip


def main(directory: str) -> None:
    run = RagRun(directory, progress=False)
    if not run.results_path("test").exists():
        closed_book_only(run)
        return
    arrays = {s: outcome_arrays(read_results(run.results_path(s)), run.base_answers(s)) for s in ("validation", "test")}
    for retrieving in ("topk", "top1"):
        gate_table(arrays["validation"], arrays["test"], retrieving)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/rag")

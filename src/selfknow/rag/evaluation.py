"""Self-RAG results, computed from the cached per-question outputs: every mode, every δ and τ, the
reflection tokens' agreement with the rule labels, and how well p([Retrieval]) predicts closed-book errors.

Modes (accuracy is the foundation's grader on the answer text: gold or alias contained, echoes of the
question not counted, as PopQA's substring match):

- ``closed-book``: the Self-RAG model after ``[No Retrieval]``; ``base closed-book``: the base model's own
  closed-book answer (the one the calibrated confidence is about);
- ``always top-1``: the candidate from the best-ranked passage; ``always top-k``: the candidate with the
  highest critique score (spec §3.2) among the k passages;
- ``adaptive (δ)``: top-k when p([Retrieval]) / (p([Retrieval]) + p([No Retrieval])) > δ, else closed-book;
- ``confidence (τ)``: top-k when the calibrated P(correct) of the base model's closed-book answer < τ, else
  that answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from selfknow.metrics import accuracy, auroc, bootstrap_interval
from selfknow.rag.critique import final_score
from selfknow.rag.labels import is_relevant, support

DELTAS = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))


def retrieve_probability(row: dict) -> float:
    total = row["p_retrieval"] + row["p_no_retrieval"]
    return row["p_retrieval"] / total if total > 0 else 0.0


def candidate_score(candidate: dict, weights: dict[str, float] | None = None) -> float:
    """The critique score of one candidate (spec §3.2): exp(mean log-prob) + weighted IsRel, IsSup, IsUse."""
    w = {"w_rel": 1.0, "w_sup": 1.0, "w_use": 0.5, **(weights or {})}
    c = candidate
    return final_score(c["seq_logprob_mean"], c["relevance"], c["support"], c["utility"], **w)


def best_candidate(row: dict, weights: dict[str, float] | None = None) -> dict:
    """The candidate with the highest critique score."""
    return max(row["candidates"], key=lambda c: candidate_score(c, weights))


def gated(retrieve: np.ndarray, when_retrieving: np.ndarray, otherwise: np.ndarray) -> np.ndarray:
    return np.where(retrieve, when_retrieving, otherwise)


def _interval(correct: np.ndarray, bootstrap: int, seed: int) -> dict[str, float]:
    low, high = bootstrap_interval(accuracy, correct, n=bootstrap, seed=seed)
    return {"value": accuracy(correct), "low": low, "high": high}


def _curve(score: np.ndarray, thresholds: Sequence[float], topk: np.ndarray, other: np.ndarray, above: bool):
    """(retrieval rate, accuracy) per threshold; ``above``: retrieve when score > t, else when score < t."""
    points = []
    for t in thresholds:
        retrieve = score > t if above else score < t
        points.append(
            {
                "threshold": float(t),
                "rate": float(retrieve.mean()),
                "accuracy": float(gated(retrieve, topk, other).mean()),
            }
        )
    return points


def area(points: Sequence[dict], start: tuple[float, float], end: tuple[float, float]) -> float:
    """Area under accuracy against retrieval rate over [0, 1] (trapezoids; the curve is closed with the
    no-retrieval and always-retrieve points, and at each rate the best accuracy reached counts)."""
    best: dict[float, float] = {start[0]: start[1], end[0]: end[1]}
    for p in points:
        best[p["rate"]] = max(best.get(p["rate"], -1.0), p["accuracy"])
    rates = sorted(best)
    return float(sum((b - a) * (best[a] + best[b]) / 2 for a, b in zip(rates, rates[1:], strict=False)))


def evaluate_results(
    rows: Sequence[dict],
    base: dict[str, dict],
    *,
    delta: float = 0.2,
    tau: float = 0.5,
    bootstrap: int = 1000,
    seed: int = 0,
    agreement: dict[str, float] | None = None,
) -> dict:
    """Every number of the report. ``base`` maps question id to the base model's closed-book answer:
    ``{"correct": bool, "confidence": float}`` (the calibrated P(correct))."""
    missing = [r["id"] for r in rows if r["id"] not in base]
    if missing:
        raise ValueError(f"{len(missing)} questions have no base closed-book answer, e.g. {missing[0]}")
    closed = np.array([r["closed_book"]["correct"] for r in rows], dtype=bool)
    base_correct = np.array([base[r["id"]]["correct"] for r in rows], dtype=bool)
    confidence = np.array([base[r["id"]]["confidence"] for r in rows], dtype=float)
    top1 = np.array([r["candidates"][0]["correct"] for r in rows], dtype=bool)
    topk = np.array([best_candidate(r)["correct"] for r in rows], dtype=bool)
    p_ret = np.array([retrieve_probability(r) for r in rows])
    adaptive = p_ret > delta
    by_confidence = confidence < tau
    modes = {
        "closed-book": (closed, np.zeros(len(rows), bool)),
        "base closed-book": (base_correct, np.zeros(len(rows), bool)),
        "always top-1": (top1, np.ones(len(rows), bool)),
        "always top-k (critique-ranked)": (topk, np.ones(len(rows), bool)),
        f"adaptive (δ = {delta})": (gated(adaptive, topk, closed), adaptive),
        f"confidence-gated (τ = {tau})": (gated(by_confidence, topk, base_correct), by_confidence),
    }
    taus = np.unique(np.concatenate([np.quantile(confidence, np.linspace(0, 1, 21)), [1.0 + 1e-9]]))
    delta_curve = _curve(p_ret, DELTAS, topk, closed, above=True)
    tau_curve = _curve(confidence, taus, topk, base_correct, above=False)
    always = float(topk.mean())
    diff = topk.astype(float) - top1.astype(float)
    low, high = bootstrap_interval(np.mean, diff, n=bootstrap, seed=seed)
    return {
        "questions": len(rows),
        "modes": {
            name: {"accuracy": _interval(correct, bootstrap, seed), "retrieval_rate": float(retrieve.mean())}
            for name, (correct, retrieve) in modes.items()
        },
        "critique_minus_top1": {"value": float(diff.mean()), "low": low, "high": high},
        "delta_curve": delta_curve,
        "tau_curve": tau_curve,
        "area": {
            "adaptive (δ sweep)": area(delta_curve, (0.0, float(closed.mean())), (1.0, always)),
            "confidence-gated (τ sweep)": area(tau_curve, (0.0, float(base_correct.mean())), (1.0, always)),
        },
        "predicting closed-book errors (AUROC)": {
            "p([Retrieval]) vs base model's errors": auroc(p_ret, ~base_correct),
            "calibrated 1 − P(correct) vs base model's errors": auroc(1 - confidence, ~base_correct),
            "p([Retrieval]) vs Self-RAG model's own closed-book errors": auroc(p_ret, ~closed),
        },
        "reflection agreement with rule labels": agreement or {},
    }


def reflection_agreement(rows: Sequence[dict], records: dict, passages: dict) -> dict[str, float]:
    """How often the model's IsRel (p([Relevant]) > p([Irrelevant]) after the passage) and its generated IsSup
    token agree with the rule labels (:mod:`selfknow.rag.labels`) for its own candidates."""
    rel, sup, sup_missing = [], [], 0
    for row in rows:
        record = records[row["id"]]
        for candidate in row["candidates"]:
            passage = passages[candidate["passage"]]
            rel.append((candidate["relevance"] > 0.5) == is_relevant(record, passage))
            if candidate["issup"] is None:
                sup_missing += 1
                continue
            sup.append(candidate["issup"] == support(record, passage, candidate["correct"]))
    total = len(rel)
    return {
        "IsRel": float(np.mean(rel)) if rel else float("nan"),
        "IsSup": float(np.mean(sup)) if sup else float("nan"),
        "IsSup generated (fraction of candidates)": (total - sup_missing) / total if total else float("nan"),
        "candidates": total,
    }

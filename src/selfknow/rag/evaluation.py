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

from selfknow.errors import DataError
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


def outcome_arrays(rows: Sequence[dict], base: dict[str, dict]) -> dict[str, np.ndarray]:
    """Per question: each mode's correctness, p([Retrieval]) normalised, and the calibrated P(correct) of the
    base model's closed-book answer. ``base`` maps question id to ``{"correct": bool, "confidence": float}``."""
    missing = [r["id"] for r in rows if r["id"] not in base]
    if missing:
        raise DataError(f"{len(missing)} questions have no base closed-book answer, e.g. {missing[0]}")
    return {
        "closed": np.array([r["closed_book"]["correct"] for r in rows], dtype=bool),
        "base": np.array([base[r["id"]]["correct"] for r in rows], dtype=bool),
        "confidence": np.array([base[r["id"]]["confidence"] for r in rows], dtype=float),
        "top1": np.array([r["candidates"][0]["correct"] if r["candidates"] else False for r in rows], dtype=bool),
        "topk": np.array([best_candidate(r)["correct"] if r["candidates"] else False for r in rows], dtype=bool),
        "p_ret": np.array([retrieve_probability(r) for r in rows]),
    }


def _grid(scores: np.ndarray, fixed: Sequence[float] = ()) -> np.ndarray:
    """Thresholds that sweep the whole retrieval rate: the scores' 5% quantiles (p([Retrieval]) of a trained
    model often sits in a narrow band such as 0.97-1.0, where a fixed grid would not move the rate), any
    fixed values, and one just above the largest score."""
    quantiles = np.quantile(scores, np.linspace(0, 1, 21))
    return np.unique(np.concatenate([quantiles, np.asarray(fixed, dtype=float), [scores.max() + 1e-9]]))


def choose_thresholds(arrays: dict[str, np.ndarray], tolerance: float = 0.01) -> dict[str, float]:
    """The δ and τ that retrieve least while keeping accuracy within ``tolerance`` of always retrieving (top-k),
    chosen on validation outputs so the test split only measures them; the most accurate one if none is."""
    always = float(arrays["topk"].mean())

    def pick(points: list[dict]) -> float:
        good = [p for p in points if p["accuracy"] >= always - tolerance]
        best = (
            min(good, key=lambda p: (p["rate"], -p["accuracy"])) if good else max(points, key=lambda p: p["accuracy"])
        )
        return best["threshold"]

    a = arrays
    return {
        "delta": pick(_curve(a["p_ret"], _grid(a["p_ret"], DELTAS), a["topk"], a["closed"], above=True)),
        "tau": pick(_curve(a["confidence"], _grid(a["confidence"]), a["topk"], a["base"], above=False)),
    }


def evaluate_results(
    rows: Sequence[dict],
    base: dict[str, dict],
    *,
    delta: float = 0.2,
    tau: float = 0.5,
    chosen: dict[str, float] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    agreement: dict[str, float] | None = None,
) -> dict:
    """Every number of the report; ``chosen`` adds the δ and τ chosen on validation (:func:`choose_thresholds`)."""
    a = outcome_arrays(rows, base)
    closed, base_correct, confidence, top1, topk, p_ret = (
        a[k] for k in ("closed", "base", "confidence", "top1", "topk", "p_ret")
    )
    none, every = np.zeros(len(rows), bool), np.ones(len(rows), bool)
    modes = {
        "closed-book": (closed, none),
        "base closed-book": (base_correct, none),
        "always top-1": (top1, every),
        "always top-k (critique-ranked)": (topk, every),
        f"adaptive (δ = {delta})": (gated(p_ret > delta, topk, closed), p_ret > delta),
        f"confidence-gated (τ = {tau})": (gated(confidence < tau, topk, base_correct), confidence < tau),
    }
    if chosen:
        d, t = chosen["delta"], chosen["tau"]
        modes[f"adaptive (δ = {d:.4f}, chosen on validation)"] = (gated(p_ret > d, topk, closed), p_ret > d)
        by_confidence = confidence < t
        modes[f"confidence-gated (τ = {t:.3f}, chosen on validation)"] = (
            gated(by_confidence, topk, base_correct),
            by_confidence,
        )
    delta_curve = _curve(p_ret, _grid(p_ret, DELTAS), topk, closed, above=True)
    tau_curve = _curve(confidence, _grid(confidence), topk, base_correct, above=False)
    always = float(topk.mean())
    diff = topk.astype(float) - top1.astype(float)
    low, high = bootstrap_interval(np.mean, diff, n=bootstrap, seed=seed)
    return {
        "questions": len(rows),
        "modes": {
            name: {"accuracy": _interval(correct, bootstrap, seed), "retrieval_rate": float(retrieve.mean())}
            for name, (correct, retrieve) in modes.items()
        },
        "chosen on validation": chosen or {},
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

"""Self-RAG's evaluation from cached per-question outputs, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

from selfknow.errors import DataError
from selfknow.rag.evaluation import (
    area,
    best_candidate,
    choose_thresholds,
    evaluate_results,
    outcome_arrays,
    retrieve_probability,
)


def _candidate(correct: bool, relevance: float, support: float = 0.0, logprob: float = math.log(0.5)) -> dict:
    return {"correct": correct, "relevance": relevance, "support": support, "utility": 0.0, "seq_logprob_mean": logprob}


def _row(qid: str, p_ret: float, closed: bool, candidates: list[dict]) -> dict:
    return {
        "id": qid,
        "p_retrieval": p_ret,
        "p_no_retrieval": 1 - p_ret,
        "closed_book": {"correct": closed},
        "candidates": candidates,
    }


ROWS = [
    _row("a", 0.9, False, [_candidate(False, 0.1), _candidate(True, 0.9, 1.0)]),  # critique picks the 2nd
    _row("b", 0.1, True, [_candidate(True, 0.8, 1.0), _candidate(False, 0.2)]),
    _row("c", 0.6, False, [_candidate(True, 0.7, 0.5), _candidate(False, 0.6, 0.0)]),
    _row("d", 0.3, True, [_candidate(False, 0.9, 1.0), _candidate(True, 0.1)]),
]
BASE = {
    "a": {"correct": False, "confidence": 0.2},
    "b": {"correct": True, "confidence": 0.9},
    "c": {"correct": False, "confidence": 0.4},
    "d": {"correct": True, "confidence": 0.7},
}


def test_retrieve_probability_is_normalised_over_the_two_tokens():
    assert retrieve_probability({"p_retrieval": 0.02, "p_no_retrieval": 0.06}) == pytest.approx(0.25)
    assert retrieve_probability({"p_retrieval": 0.0, "p_no_retrieval": 0.0}) == 0.0


def test_critique_ranking_picks_the_best_scored_candidate():
    assert best_candidate(ROWS[0]) is ROWS[0]["candidates"][1]
    # w_rel 0 and w_sup 0: only the sequence score is left, and it ties, so the first candidate wins
    assert best_candidate(ROWS[0], {"w_rel": 0.0, "w_sup": 0.0}) is ROWS[0]["candidates"][0]


def test_modes_and_curves_from_cached_outputs():
    summary = evaluate_results(ROWS, BASE, delta=0.5, tau=0.5, bootstrap=20)
    modes = summary["modes"]
    assert modes["always top-1"]["accuracy"]["value"] == 0.5  # a wrong, b right, c right, d wrong
    assert modes["always top-k (critique-ranked)"]["accuracy"]["value"] == 0.75  # a, b, c right; d picks wrong
    assert modes["closed-book"]["accuracy"]["value"] == 0.5
    adaptive = modes["adaptive (δ = 0.5)"]  # retrieves a and c (right), keeps b and d closed-book (right)
    assert (adaptive["accuracy"]["value"], adaptive["retrieval_rate"]) == (1.0, 0.5)
    gated = modes["confidence-gated (τ = 0.5)"]  # retrieves a and c, keeps b and d's right base answers
    assert (gated["accuracy"]["value"], gated["retrieval_rate"]) == (1.0, 0.5)
    assert summary["critique_minus_top1"]["value"] == 0.25
    rates = {p["threshold"]: p["rate"] for p in summary["delta_curve"]}
    assert rates[0.0] == 1.0 and rates[0.5] == 0.5 and rates[0.95] == 0.0  # the δ sweep moves the rate
    errors = summary["predicting closed-book errors (AUROC)"]
    assert errors["p([Retrieval]) vs base model's errors"] == 1.0
    assert errors["calibrated 1 − P(correct) vs base model's errors"] == 1.0


def test_area_closes_the_curve_at_both_ends():
    # no retrieval 0.5, always 0.75, one point at rate 0.5 with accuracy 1.0: two trapezoids
    points = [{"rate": 0.5, "accuracy": 1.0}]
    assert area(points, (0.0, 0.5), (1.0, 0.75)) == pytest.approx(0.5 * (0.5 + 1.0) / 2 + 0.5 * (1.0 + 0.75) / 2)


def test_a_question_without_a_base_answer_is_an_error():
    with pytest.raises(DataError, match="no base closed-book answer"):
        evaluate_results(ROWS, {"a": BASE["a"]}, bootstrap=10)


def test_thresholds_chosen_on_validation_retrieve_least_within_tolerance():
    arrays = outcome_arrays(ROWS, BASE)  # always top-k: 0.75; retrieving only for "a" keeps 0.75 at rate 0.25
    chosen = choose_thresholds(arrays, tolerance=0.01)
    assert chosen["delta"] == 0.6  # p([Retrieval]) > 0.6 only for "a" (0.9); "c" has exactly 0.6
    assert [qid for qid, c in zip("abcd", arrays["confidence"], strict=True) if c < chosen["tau"]] == ["a"]
    summary = evaluate_results(ROWS, BASE, chosen=chosen, bootstrap=10)
    assert summary["modes"]["adaptive (δ = 0.6000, chosen on validation)"]["retrieval_rate"] == 0.25


def test_the_delta_sweep_moves_the_rate_when_p_retrieval_sits_in_a_narrow_band():
    rows = [{**row, "p_retrieval": 0.97 + 0.01 * i, "p_no_retrieval": 0.0} for i, row in enumerate(ROWS)]
    rows = [{**row, "p_no_retrieval": 1 - row["p_retrieval"]} for row in rows]
    rates = {p["rate"] for p in evaluate_results(rows, BASE, bootstrap=10)["delta_curve"]}
    assert {0.0, 0.25, 0.5, 0.75, 1.0} <= rates  # a fixed 0.05 grid would give only 1.0 and 0.0

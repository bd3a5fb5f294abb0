from __future__ import annotations

import json
import math

import numpy as np
import pytest

from selfknow.abstention import AbstentionThreshold, choose_threshold, selective_risk
from selfknow.errors import DataError


def test_guarantee_holds_without_needless_abstention():
    # c ~ U(0, 1), correct ~ Bernoulli(c): the true selective risk at λ is E[1 − c | c ≥ λ] = (1 − λ)/2,
    # which is ≤ α = 0.1 exactly when λ ≥ 0.8 (coverage 0.2).
    rng = np.random.default_rng(0)
    alpha, delta = 0.1, 0.1
    chosen = []
    for _ in range(200):
        conf = rng.uniform(size=2000)
        chosen.append(choose_threshold(conf, rng.uniform(size=2000) < conf, alpha, delta))
    thresholds = np.array([result.threshold for result in chosen])
    true_risk = np.where(np.isfinite(thresholds), (1 - thresholds) / 2, 0.0)
    assert np.mean(true_risk > alpha) <= delta + 0.05
    assert np.mean([result.coverage for result in chosen]) > 0.07  # oracle 0.2
    assert np.median(thresholds) < 0.9
    assert np.mean(np.isinf(thresholds)) < 0.3


def test_perfect_separation_answers_every_correct_record_and_no_wrong_one():
    conf = np.concatenate([np.linspace(0.6, 1.0, 700), np.linspace(0.0, 0.4, 300)])
    correct = np.concatenate([np.ones(700), np.zeros(300)])
    # α = 0.005: 700 right answers certify it, but 1 wrong in 701 does not (P(Binom(701, α) ≤ 1) ≈ 0.14 > δ).
    result = choose_threshold(conf, correct, target_risk=0.005)
    assert result.threshold == pytest.approx(0.6)
    assert result.coverage == pytest.approx(0.7)
    assert result.risk == 0.0
    assert result.risk_upper_bound <= 0.005
    assert result.n == 1000


def test_loose_target_answers_some_wrong_records_within_the_bound():
    conf = np.concatenate([np.linspace(0.6, 1.0, 700), np.linspace(0.0, 0.4, 300)])
    correct = np.concatenate([np.ones(700), np.zeros(300)])
    result = choose_threshold(conf, correct, target_risk=0.1)
    assert result.threshold < 0.6
    assert 0 < result.risk < result.risk_upper_bound <= 0.1
    assert result.coverage > 0.7


def test_impossible_target_abstains_always():
    conf = np.linspace(0.0, 1.0, 500)
    result = choose_threshold(conf, np.zeros(500, dtype=bool), target_risk=0.2)
    assert result.threshold == math.inf
    assert result.coverage == 0.0
    assert math.isnan(result.risk) and math.isnan(result.risk_upper_bound)
    assert not result.answers(conf).any()


def test_too_few_records_to_certify_abstains_always():
    # Even with no errors, 10 answers cannot show risk ≤ 0.1 at δ = 0.1: 0.9^10 ≈ 0.35 > δ.
    result = choose_threshold(np.linspace(0.5, 1.0, 10), np.ones(10), target_risk=0.1)
    assert result.threshold == math.inf


def test_answers_is_confidence_at_or_above_threshold():
    result = AbstentionThreshold(0.5, 0.1, 0.1, 0.5, 0.0, 0.05, 4)
    assert result.answers([0.2, 0.5, 0.7, 0.49]).tolist() == [False, True, True, False]


@pytest.mark.parametrize(
    ("confidence", "correct", "kwargs", "word"),
    [
        ([0.5], [1], {"target_risk": 0.0}, "target_risk"),
        ([0.5], [1], {"target_risk": 1.5}, "target_risk"),
        ([0.5], [1], {"target_risk": 0.1, "delta": 1.0}, "delta"),
        ([], [], {"target_risk": 0.1}, "empty"),
        ([0.5, 0.6], [1], {"target_risk": 0.1}, "lengths"),
        ([0.5, math.nan], [1, 0], {"target_risk": 0.1}, "finite"),
        ([0.5, 1.2], [1, 0], {"target_risk": 0.1}, "outside"),
        ([0.5, 0.6], [1, 2], {"target_risk": 0.1}, "0 or 1"),
    ],
)
def test_bad_inputs_raise_a_data_error_naming_the_problem(confidence, correct, kwargs, word):
    with pytest.raises(DataError, match=word):
        choose_threshold(confidence, correct, **kwargs)


@pytest.mark.parametrize(
    "result",
    [
        AbstentionThreshold(0.83, 0.1, 0.1, 0.17, 0.06, 0.09, 2000),
        AbstentionThreshold(math.inf, 0.1, 0.1, 0.0, math.nan, math.nan, 10),
    ],
)
def test_dict_round_trip_is_strict_json(result):
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    back = AbstentionThreshold.from_dict(data)
    assert back.threshold == result.threshold and back.n == result.n
    assert back.coverage == result.coverage
    np.testing.assert_equal([back.risk, back.risk_upper_bound], [result.risk, result.risk_upper_bound])


def test_abstain_always_writes_threshold_none():
    assert AbstentionThreshold(math.inf, 0.1, 0.1, 0.0, math.nan, math.nan, 10).to_dict()["threshold"] is None


def test_selective_risk_on_a_hand_computed_example():
    conf, correct = [0.9, 0.8, 0.5, 0.2], [True, False, True, False]
    # answered at 0.5: 0.9 (right), 0.8 (wrong), 0.5 (right) -> risk 1/3, coverage 3/4
    assert selective_risk(conf, correct, 0.5) == (pytest.approx(1 / 3), 0.75)
    risk, coverage = selective_risk(conf, correct, 0.95)
    assert math.isnan(risk) and coverage == 0.0

from __future__ import annotations

import math
import re
from functools import partial

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from selfknow.errors import SelfknowError
from selfknow.metrics import (
    METRICS,
    accuracy,
    adaptive_ece,
    auprc,
    aurc,
    auroc,
    bootstrap_interval,
    brier,
    ece,
    evaluate_scores,
    nll,
    reliability_bins,
    risk_coverage_curve,
    selective_accuracy,
    top_label_ece,
    within_group_auroc,
)


def test_accuracy_is_the_fraction_correct():
    assert accuracy([1, 0, 1, 1]) == 0.75


def test_ece_weights_each_bin_gap_by_its_count():
    # bins: 0.05 -> [0, .1), 0.15 -> [.1, .2), 0.95 and 1.0 -> [.9, 1]
    # gaps: |0 - .05| = .05, |0 - .15| = .15, |(1 + 0)/2 - (.95 + 1)/2| = .475
    # ECE = (1·.05 + 1·.15 + 2·.475) / 4 = 1.15 / 4
    assert ece([0.05, 0.15, 0.95, 1.0], [0, 0, 1, 0]) == pytest.approx(0.2875)


def test_ece_counts_a_confidence_of_exactly_one_in_the_last_bin():
    # both in [.9, 1]: accuracy 1/2, confidence 1 -> ECE .5 (right-open bins would drop both)
    assert ece([1.0, 1.0], [1, 0]) == pytest.approx(0.5)
    assert reliability_bins([1.0, 1.0], [1, 0])["count"][-1] == 2


def test_ece_bins_are_closed_on_the_left():
    # 0.3 -> [.3, .4), 0.25 -> [.2, .3): (|1 - .3| + |0 - .25|) / 2 = .475
    # (both in one bin would give |.5 - .275| = .225)
    assert ece([0.3, 0.25], [1, 0]) == pytest.approx(0.475)


def test_ece_is_zero_when_every_bin_is_calibrated():
    # one bin [.7, .8): 4 records at .75, 3 correct -> |3/4 - .75| = 0
    assert ece([0.75] * 4, [1, 1, 1, 0]) == pytest.approx(0.0)


def test_top_label_ece_merges_p_with_one_minus_p():
    # ece: .7 -> [.7, .8) gap |1 - .7| = .3; .3 -> [.3, .4) gap |1 - .3| = .7; (.3 + .7) / 2 = .5
    # top-label: conf' = max(p, 1-p) = .7 for both; predictions (p >= .5) = 1, 0; hits = 1, 0
    #            one bin [.7, .8): |1/2 - .7| = .2
    assert ece([0.7, 0.3], [1, 1]) == pytest.approx(0.5)
    assert top_label_ece([0.7, 0.3], [1, 1]) == pytest.approx(0.2)


def test_top_label_ece_predicts_correct_at_one_half_and_counts_one():
    # p = .5: conf' .5, prediction 1, hit (1 == 1) -> |1 - .5| = .5; p = 1.0: conf' 1, hit 1 -> 0; mean .25
    assert top_label_ece([0.5, 1.0], [1, 1]) == pytest.approx(0.25)


def test_adaptive_ece_splits_sorted_confidences_into_near_equal_bins():
    # sorted: [.1, .2, .3 | .8, .9] (5 into 2 bins: 3 + 2), grades [0, 0, 1 | 1, 1]
    # bin 1: |1/3 - .2| = 2/15, bin 2: |1 - .85| = .15; ECE = 3/5·2/15 + 2/5·.15 = .08 + .06
    assert adaptive_ece([0.9, 0.1, 0.8, 0.3, 0.2], [1, 0, 1, 1, 0], bins=2) == pytest.approx(0.14)


def test_adaptive_ece_with_fewer_records_than_bins_uses_one_bin_per_record():
    # |1 - .9| and |0 - .2|, each weight 1/2
    assert adaptive_ece([0.9, 0.2], [1, 0]) == pytest.approx(0.15)


def test_brier_is_the_mean_squared_error():
    # ((.8 - 1)² + (.3 - 0)²) / 2 = (.04 + .09) / 2
    assert brier([0.8, 0.3], [1, 0]) == pytest.approx(0.065)


def test_nll_is_the_mean_log_loss():
    # -(ln .8 + ln .7) / 2
    assert nll([0.8, 0.3], [1, 0]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)


def test_nll_clips_a_certain_mistake():
    # p = 1 for a wrong answer: -ln(1e-12) ≈ 27.63, not infinity
    assert nll([1.0], [0]) == pytest.approx(-math.log(1e-12), rel=1e-6)


def test_auroc_counts_correct_wrong_pairs_in_order():
    # correct .9, .4; wrong .8, .3: pairs .9>.8 ✓ .9>.3 ✓ .4>.8 ✗ .4>.3 ✓ -> 3/4
    assert auroc([0.9, 0.8, 0.4, 0.3], [1, 0, 1, 0]) == pytest.approx(0.75)


def test_auroc_counts_ties_as_half():
    assert auroc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)


def test_auroc_is_nan_with_one_class():
    assert math.isnan(auroc([0.2, 0.9], [1, 1]))


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    conf = rng.uniform(size=300).round(1)
    correct = (rng.uniform(size=300) < conf).astype(int)
    assert auroc(conf, correct) == pytest.approx(roc_auc_score(correct, conf))


def test_within_group_auroc_skips_a_one_class_group():
    # A: .9 correct vs .1 wrong -> 1; B: .2 correct vs .8 wrong -> 0; C: all correct -> skipped; mean .5
    conf = [0.9, 0.1, 0.2, 0.8, 0.5, 0.6]
    correct = [1, 0, 1, 0, 1, 1]
    assert within_group_auroc(conf, correct, ["A", "A", "B", "B", "C", "C"]) == pytest.approx(0.5)


def test_within_group_auroc_does_not_reward_telling_datasets_apart():
    # arithmetic: all at .9, 3 of 4 correct; geography: all at .1, 1 of 4 correct.
    # pooled: correct {.9 x3, .1}, wrong {.9, .1 x3}: 3 ties (1.5) + 9 wins + 0 + 3 ties (1.5) = 12/16 = .75
    # within: constant scores in each dataset -> .5 and .5
    conf = [0.9] * 4 + [0.1] * 4
    correct = [1, 1, 1, 0, 1, 0, 0, 0]
    groups = ["arithmetic"] * 4 + ["geography"] * 4
    assert auroc(conf, correct) == pytest.approx(0.75)
    assert within_group_auroc(conf, correct, groups) == pytest.approx(0.5)


def test_within_group_auroc_is_nan_when_no_group_has_both_classes():
    assert math.isnan(within_group_auroc([0.2, 0.9], [1, 0], ["A", "B"]))


def test_auprc_is_the_average_precision_of_correct():
    # ranked: 1, 0, 1, 0; recall steps at k=1 (P 1) and k=3 (P 2/3): .5·1 + .5·2/3 = 5/6
    assert auprc([0.9, 0.8, 0.4, 0.3], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    assert math.isnan(auprc([0.9, 0.8], [0, 0]))


def test_selective_accuracy_keeps_the_most_confident():
    conf, correct = [0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 1, 0]
    assert selective_accuracy(conf, correct, 0.5) == pytest.approx(2 / 3)  # ceil(2.5) = 3: 1, 0, 1
    assert selective_accuracy(conf, correct, 0.8) == pytest.approx(3 / 4)  # 4: 1, 0, 1, 1
    assert selective_accuracy(conf, correct, 1.0) == pytest.approx(3 / 5)


def test_tied_confidences_give_the_expectation_over_random_tie_breaking():
    assert selective_accuracy([0.5, 0.5, 0.5], [0, 1, 1], 1 / 3) == pytest.approx(2 / 3)
    assert selective_accuracy([0.9, 0.5, 0.5, 0.1], [1, 0, 1, 0], 0.5) == pytest.approx(0.75)  # 1 and ½ of (0, 1)
    # a constant scores the same whatever order the file is in
    grades = [0, 0, 0, 1, 1, 0, 1, 0]
    for metric in (aurc, adaptive_ece, partial(selective_accuracy, coverage=0.5)):
        assert metric([0.3] * 8, grades) == pytest.approx(metric([0.3] * 8, grades[::-1]))
    assert aurc([0.3] * 8, grades) == pytest.approx(5 / 8)


def test_selective_accuracy_does_not_round_up_float_noise():
    # 0.07·100 = 7.000000000000001 in floats; the top 7 are correct, the 8th is not
    conf = np.linspace(1, 0, 100)
    correct = np.r_[np.ones(7), np.zeros(93)]
    assert selective_accuracy(conf, correct, 0.07) == 1.0


def test_risk_coverage_curve_gives_the_error_rate_of_the_top_k():
    coverage, risk = risk_coverage_curve([0.9, 0.8, 0.7, 0.6], [1, 0, 0, 1])
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0, 1 / 2, 2 / 3, 2 / 4])


def test_aurc_of_a_perfect_ranking():
    # ranked grades 1, 1, 0, 0: risks 0, 0, 1/3, 2/4 -> mean (1/3 + 1/2) / 4 = 5/24
    assert aurc([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 0]) == pytest.approx(5 / 24)


def test_aurc_of_a_reversed_ranking():
    # ranked grades 0, 0, 1, 1: risks 1, 1, 2/3, 2/4 -> mean (2 + 2/3 + 1/2) / 4 = 19/24
    assert aurc([0.6, 0.7, 0.8, 0.9], [1, 1, 0, 0]) == pytest.approx(19 / 24)


def _sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    conf = rng.uniform(size=n)
    return conf, (rng.uniform(size=n) < conf).astype(int)


def test_bootstrap_interval_contains_the_point_value():
    conf, correct = _sample(200)
    low, high = bootstrap_interval(brier, conf, correct, n=200)
    assert low < brier(conf, correct) < high


def test_bootstrap_interval_narrows_with_more_records():
    small = bootstrap_interval(brier, *_sample(50), n=200)
    large = bootstrap_interval(brier, *_sample(2000), n=200)
    assert large[1] - large[0] < (small[1] - small[0]) / 3  # width ∝ 1/√N: √(2000/50) ≈ 6.3


def test_bootstrap_interval_ignores_nan_resamples():
    # resamples with one class give NaN AUROC; the others give 1
    assert bootstrap_interval(auroc, [0.9, 0.1], [1, 0], n=50) == (1.0, 1.0)


def test_bootstrap_interval_resamples_groups_alongside():
    conf, correct = _sample(120)
    groups = np.array(["A", "B", "C"] * 40)
    low, high = bootstrap_interval(within_group_auroc, conf, correct, groups, n=100)
    assert low <= within_group_auroc(conf, correct, groups) <= high


def test_bootstrap_interval_is_reproducible_with_a_seed():
    conf, correct = _sample(100)
    assert bootstrap_interval(ece, conf, correct, n=50, seed=3) == bootstrap_interval(ece, conf, correct, n=50, seed=3)


def test_evaluate_scores_gives_every_metric_with_an_interval():
    conf, correct = _sample(150)
    groups = np.array(["A", "B"] * 75)
    tasks = np.array(["A/x", "B/y", "A/z"] * 50)
    results = evaluate_scores(conf, correct, groups, n_boot=50, tasks=tasks)
    expected = set(METRICS) - {"selective_accuracy"} | {"selective_accuracy@0.5", "selective_accuracy@0.8"}
    assert set(results) == expected
    assert results["ece"]["value"] == ece(conf, correct)
    assert results["within_task_auroc"]["value"] == within_group_auroc(conf, correct, tasks)
    assert results["within_task_auroc"]["value"] != results["within_group_auroc"]["value"]
    assert results["selective_accuracy@0.8"]["value"] == selective_accuracy(conf, correct, 0.8)
    assert all(r["low"] <= r["high"] for r in results.values())


def test_evaluate_scores_without_groups_or_bootstrap():
    results = evaluate_scores([0.9, 0.2], [1, 0], n_boot=0)
    assert "within_group_auroc" not in results and "within_task_auroc" not in results
    assert results["auroc"]["value"] == 1.0
    assert math.isnan(results["auroc"]["low"])


@pytest.mark.parametrize(
    ("confidence", "correct", "message"),
    [
        ([0.1, 0.2, float("nan")], [1, 0, 1], "nan at index 2"),
        ([0.1, float("inf")], [1, 0], "inf at index 1"),
        ([0.1, 1.2], [1, 0], "1.2 at index 1 is outside [0, 1]"),
        ([-0.1, 0.5], [1, 0], "-0.1 at index 0 is outside [0, 1]"),
        ([0.1, 0.2], [1, 0, 1], "different lengths (2 vs 3)"),
        ([], [], "no records"),
        ([0.1, 0.2], [1, 2], "got 2 at index 1"),
        (["high", "low"], [1, 0], "must be numbers"),
    ],
)
def test_bad_inputs_raise_a_clear_error(confidence, correct, message):
    with pytest.raises(SelfknowError, match=re.escape(message)):
        ece(confidence, correct)


def test_groups_of_the_wrong_length_raise():
    with pytest.raises(SelfknowError, match="groups"):
        within_group_auroc([0.1, 0.2], [1, 0], ["A"])


def test_coverage_outside_the_unit_interval_raises():
    with pytest.raises(SelfknowError, match="coverage"):
        selective_accuracy([0.1, 0.2], [1, 0], 0.0)

"""Metrics for confidences: is P(correct) calibrated, and does it rank right answers above wrong ones?

Every metric takes ``confidence`` (an estimator's P(the answer is correct), floats in [0, 1]) and ``correct``
(the grade, 0 or 1) for the same N records, and ``groups`` (dataset names) where it works within datasets.
Bad inputs raise :class:`~selfknow.errors.DataError` naming the problem. Each docstring states its definition,
so a number in a report can be traced to a formula; :data:`METRICS` has the one-line versions reports print.

Differences from the reference implementation (spec §11): :func:`ece` bins P(correct) over [0, 1] with a closed
last bin, so a confidence of exactly 1.0 is counted rather than dropped; the reference's top-label ECE is kept,
under its own name, as :func:`top_label_ece`; AUROC is also given within datasets; Brier, NLL, AUPRC and
risk-coverage metrics are added; every metric has a bootstrap interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score

from selfknow.errors import DataError

ArrayLike = Sequence[float] | np.ndarray
EPS = 1e-12

METRICS: dict[str, str] = {
    "accuracy": "fraction of answers graded correct (the model's accuracy; the same for every estimator)",
    "ece": "expected calibration error: Σ_b (n_b/N)·|accuracy_b − mean confidence_b| over 10 equal-width bins "
    "of P(correct) on [0, 1], last bin closed",
    "top_label_ece": "the reference's ECE of the correct/incorrect prediction: confidence max(p, 1−p), hit when "
    "(p ≥ 0.5) equals the grade, same 10 bins",
    "adaptive_ece": "ECE over 10 equal-mass bins (sorted confidences split into near-equal groups)",
    "brier": "mean squared error (p − correct)²",
    "nll": "mean negative log-likelihood −[y·log p + (1−y)·log(1−p)], p clipped to [1e-12, 1−1e-12]",
    "auroc": "probability a random correct answer gets higher confidence than a random wrong one (ties ½)",
    "within_group_auroc": "mean over datasets of the AUROC inside each dataset (datasets with one class skipped)",
    "within_task_auroc": "mean over tasks (an MMLU subject, a built-in question type) of the AUROC inside each",
    "auprc": "average precision of confidence as a detector of correct answers",
    "aurc": "area under the risk-coverage curve: mean error rate among the k most confident, k = 1..N",
    "selective_accuracy": "accuracy on the ⌈c·N⌉ most confident answers, for coverage c",
}


def _as_correct(correct: ArrayLike) -> np.ndarray:
    """The grades as a non-empty 1-D float array of 0s and 1s, or a DataError."""
    hit = np.asarray(correct)
    if hit.ndim != 1:
        raise DataError(f"correct must be 1-D; got shape {hit.shape}")
    if len(hit) == 0:
        raise DataError("no records to score (correct is empty)")
    if (bad := np.flatnonzero(~np.isin(hit, (0, 1)))).size:
        raise DataError(f"correct must be 0 or 1; got {hit[bad[0]].item()!r} at index {bad[0]}")
    return hit.astype(float)


def _check(
    confidence: ArrayLike, correct: ArrayLike, groups: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The inputs as arrays (confidence float, correct float 0/1, groups as given), or a DataError."""
    try:
        conf = np.asarray(confidence, dtype=float)
    except (TypeError, ValueError):
        raise DataError("confidence must be numbers") from None
    if conf.ndim != 1:
        raise DataError(f"confidence must be 1-D; got shape {conf.shape}")
    if len(conf) != len(correct):
        raise DataError(f"confidence and correct have different lengths ({len(conf)} vs {len(correct)})")
    hit = _as_correct(correct)
    if (bad := np.flatnonzero(~np.isfinite(conf))).size:
        raise DataError(f"confidence is {conf[bad[0]]} at index {bad[0]}; confidences must be finite")
    if (bad := np.flatnonzero((conf < 0) | (conf > 1))).size:
        raise DataError(f"confidence {conf[bad[0]]} at index {bad[0]} is outside [0, 1]; it must be a probability")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != conf.shape:
            raise DataError(f"groups and confidence have different lengths ({len(groups)} vs {len(conf)})")
    return conf, hit, groups


def accuracy(correct: ArrayLike) -> float:
    """Fraction correct: mean(correct). Depends only on the answers, so it is shared by all estimators."""
    return float(_as_correct(correct).mean())


def _bin_index(conf: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each confidence: b with b/B ≤ conf < (b+1)/B, and 1.0 in the last bin."""
    edges = np.arange(bins + 1) / bins
    return np.minimum(np.searchsorted(edges, conf, side="right") - 1, bins - 1)


def _binned_gap(conf: np.ndarray, hit: np.ndarray, index: np.ndarray, bins: int) -> float:
    """Σ_b (n_b/N)|mean(hit in b) − mean(conf in b)|, computed as Σ_b |Σ hit − Σ conf| / N (empty bins add 0)."""
    gap = np.bincount(index, hit, minlength=bins) - np.bincount(index, conf, minlength=bins)
    return float(np.abs(gap).sum() / len(conf))


def reliability_bins(confidence: ArrayLike, correct: ArrayLike, bins: int = 10) -> dict[str, np.ndarray]:
    """Per equal-width bin (as in :func:`ece`): ``count``, ``confidence`` (mean) and ``accuracy``; NaN if empty.

    This is what a reliability diagram plots: a calibrated estimator's bins lie on the diagonal.
    """
    conf, hit, _ = _check(confidence, correct)
    index = _bin_index(conf, bins)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "count": count,
            "confidence": np.bincount(index, conf, minlength=bins) / count,
            "accuracy": np.bincount(index, hit, minlength=bins) / count,
        }


def ece(confidence: ArrayLike, correct: ArrayLike, bins: int = 10) -> float:
    """Expected calibration error of P(correct).

    Bin b (of B equal-width bins) holds the confidences in [b/B, (b+1)/B); the last bin is closed, [1 − 1/B, 1],
    so a confidence of exactly 1.0 counts (the reference's right-open bins drop it, and normalise by the binned
    records only). ECE = Σ_b (n_b/N)·|mean(correct in b) − mean(confidence in b)|: 0 when, in every bin, the
    fraction correct equals the confidence stated.
    """
    conf, hit, _ = _check(confidence, correct)
    return _binned_gap(conf, hit, _bin_index(conf, bins), bins)


def top_label_ece(confidence: ArrayLike, correct: ArrayLike, bins: int = 10) -> float:
    """The reference code's ECE (spec §11), kept to compare with its numbers: the top-label ECE of the binary
    correct/incorrect classifier, not the reliability of P(correct).

    With p = P(correct): prediction = (p ≥ 0.5), hit = (prediction == correct), conf' = max(p, 1 − p); then
    Σ_b (n_b/N)·|mean(hit in b) − mean(conf' in b)| over the bins of :func:`ece` (last bin closed here, unlike
    the reference). It differs from :func:`ece` because conf' ≥ 0.5 uses only the upper half of the bins and each
    bin mixes p with 1 − p: [0.6, 0.7) holds p ∈ [0.6, 0.7) and p ∈ (0.3, 0.4], so errors on the two sides can
    cancel or add.
    """
    conf, hit, _ = _check(confidence, correct)
    top_conf = np.maximum(conf, 1 - conf)
    top_hit = ((conf >= 0.5) == (hit == 1)).astype(float)
    return _binned_gap(top_conf, top_hit, _bin_index(top_conf, bins), bins)


def adaptive_ece(confidence: ArrayLike, correct: ArrayLike, bins: int = 10) -> float:
    """ECE over equal-mass bins: the records sorted by confidence (tied records share their mean grade) and split
    into B groups whose sizes differ by at most one (fewer, non-empty groups when N < B);
    ECE = Σ_b (n_b/N)·|accuracy_b − conf_b|.

    Equal-width bins leave most of them nearly empty when confidences cluster (as they do near 0 or 1); equal-mass
    bins give every bin the same weight of evidence.
    """
    conf, hit, _ = _check(confidence, correct)
    ranked_conf, ranked_hit = _ranked(conf, hit, descending=False)
    index = np.repeat(np.arange(bins), [len(part) for part in np.array_split(ranked_conf, bins)])
    return _binned_gap(ranked_conf, ranked_hit, index, bins)


def brier(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Brier score: mean((confidence − correct)²). A proper score: rewards both calibration and sharpness."""
    conf, hit, _ = _check(confidence, correct)
    return float(np.mean((conf - hit) ** 2))


def nll(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Negative log-likelihood: −mean(y·log p + (1 − y)·log(1 − p)), with p clipped to [1e-12, 1 − 1e-12] so a
    confident mistake costs about 27.6 rather than infinity."""
    conf, hit, _ = _check(confidence, correct)
    p = np.clip(conf, EPS, 1 - EPS)
    return float(-np.mean(hit * np.log(p) + (1 - hit) * np.log(1 - p)))


def score_auroc(conf: np.ndarray, hit: np.ndarray) -> float:
    """Mann-Whitney AUROC of any real-valued score (a probe's log-odds as well as a probability),
    (Σ ranks of the positives − n₁(n₁+1)/2) / (n₁·n₀) with average ranks for ties; NaN with one class. Equal
    to sklearn's ``roc_auc_score`` and ~5 times faster, which the thousands of per-group calls of a
    bootstrapped :func:`within_group_auroc` need."""
    n_pos = hit.sum()
    n_neg = len(hit) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(conf)
    return float((ranks[hit == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Area under the ROC curve of confidence as a detector of correct answers: the probability that a random
    correct answer is more confident than a random wrong one, ties counting ½. NaN when every answer is correct
    or every one wrong (no pair to compare)."""
    conf, hit, _ = _check(confidence, correct)
    return score_auroc(conf, hit)


def within_group_auroc(confidence: ArrayLike, correct: ArrayLike, groups: ArrayLike) -> float:
    """Mean over groups (datasets) of the AUROC inside each group; groups whose answers are all correct or all
    wrong are skipped, and the result is NaN when no group has both.

    Why: pooled AUROC rewards telling one dataset from another. A model that is right on arithmetic and wrong on
    geography gets a high pooled AUROC by saying "arithmetic: confident", without knowing which of its arithmetic
    answers are wrong; that is knowing the dataset, not knowing what it knows. Within a dataset, only the latter
    helps.
    """
    conf, hit, groups = _check(confidence, correct, groups)
    names, group = np.unique(groups, return_inverse=True)
    values = [score_auroc(conf[group == k], hit[group == k]) for k in range(len(names))]
    usable = [v for v in values if not math.isnan(v)]
    return float(np.mean(usable)) if usable else math.nan


def auprc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Average precision of confidence as a detector of correct answers (sklearn ``average_precision_score``):
    AP = Σ_k (R_k − R_{k−1})·P_k over thresholds taken in decreasing confidence, with precision P_k and recall R_k
    of "correct". NaN when only one class is present (AP is then 1 or undefined, whatever the ranking)."""
    conf, hit, _ = _check(confidence, correct)
    if hit.min() == hit.max():
        return math.nan
    return float(average_precision_score(hit, conf))


def _ranked(conf: np.ndarray, hit: np.ndarray, descending: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Confidences and grades sorted by confidence, each grade replaced by the mean grade of the records tied with
    it: the expected grade at that rank when ties are broken at random.

    Why: breaking ties by input order makes the metrics of a tied estimator (a constant, a per-dataset rate)
    depend on how the file happens to be sorted, and puts its point value outside its own bootstrap interval.
    """
    order = np.argsort(-conf if descending else conf, kind="stable")
    ranked_conf, ranked_hit = conf[order], hit[order].astype(float)
    group = np.cumsum(np.r_[True, ranked_conf[1:] != ranked_conf[:-1]]) - 1
    means = np.bincount(group, weights=ranked_hit) / np.bincount(group)
    return ranked_conf, means[group]


def _ranked_hits(conf: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Expected grades from most to least confident (ties averaged, see :func:`_ranked`)."""
    return _ranked(conf, hit)[1]


def selective_accuracy(confidence: ArrayLike, correct: ArrayLike, coverage: float) -> float:
    """Accuracy on the k = ⌈coverage·N⌉ most confident answers (expected over random tie-breaking): what a user gets by
    answering only the fraction ``coverage`` of questions the model is surest of, abstaining on the rest."""
    conf, hit, _ = _check(confidence, correct)
    if not 0 < coverage <= 1:
        raise DataError(f"coverage must be in (0, 1]; got {coverage}")
    # The tolerance keeps float products such as 0.07·100 = 7.000000000000001 from rounding up to 8.
    k = max(1, math.ceil(coverage * len(conf) - 1e-9))
    return float(_ranked_hits(conf, hit)[:k].mean())


def risk_coverage_curve(confidence: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Coverage k/N and risk (expected error rate among the k most confident answers, ties broken at random) for
    k = 1..N."""
    conf, hit, _ = _check(confidence, correct)
    k = np.arange(1, len(conf) + 1)
    return k / len(conf), np.cumsum(1 - _ranked_hits(conf, hit)) / k


def aurc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Area under the risk-coverage curve, mean over k = 1..N of the risk at coverage k/N (lower is better).

    Its minimum, reached by ranking every correct answer first, is not 0 unless all are correct, so compare AURC
    only between estimators scoring the same answers.
    """
    return float(risk_coverage_curve(confidence, correct)[1].mean())


def bootstrap_interval(
    metric_fn: Callable[..., float], *arrays: ArrayLike, n: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric_fn(*arrays)``: the records are resampled with replacement
    (every array, groups included, with the same indices) ``n`` times, and the interval is the (1 − level)/2 and
    (1 + level)/2 quantiles of the metric over the resamples. Resamples where the metric is NaN (e.g. AUROC of a
    resample with one class) are left out; (NaN, NaN) if all are.

    The same seed gives the same resamples for every metric and estimator of the same records, so intervals of
    estimators scored on the same answers are paired.
    """
    data = [np.asarray(a) for a in arrays]
    if not data or len({len(a) for a in data}) != 1 or len(data[0]) == 0:
        raise DataError("bootstrap_interval needs one or more non-empty arrays of the same length")
    if n < 1 or not 0 < level < 1:
        raise DataError(f"bootstrap_interval needs n ≥ 1 and 0 < level < 1; got n={n}, level={level}")
    rng = np.random.default_rng(seed)
    size = len(data[0])
    values = []
    for _ in range(n):
        idx = rng.integers(0, size, size)
        values.append(metric_fn(*(a[idx] for a in data)))
    resampled = np.array(values)
    resampled = resampled[~np.isnan(resampled)]
    if resampled.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def evaluate_scores(
    confidence: ArrayLike,
    correct: ArrayLike,
    groups: ArrayLike | None = None,
    coverages: Sequence[float] = (0.5, 0.8),
    n_boot: int = 1000,
    seed: int = 0,
    tasks: ArrayLike | None = None,
) -> dict[str, dict[str, float]]:
    """Every metric as ``{"value", "low", "high"}`` (bootstrap interval at 95%; NaN bounds when ``n_boot`` is 0).

    Keys are those of :data:`METRICS`, with ``within_group_auroc`` only when ``groups`` (datasets) are given,
    ``within_task_auroc`` only when ``tasks`` are, and ``selective_accuracy@c`` for each coverage c.
    """
    conf, hit, groups = _check(confidence, correct, groups)
    pair = (conf, hit)
    metrics: dict[str, tuple[Callable[..., float], tuple[np.ndarray, ...]]] = {
        "accuracy": (accuracy, (hit,)),
        "ece": (ece, pair),
        "top_label_ece": (top_label_ece, pair),
        "adaptive_ece": (adaptive_ece, pair),
        "brier": (brier, pair),
        "nll": (nll, pair),
        "auroc": (auroc, pair),
    }
    if groups is not None:
        metrics["within_group_auroc"] = (within_group_auroc, (conf, hit, groups))
    if tasks is not None:
        metrics["within_task_auroc"] = (within_group_auroc, (conf, hit, _check(conf, hit, tasks)[2]))
    metrics["auprc"] = (auprc, pair)
    metrics["aurc"] = (aurc, pair)
    for c in coverages:
        metrics[f"selective_accuracy@{c:g}"] = (partial(selective_accuracy, coverage=c), pair)
    results = {}
    for name, (fn, arrays) in metrics.items():
        low, high = bootstrap_interval(fn, *arrays, n=n_boot, seed=seed) if n_boot else (math.nan, math.nan)
        results[name] = {"value": fn(*arrays), "low": low, "high": high}
    return results

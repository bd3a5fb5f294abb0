"""Pick a confidence threshold to abstain below, so the error rate among answered questions is provably ≤ α.

Learn-then-Test (Angelopoulos, Bates et al. 2021) with fixed-sequence testing: each candidate threshold λ (a
held-out confidence, highest first) tests the null "selective risk at λ > α" with the p-value P(Binom(n, α) ≤ e),
where n records are answered at λ and e of them are wrong. Given n, the answered records are an i.i.d. sample of
those with confidence ≥ λ, so this binomial test on the answered subset is valid despite n being random (the
standard LTT treatment of selective risk). Walking down while p ≤ δ and stopping at the first failure keeps the
chance that the chosen threshold's risk exceeds α at most δ.

The highest thresholds answer so few records that no error count could reject there ((1 − α)^n > δ even with
e = 0), so a literal walk from the top would always abstain. The sequence therefore starts at the first candidate
that could pass; which that is depends only on the confidences, never on the grades.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import beta, binom

from selfknow.errors import DataError
from selfknow.metrics import ArrayLike, _check


@dataclass(frozen=True)
class AbstentionThreshold:
    """A threshold chosen by :func:`choose_threshold` and what it achieved on the held-out records."""

    threshold: float  # answer when confidence >= threshold; math.inf means abstain always
    target_risk: float  # alpha
    delta: float
    coverage: float  # fraction of the held-out records answered at this threshold
    risk: float  # empirical selective risk on the held-out records answered (nan if none)
    risk_upper_bound: float  # one-sided (1 - delta) Clopper-Pearson bound on the selective risk (nan if none)
    n: int  # held-out records used

    def answers(self, confidence: ArrayLike) -> np.ndarray:
        """Which records to answer: confidence >= threshold (all False when abstaining always)."""
        return np.asarray(confidence, dtype=float) >= self.threshold

    def to_dict(self) -> dict:
        """Strict-JSON fields: an infinite threshold and NaN risks become None."""
        return {key: None if isinstance(v, float) and not math.isfinite(v) else v for key, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> AbstentionThreshold:
        """Inverse of :meth:`to_dict`."""
        missing = {"threshold": math.inf, "risk": math.nan, "risk_upper_bound": math.nan}
        fields = {key: missing[key] if value is None else value for key, value in data.items()}
        return cls(**fields)


def _check_level(name: str, value: float) -> None:
    """A DataError unless ``value`` is a probability strictly between 0 and 1."""
    if not 0 < value < 1:
        raise DataError(f"{name} must be strictly between 0 and 1; got {value}")


def _upper_bound(errors: int, answered: int, delta: float) -> float:
    """One-sided Clopper-Pearson upper bound: ≤ α exactly when P(Binom(answered, α) ≤ errors) ≤ δ."""
    return 1.0 if errors == answered else float(beta.ppf(1 - delta, errors + 1, answered - errors))


def choose_threshold(
    confidence: ArrayLike, correct: ArrayLike, target_risk: float, delta: float = 0.1, max_candidates: int = 1000
) -> AbstentionThreshold:
    """The lowest threshold whose selective risk is ≤ ``target_risk`` with probability ≥ 1 − ``delta``.

    Candidates are the distinct confidences, thinned to about ``max_candidates`` quantiles for speed. If no
    candidate passes, the result abstains on everything (threshold ``math.inf``, coverage 0) rather than raising.
    """
    _check_level("target_risk", target_risk)
    _check_level("delta", delta)
    conf, hit, _ = _check(confidence, correct)
    order = np.argsort(conf, kind="stable")
    ascending = conf[order]
    wrong_from = np.append(np.cumsum((1 - hit[order])[::-1])[::-1], 0)  # wrong among ascending[i:]
    candidates = np.unique(conf)
    if len(candidates) > max_candidates:
        candidates = np.unique(np.quantile(conf, np.linspace(0, 1, max_candidates), method="inverted_cdf"))
    candidates = candidates[::-1]
    first = np.searchsorted(ascending, candidates, side="left")
    answered, errors = len(conf) - first, wrong_from[first]
    testable = np.flatnonzero((1 - target_risk) ** answered <= delta)
    if testable.size:
        start = testable[0]
        passed = binom.cdf(errors[start:], answered[start:], target_risk) <= delta
        count = int(np.argmin(passed)) if not passed.all() else len(passed)
        if count:
            k = start + count - 1
            return AbstentionThreshold(
                threshold=float(candidates[k]),
                target_risk=target_risk,
                delta=delta,
                coverage=float(answered[k] / len(conf)),
                risk=float(errors[k] / answered[k]),
                risk_upper_bound=_upper_bound(int(errors[k]), int(answered[k]), delta),
                n=len(conf),
            )
    return AbstentionThreshold(math.inf, target_risk, delta, 0.0, math.nan, math.nan, len(conf))


def selective_risk(confidence: ArrayLike, correct: ArrayLike, threshold: float) -> tuple[float, float]:
    """(error rate among records with confidence ≥ threshold, fraction of records answered); risk NaN if none."""
    conf, hit, _ = _check(confidence, correct)
    answered = conf >= threshold
    coverage = float(answered.mean())
    return (float(1 - hit[answered].mean()) if answered.any() else math.nan), coverage

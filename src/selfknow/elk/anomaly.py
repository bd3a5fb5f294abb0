"""Mechanistic anomaly detection (spec §8): flag examples whose per-layer probe scores look unlike trusted ones.

A probe's log-odds at every layer form one vector per example. On trusted (easy, truthful) examples these
layers agree in a correlated way; an untruthful context can break the correlation without moving any single
layer far, so the detector is a full-covariance Gaussian, not per-layer thresholds.
"""

from __future__ import annotations

import math

import numpy as np

from selfknow.elk.probes import auroc
from selfknow.errors import DataError


def _matrix(x: np.ndarray, what: str, width: int | None = None) -> np.ndarray:
    """``x`` as finite float64 [n, L] (L == ``width`` when given), or a DataError."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0 or (width is not None and x.shape[1] != width):
        want = f"[n, {width}]" if width is not None else "[n, L]"
        raise DataError(f"{what} must be a non-empty {want} array of per-layer scores; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{what} contains NaN or infinity")
    return x


class GaussianAnomalyDetector:
    """Log-density under a Gaussian fitted to normal examples; higher = more normal.

    ``ridge``·trace/L is added to the covariance's diagonal so a singular one (e.g. two identical layers)
    still has a density. With ``subtract_diagonal`` the score is the log-density minus that under the
    diagonal Gaussian, which leaves only what the correlations between layers say.
    """

    def __init__(self, ridge: float = 1e-6, subtract_diagonal: bool = False) -> None:
        self.ridge, self.subtract_diagonal = ridge, subtract_diagonal

    def fit(self, x: np.ndarray) -> GaussianAnomalyDetector:
        """Fit mean and covariance on reference features ``x`` [n, L]; returns self."""
        x = _matrix(x, "reference features")
        if len(x) < 2:
            raise DataError("need at least 2 reference examples to estimate a covariance")
        self.mean = x.mean(0)
        cov = np.atleast_2d(np.cov(x, rowvar=False))
        self.cov = cov + self.ridge * (np.trace(cov) / len(cov) or 1.0) * np.eye(len(cov))
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """Log-density of each row of ``x`` [n, L] (minus the diagonal Gaussian's, if asked)."""
        x = _matrix(x, "features", len(self.mean)) - self.mean
        density = _log_density(x, self.cov)
        if self.subtract_diagonal:
            density -= _log_density(x, np.diag(np.diag(self.cov)))
        return density


def _log_density(centred: np.ndarray, cov: np.ndarray) -> np.ndarray:
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol, centred.T)  # L⁻¹(x − μ): its squared norm is the Mahalanobis distance²
    log_det = 2 * np.log(np.diag(chol)).sum()
    return -0.5 * ((white**2).sum(0) + log_det + len(cov) * math.log(2 * math.pi))


def anomaly_auroc(detector: GaussianAnomalyDetector, normal: np.ndarray, anomalous: np.ndarray) -> float:
    """AUROC of the detector's score separating ``normal`` (positive class) from ``anomalous`` examples."""
    scores = np.concatenate([detector.score(normal), detector.score(anomalous)])
    return auroc(np.r_[np.ones(len(normal)), np.zeros(len(anomalous))], scores)

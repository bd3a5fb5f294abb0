"""Post-hoc calibration of any estimator's probabilities, fitted on validation records.

Both maps act on the logit z = log(p / (1 - p)), with p first clipped to [1e-6, 1 - 1e-6] so that
probabilities of exactly 0 or 1 (an empty answer's likelihood) stay finite:

- temperature scaling, p' = σ(z / T) with T > 0, found by minimizing the negative log-likelihood
  (NLL) of the labels over log T;
- Platt scaling, p' = σ(a·z + b), found by (nearly unregularized) logistic regression of the labels on z.

Temperature scaling is monotone increasing, and so is Platt scaling whenever its slope a is positive:
then neither changes AUROC or any other ranking metric; they fix how confident an estimator says it is,
not how well it separates right from wrong. A negative a (an estimator that ranks the validation answers
backwards) reverses the ranking, so AUROC becomes 1 minus the raw one; run reports name such estimators.
Scaling cuts both ways: it can make a useless estimator look calibrated (a constant near the accuracy has
ECE near 0 and AUROC 0.5), so a scaled estimator's ECE means something only beside its AUROC and Brier
score.
Platt's shift b also moves the decision point, which temperature (fixed at p = 0.5) cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from selfknow.errors import DataError

EPS = 1e-6
LOG_T_BOUNDS = (-7.0, 7.0)  # T from about 1e-3 to 1e3: wider than any useful scaling


def _logits(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS))


def _check(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    if p.shape != y.shape or p.ndim != 1:
        raise DataError(f"scaling needs one probability per label, got shapes {p.shape} and {y.shape}")
    if not np.all(np.isin(y, (0.0, 1.0))):
        raise DataError("scaling labels must be 0 or 1")
    if len(set(y)) < 2:
        raise DataError("scaling needs both correct and incorrect answers in the calibration records")
    return p, y


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of labels y under p = σ(z), computed stably from the logits."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


@dataclass
class TemperatureScaler:
    """p' = σ(logit(p) / T): one parameter, ranking unchanged, T > 1 softens and T < 1 sharpens."""

    temperature: float = 1.0

    def fit(self, p: np.ndarray, y: np.ndarray) -> TemperatureScaler:
        p, y = _check(p, y)
        z = _logits(p)
        result = minimize_scalar(
            lambda log_t: _nll(z / np.exp(log_t), y), bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6}
        )
        self.temperature = float(np.exp(result.x))
        return self

    def apply(self, p: np.ndarray) -> np.ndarray:
        return expit(_logits(p) / self.temperature)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "temperature", "temperature": self.temperature}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TemperatureScaler:
        return cls(temperature=float(data["temperature"]))


@dataclass
class PlattScaler:
    """p' = σ(a·logit(p) + b): a slope and a shift. ``C`` is large so the fit is the maximum-likelihood
    one unless the labels are separable by p, where it keeps a and b finite."""

    a: float = 1.0
    b: float = 0.0
    C: float = 1e4

    def fit(self, p: np.ndarray, y: np.ndarray) -> PlattScaler:
        p, y = _check(p, y)
        model = LogisticRegression(C=self.C, max_iter=1000).fit(_logits(p)[:, None], y)
        self.a, self.b = float(model.coef_[0, 0]), float(model.intercept_[0])
        return self

    def apply(self, p: np.ndarray) -> np.ndarray:
        return expit(self.a * _logits(p) + self.b)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "platt", "a": self.a, "b": self.b, "C": self.C}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlattScaler:
        return cls(a=float(data["a"]), b=float(data["b"]), C=float(data["C"]))


Scaler = TemperatureScaler | PlattScaler
SCALERS: dict[str, type[TemperatureScaler] | type[PlattScaler]] = {
    "temperature": TemperatureScaler,
    "platt": PlattScaler,
}


def _scaler_class(method: str) -> type[TemperatureScaler] | type[PlattScaler]:
    if method not in SCALERS:
        raise ValueError(f"scaling method must be one of {tuple(SCALERS)}, got {method!r}")
    return SCALERS[method]


def fit_scaler(method: str, p: np.ndarray, y: np.ndarray) -> Scaler:
    """A scaler of the named method ("temperature" or "platt") fitted to probabilities p and 0/1 labels y."""
    return _scaler_class(method)().fit(p, y)


def scaler_from_dict(data: dict[str, Any]) -> Scaler:
    """The scaler that ``to_dict`` described, whichever method it is."""
    return _scaler_class(data.get("method", "")).from_dict(data)

"""Probes that read "is this statement true?" from one layer's hidden states (Mallen & Belrose; spec §5).

Every probe is linear in (normalised) features and gives a log-odds-like score, higher = "true". Supervised
probes need both classes in ``y``. CCS and CRC find their direction without labels and use ``y`` only for
Platt scaling (scale and bias, which also fixes the sign); with ``y=None`` their score is the raw
s(pos) − s(neg), whose sign is arbitrary.

Differences from the reference: CCS/CRC normalise each half of the contrast pair by its own training mean
and std (the original CCS normalisation) instead of LEACE. Both leave the two halves with equal means, so
which answer token was appended is no longer linearly readable; LEACE does it with less distortion. DiM, LDA
and random get the bias that puts 0 midway between the class means (the reference has none), so the sign
of a score is a guess. The CCS L2 penalty covers the weight, not the bias.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.utils.extmath import randomized_svd

from selfknow.errors import DataError
from selfknow.metrics import score_auroc

LR_L2 = 1e-3  # reference: mean BCE + 0.001·||w||², bias unpenalised
CCS_L2 = 1e-2  # reference: CCS loss + 0.01·||θ||²/2
PLATT_C = 1e4  # nearly unpenalised: Platt scaling should calibrate, not shrink


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """AUROC of ``score`` for ``y == 1`` (:func:`selfknow.metrics.score_auroc`); NaN when ``y`` has one class."""
    return score_auroc(np.asarray(score, dtype=float), np.asarray(y, dtype=float))


def _features(x: np.ndarray, pair: bool, name: str) -> np.ndarray:
    """``x`` as finite float64 [n, d], or [n, 2, d] contrast pairs for pair probes, or a DataError."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != (3 if pair else 2) or (pair and x.shape[1] != 2):
        want = "[n, 2, d] contrast pairs" if pair else "[n, d] features"
        raise DataError(f"probe {name!r} needs {want}; got shape {x.shape}")
    if len(x) == 0:
        raise DataError(f"probe {name!r} got no examples")
    if (bad := np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(1))).size:
        raise DataError(f"features for probe {name!r} contain NaN or infinity (first at example {bad[0]})")
    return x


def _labels(y: np.ndarray | None, n: int, name: str, required: bool = True) -> np.ndarray | None:
    """``y`` as int 0/1 [n] with both classes, or None where allowed, or a DataError."""
    if y is None:
        if required:
            raise DataError(f"probe {name!r} needs labels y")
        return None
    y = np.asarray(y)
    if y.shape != (n,):
        raise DataError(f"labels for probe {name!r} must have shape ({n},) to match the features; got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"labels for probe {name!r} must be 0 or 1")
    if np.unique(y).size < 2:
        raise DataError(f"probe {name!r} needs both classes in y; got only {int(y[0])}")
    return y.astype(np.int64)


def _oriented(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """``w`` flipped if it ranks false above true on train, and the bias putting 0 midway between class means."""
    if auroc(y, x @ w) < 0.5:
        w = -w
    middle = (x[y == 0].mean(0) + x[y == 1].mean(0)) / 2
    return w, float(-middle @ w)


def _platt(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Scale and bias making ``a·s + c`` the log-odds of y (logistic regression on the standardised score)."""
    sd = s.std() or 1.0
    model = LogisticRegression(C=PLATT_C, max_iter=1000).fit((s / sd)[:, None], y)
    return float(model.coef_[0, 0] / sd), float(model.intercept_[0])


class Probe(ABC):
    """A linear reader of truth fitted on one layer; the arrays named in ``state`` are all it needs to score."""

    name: ClassVar[str]
    pair: ClassVar[bool] = False  # reads [n, 2, d] contrast pairs rather than [n, d]
    needs_labels: ClassVar[bool] = True
    state: ClassVar[tuple[str, ...]] = ("w", "b")
    w: np.ndarray
    b: np.ndarray | float

    def fit(self, x: np.ndarray, y: np.ndarray | None) -> Probe:
        """Fit on one layer's features ``x`` and labels ``y`` (0/1); returns self."""
        x = _features(x, self.pair, self.name)
        self._fit(x, _labels(y, len(x), self.name, self.needs_labels))
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """Log-odds-like score per example, higher = "true"."""
        x = _features(x, self.pair, self.name)
        if x.shape[-1] != self._width():
            raise DataError(f"probe {self.name!r} was fitted on d={self._width()} features; got d={x.shape[-1]}")
        return self._score(x)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (lists and floats) for saving."""
        return {"name": self.name, **{k: np.asarray(getattr(self, k)).tolist() for k in self.state}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Probe:
        """The probe saved by :meth:`to_dict` (``Probe.from_dict`` picks the class by the saved name)."""
        kind = PROBES.get(d.get("name"))  # type: ignore[arg-type]
        if kind is None or not issubclass(kind, cls):
            raise DataError(f"saved probe {d.get('name')!r} is not a {cls.__name__}; known: {', '.join(PROBES)}")
        if missing := [k for k in kind.state if k not in d]:
            raise DataError(f"saved probe {kind.name!r} lacks {', '.join(missing)}")
        probe = kind()
        for k in kind.state:
            setattr(probe, k, np.asarray(d[k], dtype=np.float64))
        return probe

    def _width(self) -> int:
        return len(self.w)

    def _score(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1) @ self.w + self.b

    @abstractmethod
    def _fit(self, x: np.ndarray, y: np.ndarray | None) -> None: ...


class LogisticProbe(Probe):
    """Logistic regression, L2 ``l2``·||w||² on the mean BCE (bias unpenalised), fitted on standardised
    activations; the result is still a linear function of the raw activations."""

    name = "lr"

    def __init__(self, l2: float = LR_L2) -> None:
        self.l2 = l2

    def _fit(self, x: np.ndarray, y: np.ndarray | None) -> None:
        # sklearn minimises C·Σ BCE + ||w||²/2, which is n/(2·C) times mean BCE + l2·||w||² when C = 1/(2·n·l2).
        # It runs on standardised features and folds the scaling back into w: real models' residual streams
        # have a few dimensions hundreds of times larger than the rest, which makes L-BFGS on raw activations
        # crawl (minutes per layer). The penalty therefore applies to standardised weights.
        x = x.reshape(len(x), -1)
        mean, std = x.mean(0), x.std(0) + 1e-6
        model = LogisticRegression(C=1 / (2 * len(x) * self.l2), max_iter=10_000)
        model.fit((x - mean) / std, y)
        self.w = model.coef_[0] / std
        self.b = float(model.intercept_[0] - mean @ self.w)


class PairLogisticProbe(LogisticProbe):
    """Logistic regression on the concatenated contrast pair [h(neg); h(pos)]."""

    name = "lr-pair"
    pair = True

    def _width(self) -> int:
        return len(self.w) // 2


class DiffInMeansProbe(Probe):
    """Direction of the difference of class means, unit length."""

    name = "dim"

    def _fit(self, x: np.ndarray, y: np.ndarray | None) -> None:
        diff = x[y == 1].mean(0) - x[y == 0].mean(0)
        self.w, self.b = _oriented(diff / (np.linalg.norm(diff) or 1.0), x, y)


class LdaProbe(Probe):
    """Fisher LDA: pinv(S_w)(μ1 − μ0), S_w the pooled within-class covariance (n0Σ0 + n1Σ1)/n."""

    name = "lda"

    def _fit(self, x: np.ndarray, y: np.ndarray | None) -> None:
        means = [x[y == c].mean(0) for c in (0, 1)]
        centred = x - np.where((y == 1)[:, None], means[1], means[0])
        within = centred.T @ centred / len(x)
        self.w, self.b = _oriented(np.linalg.pinv(within, hermitian=True) @ (means[1] - means[0]), x, y)


class RandomProbe(Probe):
    """One seeded random direction, sign fixed on train: the floor a probe must beat (see random_baseline_auroc)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, x: np.ndarray, y: np.ndarray | None) -> None:
        self.w, self.b = _oriented(np.random.default_rng(self.seed).standard_normal(x.shape[1]), x, y)


class _ContrastProbe(Probe):
    """Unsupervised direction on normalised contrast pairs; score = Platt-scaled s(pos) − s(neg)."""

    pair = True
    needs_labels = False
    state = ("mean", "std", "w", "b")

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _normalise(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def _fit(self, x: np.ndarray, y: np.ndarray | None) -> None:
        self.mean, std = x.mean(0), x.std(0)
        self.std = np.where(std > 0, std, 1.0)
        z = self._normalise(x)
        theta = self._direction(z)
        if y is None:
            self.w, self.b = theta, 0.0
            return
        scale, self.b = _platt((z[:, 1] - z[:, 0]) @ theta, y)
        self.w = scale * theta

    def _score(self, x: np.ndarray) -> np.ndarray:
        z = self._normalise(x)
        return (z[:, 1] - z[:, 0]) @ self.w + self.b

    @abstractmethod
    def _direction(self, z: np.ndarray) -> np.ndarray:
        """The probe weight θ [d] from normalised pairs ``z`` [n, 2, d]; its sign may be arbitrary."""


def _ccs_loss(x0: torch.Tensor, x1: torch.Tensor, w: torch.Tensor, b: torch.Tensor, l2: float) -> torch.Tensor:
    p0, p1 = torch.sigmoid(x0 @ w + b), torch.sigmoid(x1 @ w + b)
    consistency = (p0 - (1 - p1)).square().mean()
    confidence = torch.minimum(p0, p1).square().mean()
    return consistency + confidence + l2 * w.square().sum() / 2


def _ccs_run(x0: torch.Tensor, x1: torch.Tensor, w: torch.Tensor, b: torch.Tensor, l2: float, max_iter: int) -> float:
    """Minimise the CCS loss from (w, b) in place by L-BFGS; returns the final loss."""
    optimiser = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = _ccs_loss(x0, x1, w, b, l2)
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        return float(_ccs_loss(x0, x1, w, b, l2))


class CcsProbe(_ContrastProbe):
    """Contrast-consistent search: p(neg) ≈ 1 − p(pos) and confident; best of ``restarts`` seeded L-BFGS runs."""

    name = "ccs"

    def __init__(self, seed: int = 0, restarts: int = 10, l2: float = CCS_L2, max_iter: int = 1000) -> None:
        super().__init__(seed)
        self.restarts, self.l2, self.max_iter = restarts, l2, max_iter

    def _direction(self, z: np.ndarray) -> np.ndarray:
        x0, x1 = torch.from_numpy(z[:, 0]), torch.from_numpy(z[:, 1])
        generator = torch.Generator().manual_seed(self.seed)
        bound = 1 / math.sqrt(z.shape[-1])  # torch.nn.Linear's default (Kaiming-uniform) init, as the reference
        best = (math.inf, np.zeros(z.shape[-1]))
        for _ in range(self.restarts):
            w, b = (torch.rand(size, generator=generator, dtype=torch.float64) for size in (z.shape[-1], 1))
            w, b = ((2 * t - 1).mul(bound).requires_grad_() for t in (w, b))
            loss = _ccs_run(x0, x1, w, b, self.l2, self.max_iter)
            if loss < best[0]:
                best = (loss, w.detach().numpy().copy())
        return best[1]


class CrcProbe(_ContrastProbe):
    """Contrastive representation clustering: the top principal component of h(pos) − h(neg)."""

    name = "crc"

    def _direction(self, z: np.ndarray) -> np.ndarray:
        diff = z[:, 1] - z[:, 0]
        # Randomised SVD (as the reference's pca_lowrank, q=1, niter=10): a full SVD of [4000, 4096] per layer is slow.
        _, _, vt = randomized_svd(diff - diff.mean(0), n_components=1, n_iter=10, random_state=self.seed)
        return vt[0]


PROBES: dict[str, type[Probe]] = {
    kind.name: kind
    for kind in (LogisticProbe, DiffInMeansProbe, LdaProbe, PairLogisticProbe, CcsProbe, CrcProbe, RandomProbe)
}


def _kind(name: str) -> type[Probe]:
    if name not in PROBES:
        raise DataError(f"unknown probe {name!r}; choose one of {', '.join(PROBES)}")
    return PROBES[name]


def fit_layers(name: str, features: np.ndarray, y: np.ndarray | None, **kw: Any) -> list[Probe]:
    """One probe ``name`` (configured by ``kw``) per layer of ``features`` [n, L, d], or [n, L, 2, d] for pairs."""
    kind = _kind(name)
    features = np.asarray(features)
    if features.ndim != (4 if kind.pair else 3):
        want = "[n, L, 2, d]" if kind.pair else "[n, L, d]"
        raise DataError(f"probe {name!r} needs layered features {want}; got shape {features.shape}")
    return [kind(**kw).fit(features[:, layer], y) for layer in range(features.shape[1])]


def score_layers(probes: Sequence[Probe], features: np.ndarray) -> np.ndarray:
    """Scores [n, L]: probe l applied to layer l of ``features``."""
    features = np.asarray(features)
    if features.ndim < 3 or features.shape[1] != len(probes):
        raise DataError(f"need features with {len(probes)} layers on axis 1; got shape {features.shape}")
    return np.stack([probe.score(features[:, layer]) for layer, probe in enumerate(probes)], axis=1)


def _column_aurocs(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of every column of ``scores`` [n, k] at once (Mann-Whitney U, ties count ½)."""
    ranks = rankdata(scores, axis=0)
    pos = y == 1
    n1, n0 = pos.sum(), len(y) - pos.sum()
    return (ranks[pos].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def random_baseline_auroc(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, k: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Test AUROC of ``k`` seeded random directions, each sign-fixed on train: mean and 5%/50%/95% quantiles."""
    x_train, x_test = _features(x_train, False, "random"), _features(x_test, False, "random")
    if x_train.shape[1] != x_test.shape[1]:
        raise DataError(f"train and test features differ in width ({x_train.shape[1]} vs {x_test.shape[1]})")
    y_train = _labels(y_train, len(x_train), "random")
    y_test = _labels(y_test, len(x_test), "random")
    directions = np.random.default_rng(seed).standard_normal((x_train.shape[1], k))
    flip = _column_aurocs(y_train, x_train @ directions) < 0.5
    test = _column_aurocs(y_test, x_test @ directions)
    test = np.where(flip, 1 - test, test)
    q05, q50, q95 = np.quantile(test, [0.05, 0.5, 0.95])
    return {"mean": float(test.mean()), "q05": float(q05), "q50": float(q50), "q95": float(q95)}


def earliest_informative_layer(aurocs: Sequence[float], fraction: float = 0.95) -> int:
    """First layer whose AUROC − 0.5 reaches ``fraction`` of the best layer's (spec §6); L // 2 if none beats 0.5."""
    curve = np.asarray(aurocs, dtype=np.float64)
    if curve.ndim != 1 or len(curve) == 0 or not np.isfinite(curve).all():
        raise DataError("aurocs must be a non-empty list of finite numbers, one per layer")
    best = curve.max()
    if best < 0.5:
        return len(curve) // 2
    return int(np.flatnonzero(curve - 0.5 >= fraction * (best - 0.5))[0])


def pgr(probe_auroc: float, floor: float, ceiling: float) -> float:
    """Performance gap recovered, (probe − floor)/(ceiling − floor); NaN when ceiling == floor."""
    return (probe_auroc - floor) / (ceiling - floor) if ceiling != floor else math.nan

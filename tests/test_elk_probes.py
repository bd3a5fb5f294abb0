"""Probes and the anomaly detector on synthetic features where the truth direction is planted."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from selfknow.elk.anomaly import GaussianAnomalyDetector, anomaly_auroc
from selfknow.elk.probes import (
    PROBES,
    Probe,
    auroc,
    earliest_informative_layer,
    fit_layers,
    pgr,
    random_baseline_auroc,
    score_layers,
)
from selfknow.errors import DataError

D, N = 32, 400


def _unit(rng: np.random.Generator, d: int = D) -> np.ndarray:
    u = rng.standard_normal(d)
    return u / np.linalg.norm(u)


def planted(seed: int, n: int = N, truth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x = noise + 2·(±1)·u with the sign given by y."""
    rng = np.random.default_rng(seed)
    u = _unit(np.random.default_rng(99)) if truth is None else truth
    y = rng.integers(0, 2, n)
    return (rng.standard_normal((n, D)) + 2 * (2 * y - 1)[:, None] * u).astype(np.float32), y, u


def pairs(seed: int, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """h_c = noise + (c == y)·v + a big per-c offset standing for which answer token was appended."""
    rng, fixed = np.random.default_rng(seed), np.random.default_rng(7)
    v, offsets = 2 * _unit(fixed), 20 * fixed.standard_normal((2, D))
    y = rng.integers(0, 2, n)
    hit = (np.arange(2)[None, :] == y[:, None]).astype(float)  # [n, 2]
    x = rng.standard_normal((n, 2, D)) + hit[..., None] * v + offsets
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def single() -> tuple:
    return planted(0), planted(1)


@pytest.fixture(scope="module")
def contrast() -> tuple:
    return pairs(0), pairs(1)


@pytest.mark.parametrize("name", ["lr", "dim", "lda"])
def test_supervised_probes_find_planted_truth(single, name):
    (x, y, _), (xt, yt, _) = single
    assert auroc(yt, PROBES[name]().fit(x, y).score(xt)) > 0.95


def test_lr_minimises_the_reference_objective_on_standardised_features(single):
    (x, y, _), _ = single
    x = x * np.linspace(0.1, 100, x.shape[1])  # dimensions of very different scales, as in real residual streams
    probe = PROBES["lr"]().fit(x, y)
    std = x.std(0) + 1e-6
    residual = 1 / (1 + np.exp(-probe.score(x))) - y  # gradient of mean BCE + 0.001·||w_std||², bias unpenalised
    z = (x - x.mean(0)) / std
    gradient = np.r_[z.T @ residual / N + 2e-3 * probe.w * std, residual.mean()]
    assert np.abs(gradient).max() < 1e-3


def test_diff_in_means_direction_is_the_planted_one(single):
    (x, y, u), _ = single
    assert PROBES["dim"]().fit(x, y).w @ u > 0.9


@pytest.mark.parametrize("name", ["lr-pair", "ccs", "crc"])
def test_contrast_probes_read_truth_despite_answer_token_offset(contrast, name):
    (x, y), (xt, yt) = contrast
    assert auroc(yt, PROBES[name]().fit(x, y).score(xt)) > 0.9


def test_ccs_sign_comes_from_platt_labels(contrast):
    (x, y), (xt, yt) = contrast
    unlabelled = auroc(yt, PROBES["ccs"]().fit(x, None).score(xt))
    assert abs(unlabelled - 0.5) > 0.4  # found the direction, sign unknown
    assert auroc(yt, PROBES["ccs"]().fit(x, y).score(xt)) > 0.9
    assert auroc(1 - yt, PROBES["ccs"]().fit(x, 1 - y).score(xt)) > 0.9


def test_random_baseline_is_chance_on_noise_labels_and_below_supervised(single):
    (x, y, _), (xt, yt, _) = single
    rng = np.random.default_rng(3)
    noise = random_baseline_auroc(x, rng.integers(0, 2, N), xt, rng.integers(0, 2, N), k=500)
    assert abs(noise["mean"] - 0.5) < 0.03 and noise["q05"] < 0.5 < noise["q95"]
    base = random_baseline_auroc(x, y, xt, yt, k=500)
    assert base["q05"] <= base["q50"] <= base["q95"] < auroc(yt, PROBES["dim"]().fit(x, y).score(xt))
    assert base["mean"] > 0.55  # sign fixing uses the planted signal


def test_random_probe_is_seeded_and_sign_fixed(single):
    (x, y, _), _ = single
    a, b, c = (PROBES["random"](seed=s).fit(x, y) for s in (5, 5, 6))
    assert np.array_equal(a.w, b.w) and not np.allclose(a.w, c.w)
    assert auroc(y, a.score(x)) >= 0.5 and auroc(y, c.score(x)) >= 0.5


@pytest.mark.parametrize(
    ("curve", "layer"),
    [
        ([0.5, 0.6, 0.9, 0.98, 1.0], 3),  # 0.98 − 0.5 = 0.48 ≥ 0.95·0.5 = 0.475
        ([0.5, 0.99, 0.7, 1.0], 1),
        ([0.7, 0.7, 0.7], 0),
        ([0.4, 0.45, 0.3, 0.2, 0.1], 2),  # max < 0.5: middle layer
    ],
)
def test_earliest_informative_layer(curve, layer):
    assert earliest_informative_layer(curve) == layer


def test_pgr():
    assert pgr(0.8, 0.6, 1.0) == pytest.approx(0.5)
    assert pgr(0.5, 0.6, 1.0) == pytest.approx(-0.25)
    assert math.isnan(pgr(0.8, 0.7, 0.7))


def test_fit_and_score_layers_shapes(single, contrast):
    (x, y, _), _ = single
    layered = np.stack([x, -x, x[:, ::-1]], axis=1)  # [n, 3, d]
    probes = fit_layers("dim", layered, y)
    assert len(probes) == 3 and score_layers(probes, layered).shape == (N, 3)
    (xp, yp), _ = contrast
    pair_probes = fit_layers("crc", np.stack([xp, xp], axis=1), yp)
    assert score_layers(pair_probes, np.stack([xp, xp], axis=1)[:50]).shape == (50, 2)
    with pytest.raises(DataError, match="needs layered features"):
        fit_layers("crc", layered, y)


@pytest.mark.parametrize("name", sorted(PROBES))
def test_saved_probe_scores_identically(single, contrast, name):
    kind = PROBES[name]
    x, y = contrast[0] if kind.pair else single[0][:2]
    probe = kind().fit(x, y)
    loaded = Probe.from_dict(json.loads(json.dumps(probe.to_dict())))
    assert type(loaded) is kind and np.array_equal(loaded.score(x), probe.score(x))


def test_bad_inputs_raise_one_line_data_errors(single, contrast):
    (x, y, _), _ = single
    (xp, yp), _ = contrast
    cases = [
        (lambda: PROBES["lr-pair"]().fit(x, y), "needs \\[n, 2, d\\]"),
        (lambda: PROBES["lr"]().fit(xp, yp), "needs \\[n, d\\]"),
        (lambda: PROBES["dim"]().fit(np.where(np.arange(D) == 3, np.nan, x), y), "NaN"),
        (lambda: PROBES["lr"]().fit(x, np.ones(N)), "both classes"),
        (lambda: PROBES["lda"]().fit(x, np.zeros(N)), "both classes"),
        (lambda: PROBES["dim"]().fit(x, None), "needs labels"),
        (lambda: PROBES["lr"]().fit(x, y[:-1]), "shape"),
        (lambda: PROBES["dim"]().fit(x, y).score(x[:, :-1]), "d=32"),
        (lambda: fit_layers("nope", x, y), "unknown probe"),
        (lambda: earliest_informative_layer([]), "non-empty"),
    ]
    for call, message in cases:
        with pytest.raises(DataError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)


def test_anomalies_off_the_correlation_are_found_though_marginals_look_normal():
    rng = np.random.default_rng(0)
    layers = 8
    mixing = np.full((layers, layers), 0.9) + 0.1 * np.eye(layers)  # strongly correlated layers
    cov = mixing @ mixing.T
    reference, normal, anomalous = (rng.multivariate_normal(np.zeros(layers), cov, 300) for _ in range(3))
    low = np.linalg.eigh(cov)[1][:, 0]  # least-variance direction
    anomalous += 1.0 * low / np.abs(low).max()  # ≤ 1 per layer against a marginal std ≈ 2.5
    per_layer_z = np.abs(np.r_[normal, anomalous] / reference.std(0)).max(1)
    assert auroc(np.r_[np.zeros(300), np.ones(300)], per_layer_z) < 0.7  # marginals look normal
    detector = GaussianAnomalyDetector().fit(reference)
    assert anomaly_auroc(detector, normal, anomalous) > 0.95
    assert anomaly_auroc(GaussianAnomalyDetector(subtract_diagonal=True).fit(reference), normal, anomalous) > 0.95


def test_anomaly_detector_handles_singular_covariance_and_bad_input():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((100, 3))
    reference = np.c_[base, base[:, 0]]  # a duplicated layer: singular covariance
    assert np.isfinite(GaussianAnomalyDetector().fit(reference).score(reference)).all()
    exact = multivariate_normal(base.mean(0), np.cov(base, rowvar=False)).logpdf(base)
    assert np.allclose(GaussianAnomalyDetector(ridge=0).fit(base).score(base), exact)
    with pytest.raises(DataError, match="\\[n, 4\\]"):
        GaussianAnomalyDetector().fit(reference).score(base)
    with pytest.raises(DataError, match="NaN"):
        GaussianAnomalyDetector().fit(np.where(reference > 2, np.nan, reference))

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from selfknow.confidence.scaling import PlattScaler, TemperatureScaler, fit_scaler, scaler_from_dict
from selfknow.errors import DataError


def synthetic(n: int = 20000, temperature: float = 1.0, shift: float = 0.0, seed: int = 0):
    """Estimator logits z; labels drawn from σ(z / temperature); the estimator reports σ(z + shift)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 3.0, n)
    y = (rng.random(n) < expit(z / temperature)).astype(float)
    return expit(z + shift), y


def nll(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def test_temperature_scaling_recovers_a_known_temperature():
    p, y = synthetic(temperature=2.5)
    assert fit_scaler("temperature", p, y).temperature == pytest.approx(2.5, rel=0.06)


def test_scalers_are_near_identity_on_calibrated_probabilities():
    p, y = synthetic()
    assert fit_scaler("temperature", p, y).temperature == pytest.approx(1.0, abs=0.05)
    platt = fit_scaler("platt", p, y)
    assert platt.a == pytest.approx(1.0, abs=0.05)
    assert platt.b == pytest.approx(0.0, abs=0.05)


def test_platt_removes_a_shift_of_the_logit_that_temperature_cannot():
    p, y = synthetic(shift=2.0)
    platt = fit_scaler("platt", p, y)
    assert platt.b == pytest.approx(-2.0, abs=0.1)
    assert platt.apply(p).mean() == pytest.approx(y.mean(), abs=0.01)
    temperature = fit_scaler("temperature", p, y)
    assert nll(platt.apply(p), y) < nll(temperature.apply(p), y) < nll(p, y)


@pytest.mark.parametrize("method", ["temperature", "platt"])
def test_scaling_leaves_auroc_unchanged(method):
    p, y = synthetic(n=2000, temperature=3.0, shift=-1.0)
    scaled = fit_scaler(method, p, y).apply(p)
    assert roc_auc_score(y, scaled) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_platt_reverses_an_estimator_that_ranks_backwards_and_temperature_does_not():
    p, y = synthetic(n=2000)
    backwards = 1.0 - p
    platt = fit_scaler("platt", backwards, y)
    assert platt.a < 0
    assert roc_auc_score(y, platt.apply(backwards)) == pytest.approx(1.0 - roc_auc_score(y, backwards), abs=1e-12)
    temperature = fit_scaler("temperature", backwards, y)
    assert roc_auc_score(y, temperature.apply(backwards)) == pytest.approx(roc_auc_score(y, backwards), abs=1e-12)


def test_platt_turns_an_uninformative_estimator_into_the_base_rate():
    rng = np.random.default_rng(1)
    p, y = rng.random(5000), (rng.random(5000) < 0.3).astype(float)
    scaled = fit_scaler("platt", p, y).apply(p)
    assert scaled.mean() == pytest.approx(y.mean(), abs=0.01)
    assert scaled.std() < 0.02  # "calibrated", yet it ranks no better than chance


def test_probabilities_of_exactly_zero_and_one_stay_finite():
    p, y = np.array([0.0, 1.0, 0.3, 0.8]), np.array([0.0, 1.0, 1.0, 0.0])
    for method in ("temperature", "platt"):
        scaled = fit_scaler(method, p, y).apply(p)
        assert np.all(np.isfinite(scaled)) and np.all((scaled > 0) & (scaled < 1))


@pytest.mark.parametrize("method", ["temperature", "platt"])
def test_scalers_round_trip_through_json(method):
    p, y = synthetic(n=500, temperature=2.0, shift=0.5)
    scaler = fit_scaler(method, p, y)
    loaded = scaler_from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert type(loaded) is type(scaler)
    np.testing.assert_array_equal(loaded.apply(p), scaler.apply(p))


def test_each_scaler_class_reads_its_own_dict():
    assert TemperatureScaler.from_dict(TemperatureScaler(1.7).to_dict()) == TemperatureScaler(1.7)
    assert PlattScaler.from_dict(PlattScaler(a=0.5, b=-1.0).to_dict()) == PlattScaler(a=0.5, b=-1.0)


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="temperature"):
        fit_scaler("isotonic", np.array([0.2, 0.7]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="platt"):
        scaler_from_dict({"temperature": 2.0})


@pytest.mark.parametrize(
    "p, y, message",
    [
        ([0.2, 0.7], [1.0, 1.0], "both correct and incorrect"),
        ([0.2, 0.7], [0.0, 2.0], "0 or 1"),
        ([0.2, 0.7, 0.5], [0.0, 1.0], "one probability per label"),
    ],
)
def test_bad_calibration_data_is_a_clear_error(p, y, message):
    with pytest.raises(DataError, match=message):
        TemperatureScaler().fit(np.array(p), np.array(y))

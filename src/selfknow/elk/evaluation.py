"""The transfer experiment: probes fit on trusted easy data (Alice, easy) and read on untrusted hard data (Bob, hard).

For every method, one probe per layer is fit on the validation split's Alice-easy examples with Alice's
labels; the layer is the earliest informative one on the test split's Alice-easy examples (spec §6);
AUROC is reported on the test populations against both characters' labels, with bootstrap intervals
for AE → BH. The performance gap recovered places AE → BH between a floor (a last-layer logistic
regression fit to Bob's labels, read on Bob-hard against the truth) and a ceiling (one fit to Alice's
labels, read on Alice-hard). Mechanistic anomaly detection fits a Gaussian to the AE-trained probe's
scores across layers on Alice-easy test examples and asks whether it tells Alice-hard from Bob-hard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from selfknow.elk.anomaly import GaussianAnomalyDetector, anomaly_auroc
from selfknow.elk.probes import (
    PROBES,
    auroc,
    earliest_informative_layer,
    fit_layers,
    pgr,
    random_baseline_auroc,
    score_layers,
)
from selfknow.elk.quirky import QuirkyExample, select
from selfknow.errors import DataError
from selfknow.metrics import bootstrap_interval

Features = tuple[list[str], dict[str, np.ndarray]]  # example ids, and arrays in that order
TEST_POPULATIONS = ("AE", "AH", "BH")


class Population:
    """One population's features and both characters' labels."""

    def __init__(self, examples: Sequence[QuirkyExample], features: Features, name: str, split: str):
        ids, arrays = features
        wanted = {e.id: e for e in select(examples, split=split, population=name)}
        rows = [i for i, example_id in enumerate(ids) if example_id in wanted]
        if not rows:
            raise DataError(
                f"no {name} examples in the {split} features (with few distinct difficulties, e.g. 1-digit "
                "operands, the easy or hard quartile is empty: use more digits or statements)"
            )
        chosen = [wanted[ids[i]] for i in rows]
        self.name, self.n = name, len(rows)
        self.hidden, self.contrast = arrays["hidden"][rows], arrays["contrast"][rows]
        self.log_odds = arrays["log_odds"][rows]
        self.alice = np.array([e.alice_label for e in chosen])
        self.bob = np.array([e.bob_label for e in chosen])

    def features(self, method: str) -> np.ndarray:
        return self.contrast if PROBES[method].pair else self.hidden


def _interval(scores: np.ndarray, labels: np.ndarray, n_boot: int, seed: int) -> list[float]:
    low, high = bootstrap_interval(lambda s, y: auroc(y, s), scores, labels, n=n_boot, seed=seed)
    return [low, high]


def evaluate_probes(
    examples: Sequence[QuirkyExample],
    splits: dict[str, Features],
    methods: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every method's AE → {AE, AH, BH} AUROCs (per layer and at its chosen layer), PGR and anomaly AUROC."""
    train = Population(examples, splits["validation"], "AE", "validation")
    test = {name: Population(examples, splits["test"], name, "test") for name in TEST_POPULATIONS}
    alice_all = Population(examples, splits["validation"], "A", "validation")
    bob_all = Population(examples, splits["validation"], "B", "validation")
    last = train.hidden.shape[1] - 1
    ceiling = auroc(test["AH"].alice, _fit_last(alice_all, alice_all.alice, last).score(test["AH"].hidden[:, last]))
    floor = auroc(test["BH"].alice, _fit_last(bob_all, bob_all.bob, last).score(test["BH"].hidden[:, last]))
    results: dict[str, Any] = {
        "populations": {"train AE": train.n, **{f"test {k}": v.n for k, v in test.items()}},
        "floor": floor,
        "ceiling": ceiling,
        "lm_output": {
            f"{name} vs {whose}": auroc(getattr(p, whose), p.log_odds)
            for name, p in test.items()
            for whose in ("alice", "bob")
        },
        "methods": {},
    }
    for method in methods:
        probes = fit_layers(method, train.features(method), train.alice)
        scores = {name: score_layers(probes, p.features(method)) for name, p in test.items()}  # [n, layers] each
        curves = {
            f"{name} vs {whose}": [auroc(getattr(p, whose), column) for column in scores[name].T]
            for name, p in test.items()
            for whose in ("alice", "bob")
        }
        layer = earliest_informative_layer(curves["AE vs alice"])
        bh = test["BH"]
        bh_scores = scores["BH"][:, layer]
        normal, odd = scores["AH"], scores["BH"]
        detector = GaussianAnomalyDetector().fit(scores["AE"])
        results["methods"][method] = {
            "layer": layer,
            "auroc": {key: curve[layer] for key, curve in curves.items()},
            "ae_to_bh_interval": _interval(bh_scores, bh.alice, n_boot, seed),
            "pgr": pgr(curves["BH vs alice"][layer], floor, ceiling),
            "anomaly_auroc": anomaly_auroc(detector, normal, odd),
            "by_layer": curves,
        }
    dim_layer = results["methods"].get("dim", {}).get("layer", last)
    results["random"] = random_baseline_auroc(
        train.hidden[:, dim_layer], train.alice, test["BH"].hidden[:, dim_layer], test["BH"].alice, seed=seed
    )
    results["random"]["layer"] = dim_layer
    return results


def _fit_last(population: Population, labels: np.ndarray, layer: int):
    return PROBES["lr"]().fit(population.hidden[:, layer], labels)

"""Probes on the frozen model's hidden states at the uncertainty query's last token.

Features come from the cached base-model pass (:mod:`selfknow.confidence.features`), so fitting a
probe costs no model run after the first. The layer is chosen on validation (by NLL), not fixed to the
last one: middle layers often carry more of what the model knows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from selfknow.confidence.base import Context, Estimator, labels, register
from selfknow.confidence.features import base_query_features
from selfknow.data.records import Record

C_GRID = (0.01, 0.1, 1.0)


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _layer_features(records: Sequence[Record], context: Context) -> np.ndarray:
    """[N, layers + 1, d] hidden states at the query's last token, as float32."""
    return base_query_features(records, context).hidden.float().numpy()


def _standardize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (x - mean) / std


@register("probe")
class LinearProbe(Estimator):
    """Logistic regression on one layer's standardized hidden state; layer and L2 strength chosen on
    validation NLL."""

    work = "1 query pass (prompt, answer, question)"

    uses_model = True

    def fit(self, train: Sequence[Record], validation: Sequence[Record], context: Context) -> Estimator:
        self.check_own_answers([*train, *validation], context)
        x_train, x_val = _layer_features(train, context), _layer_features(validation, context)
        y_train, y_val = labels(train), labels(validation)
        best = (np.inf, 0, 0.0)
        for layer in range(1, x_train.shape[1]):
            mean, std = x_train[:, layer].mean(0), x_train[:, layer].std(0) + 1e-6
            for c in C_GRID:
                model = LogisticRegression(C=c, max_iter=2000).fit(_standardize(x_train[:, layer], mean, std), y_train)
                nll = _nll(model.predict_proba(_standardize(x_val[:, layer], mean, std))[:, 1], y_val)
                if nll < best[0]:
                    best = (nll, layer, c)
                    self.arrays = {
                        "mean": torch.tensor(mean),
                        "std": torch.tensor(std),
                        "weight": torch.tensor(model.coef_[0]),
                        "bias": torch.tensor(model.intercept_),
                    }
        self.config.update(layer=best[1], C=best[2], validation_nll=best[0])
        return self

    def score(self, records: Sequence[Record], context: Context) -> np.ndarray:
        self.check_own_answers(records, context)
        x = _layer_features(records, context)[:, self.config["layer"]]
        z = _standardize(x, self.arrays["mean"].numpy(), self.arrays["std"].numpy()) @ self.arrays["weight"].numpy()
        return 1 / (1 + np.exp(-(z + self.arrays["bias"].numpy())))


class _MLP(nn.Module):
    def __init__(self, d: int, width: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Dropout(0.1), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


@register("probe-mlp")
class MLPProbe(Estimator):
    """A one-hidden-layer MLP on standardized hidden states; the layer is picked among the linear
    probe's three best on validation, and training stops at the epoch with the best validation NLL."""

    work = "1 query pass (prompt, answer, question)"

    uses_model = True

    def fit(self, train: Sequence[Record], validation: Sequence[Record], context: Context) -> Estimator:
        self.check_own_answers([*train, *validation], context)
        x_train, x_val = _layer_features(train, context), _layer_features(validation, context)
        y_train, y_val = labels(train), labels(validation)
        ranked = sorted(
            range(1, x_train.shape[1]), key=lambda layer: self._linear_nll(x_train, y_train, x_val, y_val, layer)
        )
        best_nll = np.inf
        for layer in ranked[:3]:
            mean, std = x_train[:, layer].mean(0), x_train[:, layer].std(0) + 1e-6
            state, nll = self._train(
                _standardize(x_train[:, layer], mean, std),
                y_train,
                _standardize(x_val[:, layer], mean, std),
                y_val,
                context.seed,
            )
            if nll < best_nll:
                best_nll = nll
                self.arrays = {"mean": torch.tensor(mean), "std": torch.tensor(std), **state}
                self.config.update(layer=layer, validation_nll=nll, width=128)
        return self

    @staticmethod
    def _linear_nll(x_train, y_train, x_val, y_val, layer: int) -> float:
        mean, std = x_train[:, layer].mean(0), x_train[:, layer].std(0) + 1e-6
        model = LogisticRegression(C=0.1, max_iter=2000).fit(_standardize(x_train[:, layer], mean, std), y_train)
        return _nll(model.predict_proba(_standardize(x_val[:, layer], mean, std))[:, 1], y_val)

    @staticmethod
    def _train(x, y, x_val, y_val, seed: int, epochs: int = 60) -> tuple[dict[str, torch.Tensor], float]:
        torch.manual_seed(seed)
        mlp = _MLP(x.shape[1])
        optimizer = torch.optim.AdamW(mlp.parameters(), lr=1e-3, weight_decay=1e-2)
        xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
        xv, yv = torch.tensor(x_val, dtype=torch.float32), torch.tensor(y_val, dtype=torch.float32)
        loss_fn = nn.BCEWithLogitsLoss()
        generator = torch.Generator().manual_seed(seed)
        best, best_state = np.inf, {}
        for _ in range(epochs):
            mlp.train()
            for index in torch.randperm(len(xt), generator=generator).split(64):
                optimizer.zero_grad()
                loss_fn(mlp(xt[index]), yt[index]).backward()
                optimizer.step()
            mlp.eval()
            with torch.no_grad():
                nll = float(loss_fn(mlp(xv), yv))
            if nll < best:
                best, best_state = nll, {f"mlp.{k}": v.clone() for k, v in mlp.state_dict().items()}
        return best_state, best

    def score(self, records: Sequence[Record], context: Context) -> np.ndarray:
        self.check_own_answers(records, context)
        x = _layer_features(records, context)[:, self.config["layer"]]
        x = _standardize(x, self.arrays["mean"].numpy(), self.arrays["std"].numpy())
        mlp = _MLP(x.shape[1], self.config["width"])
        mlp.load_state_dict({k.removeprefix("mlp."): v for k, v in self.arrays.items() if k.startswith("mlp.")})
        mlp.eval()
        with torch.no_grad():
            return torch.sigmoid(mlp(torch.tensor(x, dtype=torch.float32))).numpy()

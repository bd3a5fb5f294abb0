"""Confidence estimators: one family with one interface (see :mod:`selfknow.confidence.base`).

Importing this package registers every estimator: controls (``constant``, ``dataset-accuracy``),
baselines (``likelihood``, ``choice-logits``, ``verbal``, ``encoder``), the zero-shot query (``query``,
``query-chat``), probes (``probe``, ``probe-mlp``), LoRA estimators (``ct``, ``lora-probe``) and the sampling
estimators read from saved samples (``sampling-counting``, ``sampling-likelihood``,
``sampling-likelihood-corrected``, ``semantic-entropy``, ``semantic-entropy-weighted``).
"""

from selfknow.confidence import baselines, lora, probe, sampling, zero_shot  # noqa: F401  (registration)
from selfknow.confidence.base import ESTIMATORS, Context, Estimator, labels, register

__all__ = ["ESTIMATORS", "Context", "Estimator", "labels", "register"]

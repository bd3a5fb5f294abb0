"""Confidence estimators: one family with one interface (see :mod:`selfknow.confidence.base`).

Importing this package registers every estimator: controls (``constant``, ``dataset-accuracy``),
baselines (``likelihood``, ``choice-logits``, ``verbal``, ``encoder``), the zero-shot query (``query``,
``query-chat``), probes (``probe``, ``probe-mlp``) and LoRA estimators (``ct``, ``lora-probe``).
"""

from selfknow.confidence import baselines, lora, probe, zero_shot  # noqa: F401  (registration)
from selfknow.confidence.base import ESTIMATORS, Context, Estimator, labels, register

__all__ = ["ESTIMATORS", "Context", "Estimator", "labels", "register"]

"""selfknow makes no network call the user did not ask for: loading and training work with the hub unreachable."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import transformers.modeling_utils

from selfknow.confidence.base import ESTIMATORS, Context
from selfknow.models import load_model
from tests.test_tuning import graded


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection and every hub kernelization fails, as on an offline cluster."""

    def refuse(*args, **kwargs):
        raise OSError("the network is unreachable in this test")

    def no_kernels(*args, **kwargs):
        raise AssertionError("transformers' hub kernels were asked for")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(transformers.modeling_utils, "kernelize", no_kernels)


@pytest.mark.parametrize("name", ["ct", "lora-probe"])
def test_training_with_the_hub_unreachable(no_network, tiny_model_dir, name):
    model, tokenizer = load_model(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    assert not model.use_kernels
    model.train()  # transformers kernelizes on a mode change when hub kernels are on
    model.eval()
    context = Context(model=model, tokenizer=tokenizer, progress=False)
    estimator = ESTIMATORS[name](epochs=1, top_layers=1).fit(graded(8, "train"), graded(4, "validation"), context)
    assert np.all(np.isfinite(estimator.score(graded(4, "test"), context)))

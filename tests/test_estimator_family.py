"""The estimator family's shared contract, in every dtype users run: each estimator of each format fits on
answers a tiny model made in that dtype, gives finite probabilities, and scores the same after save and load."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from selfknow.answer import AnswerConfig, answer_records
from selfknow.confidence import baselines
from selfknow.confidence.base import ESTIMATORS, Context, Estimator
from selfknow.confidence.sampling import SamplingEstimator
from selfknow.data.records import Record
from selfknow.models import load_model
from selfknow.pipeline import DEFAULT_ESTIMATORS
from tests.conftest import make_records

DTYPES = ["float32", "bfloat16", "float16"]
SAMPLING = [name for name, cls in ESTIMATORS.items() if issubclass(cls, SamplingEstimator)]
CASES = [(format, name) for format in ("oe", "choice") for name in [*DEFAULT_ESTIMATORS[format], *SAMPLING]]
QUICK = {"ct": {"epochs": 1, "top_layers": 1}, "lora-probe": {"epochs": 1}}  # one epoch keeps the suite fast


def text_embeddings(texts: list[str]) -> np.ndarray:
    """Stands in for MiniLM (its own fp32 model, not the one under test): features from the text itself."""
    return np.array([[len(t) / 50, t.count(" ") / 10, float("1" in t)] for t in texts], dtype=np.float32)


MODELS = [("llama", dtype) for dtype in DTYPES] + [("qwen2", "float32"), ("qwen2", "bfloat16")]


@pytest.fixture(scope="module", params=MODELS, ids=["-".join(m) for m in MODELS])
def dtype_context(request):
    """A tiny Llama (SmolLM2's tokenizer) in each dtype, and a tiny Qwen2 with Qwen2's tokenizer, whose
    merges and letter tokens differ."""
    architecture, dtype = request.param
    folder = request.getfixturevalue("tiny_llama_dir" if architecture == "llama" else "tiny_qwen_dir")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tokenizer = load_model(str(folder), dtype=dtype, device="cpu")
    assert model.dtype == getattr(torch, dtype)
    yield dtype, Context(model=model, tokenizer=tokenizer, progress=False)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def answered(dtype_context) -> dict[str, tuple[list[Record], ...]]:
    """Per format: train, validation and test answers made by the model in this dtype, with three samples
    each, graded by rule (every third one wrong) so both classes appear in every split."""
    _, context = dtype_context
    splits = {}
    for format in ("oe", "choice"):
        records = make_records(24, format, dataset=f"d{format}")
        done, _ = answer_records(
            context.model, context.tokenizer, records, config=AnswerConfig(max_new_tokens=4, samples=3), progress=False
        )
        graded = [dataclasses.replace(r, correct=i % 3 != 0) for i, r in enumerate(done)]
        splits[format] = (graded[:12], graded[12:18], graded[18:])
    return splits


@pytest.mark.parametrize(("format", "name"), CASES)
def test_every_estimator_fits_and_scores_probabilities_in_each_dtype(
    format, name, dtype_context, answered, tmp_path, monkeypatch
):
    monkeypatch.setattr(baselines, "embed_texts", text_embeddings)
    dtype, context = dtype_context
    train, validation, test = answered[format]
    estimator = ESTIMATORS[name](**QUICK.get(name, {})).fit(train, validation, context)
    scores = estimator.score(test, context)
    assert scores.shape == (len(test),), dtype
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1)), (dtype, scores)
    estimator.save(tmp_path / name)
    loaded = Estimator.load(tmp_path / name)
    np.testing.assert_allclose(loaded.score(test, context), scores, atol=1e-6)


def test_zero_shot_confidences_agree_across_dtypes(tiny_llama_dir):
    """A 16-bit model changes rounding, not what is computed: the query's P(correct) stays close to fp32's."""
    records = [
        dataclasses.replace(r, output=f"{i * 8}", scores={"token_logprobs": [-0.1 * i, -0.2]}, correct=True)
        for i, r in enumerate(make_records(6))
    ]
    scores = {}
    for dtype in DTYPES:
        model, tokenizer = load_model(str(tiny_llama_dir), dtype=dtype, device="cpu")
        scores[dtype] = ESTIMATORS["query"]().score(records, Context(model=model, tokenizer=tokenizer, progress=False))
    for dtype in DTYPES[1:]:
        np.testing.assert_allclose(scores[dtype], scores["float32"], atol=0.02, err_msg=dtype)

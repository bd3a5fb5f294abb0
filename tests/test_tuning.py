from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from peft import PeftModel, get_peft_model

from selfknow.confidence.base import Context, Estimator
from selfknow.confidence.lora import CalibrationTuning, LoraProbe
from selfknow.confidence.query import option_ids, render_query
from selfknow.confidence.tuning import (
    CachedQueries,
    CalibrationModel,
    LengthGroupedBatches,
    TuningConfig,
    cache_queries,
    collate,
    divergence,
    num_layers,
    start_layer,
)
from selfknow.data.records import Record
from selfknow.models import load_model


def graded(n: int, split: str) -> list[Record]:
    """Answers whose correctness shows in the text: 'Paris' is right, 'Lyon' is wrong."""
    return [
        Record(
            id=f"{split}/{i}",
            dataset="toy",
            split=split,
            question=f"What is the capital of place {i}?",
            answer="Paris",
            output="Paris" if i % 2 == 0 else "Lyon",
            correct=i % 2 == 0,
        )
        for i in range(n)
    ]


@pytest.fixture
def tiny(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    return model, tokenizer


def _nonzero_lora(peft_model) -> None:
    torch.manual_seed(1)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(std=0.2)


def test_training_on_cached_lower_activations_equals_the_full_forward_pass(tiny):
    model, tokenizer = tiny
    config = TuningConfig(top_layers=1)
    peft_model = get_peft_model(model, config.lora(num_layers(model)))
    _nonzero_lora(peft_model)
    queries = [render_query(r, tokenizer) for r in graded(6, "train")]
    items = cache_queries(peft_model, tokenizer, queries, [1.0] * 6, config)
    options = option_ids(tokenizer, queries[0].text)
    calibration = CalibrationModel(peft_model, start_layer(model, config), options).eval()
    batch = collate(items)
    full = {k: v for k, v in batch.items() if k not in ("hidden", "labels", "base_ids", "base_logprobs")}
    ids = torch.zeros_like(batch["attention_mask"])
    for row, query in enumerate(queries):
        ids[row, ids.shape[1] - len(query.ids) :] = torch.tensor(query.ids)
    with torch.no_grad():
        cached = calibration(**{k: v for k, v in batch.items() if k not in ("labels", "base_ids", "base_logprobs")})
        whole = calibration(input_ids=ids, **full)
    assert len(batch["answer_rows"]) > 0
    torch.testing.assert_close(cached["option_logits"], whole["option_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached["answer_logprobs"], whole["answer_logprobs"], atol=1e-4, rtol=1e-4)


def test_divergences_match_their_definitions():
    torch.manual_seed(0)
    vocab = 5
    base = torch.randn(3, vocab).log_softmax(-1)
    tuned = torch.randn(3, vocab).log_softmax(-1)
    ids = torch.arange(vocab).expand(3, vocab)  # top-k covers the whole vocabulary: divergences are exact
    p, q = tuned.exp(), base.exp()
    m = (p + q) / 2
    expected = {
        "forward_kl": (q * (q.log() - p.log())).sum(-1),
        "reverse_kl": (p * (p.log() - q.log())).sum(-1),
        "jsd": 0.5 * (p * (p.log() - m.log())).sum(-1) + 0.5 * (q * (q.log() - m.log())).sum(-1),
    }
    for kind, value in expected.items():
        torch.testing.assert_close(divergence(tuned, ids, base, kind), value, atol=1e-5, rtol=1e-5)
    assert float(divergence(base, ids, base, "jsd").abs().max()) < 1e-6
    assert float(divergence(tuned, ids, base, "jsd").max()) <= math.log(2)


def test_top_k_divergence_keeps_the_remaining_mass_as_one_outcome():
    base = torch.tensor([[0.5, 0.3, 0.1, 0.1]]).log()
    tuned = torch.tensor([[0.5, 0.3, 0.2, 0.0]]).clamp(min=1e-12).log()
    ids = torch.tensor([[0, 1]])  # top 2 of the base; the rest, 0.2, is the same in both
    assert float(divergence(tuned, ids, base[:, :2], "jsd")) < 1e-6


@pytest.mark.parametrize("estimator", [CalibrationTuning, LoraProbe])
def test_tuned_estimators_learn_save_and_load_in_plain_peft_format(tiny, tmp_path, estimator):
    model, tokenizer = tiny
    context = Context("tiny", model=model, tokenizer=tokenizer, progress=False)
    before = model(input_ids=torch.tensor([[5, 6, 7]])).logits.detach()
    fitted = estimator(top_layers=1, epochs=8, lr=2e-3, batch_size=16).fit(
        graded(48, "train"), graded(16, "validation"), context
    )
    test = graded(16, "test")
    scores = fitted.score(test, context)
    truth = np.array([r.correct for r in test])
    assert scores[truth].min() > scores[~truth].max(), fitted.config["training"]  # the toy task is learned
    fitted.save(tmp_path / "estimator")
    with context.lm.disable_adapter():  # the base model (answers) is untouched by tuning
        torch.testing.assert_close(context.lm(input_ids=torch.tensor([[5, 6, 7]])).logits, before)

    fresh_model, _ = load_model(str(context.model.name_or_path), device="cpu")
    reloaded = Estimator.load(tmp_path / "estimator")
    again = reloaded.score(test, Context("tiny", model=fresh_model, tokenizer=tokenizer, progress=False))
    np.testing.assert_allclose(again, scores, atol=1e-5)
    plain_base, _ = load_model(str(context.model.name_or_path), device="cpu")
    assert isinstance(PeftModel.from_pretrained(plain_base, str(tmp_path / "estimator" / "adapter")), PeftModel)


def test_the_regularizer_needs_no_second_base_pass(tiny):
    model, tokenizer = tiny
    context = Context("tiny", model=model, tokenizer=tokenizer, progress=False)
    calls = []
    hook = model.get_input_embeddings().register_forward_hook(lambda *a: calls.append(1))
    try:
        CalibrationTuning(top_layers=1, epochs=2, batch_size=8, kl_weight=1.0).fit(
            graded(16, "train"), graded(8, "validation"), context
        )
    finally:
        hook.remove()
    assert len(calls) == 2  # one caching pass over train and one over validation, nothing per step


def test_a_model_mismatch_is_an_error(tiny, tmp_path):
    model, tokenizer = tiny
    context = Context("tiny", model=model, tokenizer=tokenizer, progress=False)
    fitted = CalibrationTuning(top_layers=1, epochs=1, batch_size=8).fit(
        graded(8, "train"), graded(4, "validation"), context
    )
    fitted.save(tmp_path / "ct")
    with pytest.raises(Exception, match="trained on model 'tiny'"):
        Estimator.load(tmp_path / "ct").score(graded(2, "test"), Context("other", model=model, tokenizer=tokenizer))


def test_cached_items_hold_the_base_top_k_at_the_answer_positions(tiny):
    model, tokenizer = tiny
    config = TuningConfig(top_layers=1, kl_topk=4)
    records = graded(3, "train")
    items = cache_queries(model, tokenizer, [render_query(r, tokenizer) for r in records], [1, 0, 1], config)
    data = CachedQueries(items)
    for item, record in zip(data.items, records, strict=True):
        assert len(item["answer_positions"]) == len(tokenizer(" " + record.output, add_special_tokens=False).input_ids)
        assert item["base_ids"].shape == (len(item["answer_positions"]), 4)
        assert torch.all(item["base_logprobs"] <= 0)


def test_length_grouped_batches_pad_little_and_are_drawn_from_seed_and_epoch():
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 300, size=300).tolist()
    sampler = LengthGroupedBatches(16, lengths, seed=0)

    def epoch(n: int) -> list[int]:
        sampler.set_epoch(n)
        return list(sampler)

    def padded(order: list[int]) -> float:
        batches = [order[i : i + 16] for i in range(0, len(order), 16)]
        return sum(max(lengths[i] for i in b) * len(b) for b in batches) / sum(lengths)

    first = epoch(0)
    assert sorted(first) == list(range(300))
    assert padded(first) < 0.85 * np.mean([padded(rng.permutation(300).tolist()) for _ in range(5)])
    assert epoch(0) == first and epoch(1) != first  # a resumed epoch sees the same batches
    longest_first = [max(lengths[i] for i in first[j : j + 16]) for j in range(0, 300, 16)]
    assert longest_first != sorted(longest_first, reverse=True)  # not longest to shortest

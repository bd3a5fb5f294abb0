"""The other workflows' trainers (quirky ELK model, Self-RAG generator, backtranslation LoRA) on 16-bit models:
losses stay finite and the adapter learns, as in float32."""

from __future__ import annotations

import json
import math

import pytest
import torch

from selfknow.models import load_model

DTYPES = ["bfloat16", "float16"]


def _taught_loss(model, rows) -> float:
    """Mean cross-entropy of the taught tokens, computed in float32 from the model's logits."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in rows:
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            target = torch.tensor(labels[1:])
            keep = target != -100
            total += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
            count += int(keep.sum())
    return total / count


@pytest.mark.parametrize("dtype", DTYPES)
def test_backtranslation_lora_trains_in_16_bits(tiny_llama_dir, dtype):
    from selfknow.backtranslate.tuning import LoraSettings, backward_rows, train_lora

    model, tokenizer = load_model(str(tiny_llama_dir), dtype=dtype, device="cpu")
    pairs = [(f"Explain item {i}.", f"Item {i} is a thing that does {i * 3} jobs.") for i in range(8)]
    rows = backward_rows(tokenizer, pairs, max_response_tokens=32)
    before = _taught_loss(model, rows)
    peft_model, _ = train_lora(model, tokenizer, rows, LoraSettings(epochs=3.0, lr=5e-3, batch_size=4))
    after = _taught_loss(peft_model, rows)
    assert math.isfinite(after) and after < before - 0.1, (before, after)
    assert peft_model.get_base_model().dtype == getattr(torch, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_self_rag_generator_trains_in_16_bits(tiny_llama_dir, dtype):
    from selfknow.rag.labels import Example
    from selfknow.rag.sequences import format_prompt
    from selfknow.rag.train import GeneratorConfig, train_generator

    model, tokenizer = load_model(str(tiny_llama_dir), dtype=dtype, device="cpu")
    prompt = format_prompt("What is the chemical symbol of iron?")
    examples = [Example("q", prompt, "[No Retrieval]Fe[Utility:5]" + tokenizer.eos_token)] * 8
    peft_model, _ = train_generator(model, tokenizer, examples, GeneratorConfig(epochs=2, batch_size=4))
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = peft_model(input_ids=ids).logits[0, -1]
    assert torch.isfinite(logits).all()


def test_quirky_model_trains_and_is_read_in_bfloat16(tiny_llama_dir, tmp_path):
    from selfknow.elk.run import ElkConfig, ElkRun

    training = {"top_layers": 1, "epochs": 1, "lr": 1e-3, "batch_size": 16, "dropout": 0.0}
    config = ElkConfig(model=str(tiny_llama_dir), statements=100, training=training, dtype="bfloat16")
    run = ElkRun(tmp_path / "elk", config, progress=False)
    run.run(["data", "train"])
    assert run.context.model.dtype == torch.bfloat16
    numbers = json.loads((tmp_path / "elk" / "training.json").read_text())
    assert all(math.isfinite(n) for n in numbers["validation_nll_per_epoch"])
    assert all(0 <= v <= 1 for v in numbers["agreement_on_test"].values())
    _, arrays = run.load_features("test")
    assert all(torch.isfinite(torch.as_tensor(a)).all() for a in arrays.values())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_activation_checkpointing_recomputes_the_layers_and_trains_the_same_adapter(tiny_llama_dir, dtype):
    from selfknow.backtranslate.tuning import LoraSettings, backward_rows, train_lora

    adapters, calls = [], []
    pairs = [(f"Explain item {i}.", f"Item {i} is a thing that does {i * 3} jobs.") for i in range(8)]
    settings = LoraSettings(epochs=2.0, lr=5e-3, batch_size=4)
    for checkpointing in (False, True):
        model, tokenizer = load_model(str(tiny_llama_dir), dtype=dtype, device="cpu")
        calls.append(0)
        model.model.layers[0].mlp.act_fn.register_forward_hook(lambda *_: calls.__setitem__(-1, calls[-1] + 1))
        rows = backward_rows(tokenizer, pairs, max_response_tokens=32)
        peft_model, _ = train_lora(model, tokenizer, rows, settings, gradient_checkpointing=checkpointing)
        adapters.append({n: p.detach().float().clone() for n, p in peft_model.named_parameters() if "lora_" in n})
        assert not any(getattr(layer, "gradient_checkpointing", False) for layer in model.model.layers)
    assert calls == [4, 8]  # 4 steps; with checkpointing each layer runs again in every backward pass
    assert adapters[0].keys() == adapters[1].keys()
    assert any(w.abs().max() > 1e-3 for n, w in adapters[0].items() if "lora_B" in n)  # B starts at zero: it learned
    for name, weight in adapters[0].items():  # the same seeded dropout masks, replayed: bit-identical on the CPU
        torch.testing.assert_close(adapters[1][name], weight, rtol=0, atol=0)

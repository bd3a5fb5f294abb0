"""The vLLM path against a stand-in with vLLM's interface (vLLM itself needs a GPU): same records as transformers."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import TopPLogitsWarper

from selfknow.answer import AnswerConfig, answer_records
from selfknow.models import load_model
from selfknow.prompts import Prompter
from tests.conftest import make_records


class Logprob:
    def __init__(self, logprob: float):
        self.logprob = logprob


class SamplingParams:
    def __init__(
        self, n=1, temperature=1.0, top_p=1.0, seed=None, max_tokens=16, logprobs=None, prompt_logprobs=None,
        stop_token_ids=None,
    ):  # fmt: skip
        assert temperature == 0.0 or seed is not None, "selfknow decodes greedily, or samples with a seed"
        self.n, self.temperature, self.top_p, self.seed = n, temperature, top_p, seed
        self.max_tokens, self.logprobs, self.prompt_logprobs = max_tokens, logprobs, prompt_logprobs
        self.stop_token_ids = stop_token_ids or []


class LLM:
    """vLLM's offline ``LLM.generate`` semantics on a transformers model, one prompt at a time."""

    def __init__(self, model):
        self.model = model

    @torch.no_grad()
    def generate(self, prompts, params, use_tqdm=True):
        results = []
        for k, prompt in enumerate(prompts):
            own = params[k] if isinstance(params, list) else params  # vLLM takes one or one per prompt
            ids = list(prompt["prompt_token_ids"])
            if own.prompt_logprobs is not None:
                scores = self.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
                prompt_logprobs = [None] + [{t: Logprob(float(scores[i, t]))} for i, t in enumerate(ids[1:])]
                results.append(SimpleNamespace(prompt_logprobs=prompt_logprobs, outputs=[]))
                continue
            generator = torch.Generator().manual_seed(own.seed) if own.seed is not None else None
            results.append(SimpleNamespace(outputs=[self._complete(ids, own, generator) for _ in range(own.n)]))
        return results

    def _complete(self, ids, params, generator):
        tokens, logprobs = [], []
        for _ in range(params.max_tokens):
            logits = self.model(input_ids=torch.tensor([ids + tokens])).logits[0, -1].float()
            scores = logits.log_softmax(-1)  # vLLM's raw log-probs, whatever the sampling
            if params.temperature == 0.0:
                token = int(scores.argmax())
            else:
                warped = TopPLogitsWarper(params.top_p)(None, (logits / params.temperature)[None])[0]
                token = int(torch.multinomial(warped.softmax(-1), 1, generator=generator))
            tokens.append(token)
            logprobs.append({token: Logprob(float(scores[token]))})
            if token in params.stop_token_ids:
                break
        return SimpleNamespace(token_ids=tokens, logprobs=logprobs)


LLM.__module__ = "vllm.entrypoints.llm"


@pytest.fixture
def fake_vllm(monkeypatch):
    module, inputs = types.ModuleType("vllm"), types.ModuleType("vllm.inputs")
    module.LLM, module.SamplingParams, module.inputs = LLM, SamplingParams, inputs
    inputs.TokensPrompt = dict
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)


@pytest.mark.parametrize("format", ["oe", "choice"])
def test_the_vllm_engine_writes_the_records_transformers_writes(tiny_llama_dir, fake_vllm, format):
    model, tokenizer = load_model(str(tiny_llama_dir), device="cpu")
    records = make_records(10, format=format)
    config = AnswerConfig(max_new_tokens=6)
    kwargs = {"prompter": Prompter(tokenizer), "config": config, "progress": False}
    expected, _ = answer_records(model, tokenizer, records, **kwargs)
    got, stats = answer_records(LLM(model), tokenizer, records, **kwargs)
    assert [(r.id, r.output, r.prompt) for r in got] == [(r.id, r.output, r.prompt) for r in expected]
    for a, b in zip(got, expected, strict=True):
        if format == "choice":  # log-probabilities, not logits: equal up to one constant per question
            softmax = [
                np.exp(x - np.logaddexp.reduce(x)) for x in (a.scores["choice_logits"], b.scores["choice_logits"])
            ]
            np.testing.assert_allclose(*softmax, atol=1e-4)
        else:
            np.testing.assert_allclose(a.scores["token_logprobs"], b.scores["token_logprobs"], atol=1e-4)
    assert stats.computed_tokens > 0


def test_vllm_samples_are_seeded_per_record_and_choice_samples_match_transformers(tiny_llama_dir, fake_vllm):
    model, tokenizer = load_model(str(tiny_llama_dir), device="cpu")
    config = AnswerConfig(max_new_tokens=5, samples=3, seed=4)
    kwargs = {"prompter": Prompter(tokenizer), "config": config, "progress": False}
    records = make_records(6)
    whole, stats = answer_records(LLM(model), tokenizer, records, **kwargs)
    alone, _ = answer_records(LLM(model), tokenizer, records[3:], **kwargs)  # other batches, as on resume
    assert [r.scores["samples"] for r in alone] == [r.scores["samples"] for r in whole[3:]]
    greedy, _ = answer_records(model, tokenizer, records, **{**kwargs, "config": AnswerConfig(max_new_tokens=5)})
    for record, plain in zip(whole, greedy, strict=True):
        assert record.output == plain.output  # the samples leave the main answer alone
        assert len(record.scores["samples"]) == 3 and record.scores["sampling"]["k"] == 3
        assert all(lp <= 0 for s in record.scores["samples"] for lp in s["token_logprobs"])
        assert all("warped_max_logprobs" not in s for s in record.scores["samples"])  # vLLM does not return it
    assert stats.sampled_tokens == sum(len(s["token_logprobs"]) for r in whole for s in r.scores["samples"])
    assert len({s["text"] for r in whole for s in r.scores["samples"]}) > 1  # drawn, not the argmax
    choice = make_records(6, format="choice")
    on_vllm, _ = answer_records(LLM(model), tokenizer, choice, **kwargs)
    local, _ = answer_records(model, tokenizer, choice, **kwargs)
    assert [[s["text"] for s in r.scores["samples"]] for r in on_vllm] == [
        [s["text"] for s in r.scores["samples"]] for r in local
    ]


def test_the_vllm_engine_says_when_vllm_is_missing(monkeypatch):
    from selfknow.errors import SelfknowError
    from selfknow.vllm_engine import load_vllm

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(SelfknowError, match="pip install vllm"):
        load_vllm("smollm2")

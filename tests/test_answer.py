from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from selfknow.answer import AnswerConfig, answer_records
from selfknow.data.journal import Journal
from selfknow.data.records import LETTERS, read_records
from selfknow.engine import IncrementalText, nucleus_logits
from selfknow.models import load_model
from selfknow.prompts import Prompter, PromptStyle, continuation_token
from tests.conftest import make_records


@pytest.fixture
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


def test_choice_logits_equal_a_plain_forward_pass_of_each_prompt(tiny):
    model, tokenizer = tiny
    prompter = Prompter(tokenizer, PromptStyle(chat=True))
    records = make_records(10, "choice")
    answered, stats = answer_records(
        model, tokenizer, records, prompter=prompter, config=AnswerConfig(batch_size=4), progress=False
    )
    # Gemma's tiny sliding window (8) is shorter than the prompts: no prefix sharing there, by design.
    assert bool(stats.per_prefix) == (model.config.model_type != "gemma3_text")
    for record in answered:
        prompt = prompter.render(record)
        ids = torch.tensor([prompter.encode(prompt)])
        with torch.no_grad():
            last = model(input_ids=ids).logits[0, -1]
        letters = [continuation_token(tokenizer, prompt, c) for c in LETTERS[: len(record.choices)]]
        torch.testing.assert_close(torch.tensor(record.scores["choice_logits"]), last[letters], atol=2e-4, rtol=1e-4)
        assert record.output == LETTERS[int(last[letters].argmax())]


def test_choice_answers_compute_logits_only_at_the_last_position(tiny):
    model, tokenizer = tiny
    widths = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: widths.append(i[0].shape[1]))
    try:
        answer_records(model, tokenizer, make_records(8, "choice"), progress=False)
    finally:
        hook.remove()
    assert widths and set(widths) == {1}


def test_generation_does_not_depend_on_batching(tiny):
    model, tokenizer = tiny
    records = make_records(9, "oe")
    config = AnswerConfig(max_new_tokens=6)
    batched, _ = answer_records(model, tokenizer, records, config=config, progress=False)
    alone, _ = answer_records(
        model, tokenizer, records, config=AnswerConfig(max_new_tokens=6, batch_size=1), progress=False
    )
    assert [r.output for r in batched] == [r.output for r in alone]
    for record in batched:
        assert len(record.scores["token_logprobs"]) <= 6
        assert all(lp <= 0 for lp in record.scores["token_logprobs"])


def test_answers_stop_at_the_end_of_the_line(tiny):
    model, tokenizer = tiny
    answered, _ = answer_records(
        model, tokenizer, make_records(6), config=AnswerConfig(max_new_tokens=12), progress=False
    )
    assert all("\n" not in r.output for r in answered)


def test_length_sorted_batches_keep_padding_small(tiny):
    model, tokenizer = tiny
    _, stats = answer_records(
        model, tokenizer, make_records(64, "choice"), config=AnswerConfig(batch_size=8), progress=False
    )
    assert stats.padding_fraction < 0.10
    if model.config.model_type != "gemma3_text":  # the tiny Gemma's sliding window rules out sharing
        assert stats.computed_tokens < stats.prompt_tokens  # the shared prefix is computed once per group


def test_answering_resumes_from_a_journal_with_a_torn_line(tiny, tmp_path):
    model, tokenizer = tiny
    records = make_records(10, "choice")
    output = tmp_path / "answers.jsonl"
    first, _ = answer_records(model, tokenizer, records[:4], output=tmp_path / "first.jsonl", progress=False)
    journal = Journal(output)
    journal.append(first)
    with journal.path.open("a") as handle:  # a kill in the middle of a write
        handle.write(json.dumps({"id": records[5].id})[:-3])
    answered, stats = answer_records(model, tokenizer, records, output=output, progress=False)
    assert stats.records == 6  # only the records not in the journal were answered
    assert [r.id for r in read_records(output)] == [r.id for r in records]
    assert [r.id for r in answered] == [r.id for r in records]
    assert not list(tmp_path.glob("answers.jsonl.partial-*"))


@pytest.mark.parametrize(
    "text", ["The capital of Peru is Lima.\nNext", "Zürich, São Paulo and Kraków", "東京 is Tokyo 🗼, 42 + 7 = 49"]
)
def test_text_grown_token_by_token_equals_the_whole_decode(tokenizer, text):
    tokens = tokenizer(text, add_special_tokens=False).input_ids
    grown = IncrementalText(tokenizer)
    for k, token in enumerate(tokens, 1):
        so_far = grown.add(token)
        whole = tokenizer.decode(tokens[:k], skip_special_tokens=True)
        assert whole.startswith(so_far) and "\ufffd" not in so_far
    assert grown.text == tokenizer.decode(tokens, skip_special_tokens=True)


def _samples(records) -> dict[str, list[tuple[str, list[float]]]]:
    return {r.id: [(s["text"], s["token_logprobs"]) for s in r.scores["samples"]] for r in records}


def test_samples_share_the_prefill_and_resume_to_the_same_draws(tiny, tmp_path):
    model, tokenizer = tiny
    records = make_records(8, "oe")
    plain, plain_stats = answer_records(
        model, tokenizer, records, config=AnswerConfig(max_new_tokens=5), progress=False
    )
    config = AnswerConfig(max_new_tokens=5, samples=3, seed=4)
    sampled, stats = answer_records(model, tokenizer, records, config=config, progress=False)
    assert [r.output for r in sampled] == [r.output for r in plain]  # the main answer stays greedy
    assert stats.computed_tokens == plain_stats.computed_tokens  # one prefill serves the answer and its samples
    assert stats.sampled_tokens > 0 and stats.generated_tokens == plain_stats.generated_tokens
    draws = _samples(sampled)
    assert all(len(d) == 3 for d in draws.values())
    assert any(text != r.output for r in sampled for text, _ in draws[r.id])  # T = 1 on random weights
    for record in sampled:
        assert record.scores["sampling"] == {"k": 3, "temperature": 1.0, "top_p": 0.95, "seed": 4}
        for sample in record.scores["samples"]:
            # the nucleus renormalizes, so its largest log-prob is at least the drawn token's model log-prob
            assert all(
                t >= lp - 1e-5 for t, lp in zip(sample["warped_max_logprobs"], sample["token_logprobs"], strict=True)
            )
    output = tmp_path / "answers.jsonl"
    answer_records(model, tokenizer, records[2:5], config=config, output=output, progress=False)  # then killed
    resumed, _ = answer_records(
        model, tokenizer, records, config=dataclasses.replace(config, batch_size=3), output=output, progress=False
    )
    for record in resumed:
        got = _samples([record])[record.id]
        assert [text for text, _ in got] == [text for text, _ in draws[record.id]]
        for (_, logprobs), (_, want) in zip(got, draws[record.id], strict=True):
            assert logprobs == pytest.approx(want, abs=1e-4)
    other, _ = answer_records(model, tokenizer, records, config=dataclasses.replace(config, seed=5), progress=False)
    assert _samples(other) != draws


def test_choice_samples_are_draws_from_the_letters_softmax(tiny_llama_dir):
    model, tokenizer = load_model(str(tiny_llama_dir), device="cpu")
    config = AnswerConfig(samples=400, sample_top_p=1.0)
    answered, _ = answer_records(model, tokenizer, make_records(3, "choice"), config=config, progress=False)
    for record in answered:
        probs = torch.tensor(record.scores["choice_logits"]).softmax(-1)
        letters = [s["text"] for s in record.scores["samples"]]
        share = torch.tensor([letters.count(c) / len(letters) for c in LETTERS[: len(record.choices)]])
        torch.testing.assert_close(share, probs, atol=0.08, rtol=0)
        first = record.scores["samples"][0]
        assert first["token_logprobs"] == pytest.approx([float(probs[LETTERS.index(first["text"])].log())], abs=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_samples_in_half_precision(tiny_qwen_dir, dtype):
    model, tokenizer = load_model(str(tiny_qwen_dir), device="cpu", dtype=dtype)
    answered, _ = answer_records(
        model, tokenizer, make_records(4), config=AnswerConfig(max_new_tokens=4, samples=2), progress=False
    )
    for record in answered:
        assert len(record.scores["samples"]) == 2
        assert all(lp <= 0 for s in record.scores["samples"] for lp in s["token_logprobs"])


@pytest.mark.parametrize("top_p", [0.5, 0.95])
def test_the_nucleus_is_transformers_top_p_without_sorting_the_vocabulary(top_p):
    torch.manual_seed(0)
    peaked = torch.randn(6, 5000) * 8  # nuclei of a few tokens: found among the top candidates
    flat = torch.randn(3, 5000) * 0.1  # nuclei of thousands of tokens: the full sort
    logits = torch.cat([peaked, flat])
    want = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(0.8)(None, logits))
    got = nucleus_logits(logits, 0.8, top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    torch.testing.assert_close(got[~torch.isinf(got)], want[~torch.isinf(want)])
    assert (~torch.isinf(got[:6])).sum(-1).max() < 256 < (~torch.isinf(got[6:])).sum(-1).min()

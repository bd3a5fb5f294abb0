"""Answering through an OpenAI-compatible endpoint: a real `selfknow serve` process on loopback, greedy answers
and seeded samples with their log-probs, and every sampling estimator computed from the saved file alone."""

from __future__ import annotations

import sys

import pytest

from selfknow.answer import AnswerConfig, answer_records
from selfknow.api import answer_dataset
from selfknow.cli import main
from selfknow.confidence.base import ESTIMATORS, Context
from selfknow.confidence.sampling import SamplingEstimator
from selfknow.data.journal import Journal
from selfknow.data.records import Record, read_records, write_records
from selfknow.endpoint import Endpoint, kept_logprobs
from selfknow.errors import DataError, SelfknowError
from selfknow.pipeline import Run, RunConfig
from tests.conftest import make_records, serving

NO_MODEL = Context(model=object(), tokenizer=object(), progress=False)  # the saved file is all they read


@pytest.fixture(scope="module")
def server(tiny_llama_dir, tmp_path_factory):
    """`selfknow serve` on a tiny Llama, as a separate process; yields its base URL."""
    with serving(tiny_llama_dir, tmp_path_factory.mktemp("server") / "server.log") as url:
        yield url


CONFIG = AnswerConfig(max_new_tokens=5, samples=3, seed=2)


def test_samples_through_the_endpoint_feed_every_sampling_estimator_from_the_file(server, tmp_path):
    records, output = make_records(6), tmp_path / "answers.jsonl"
    answer_records(Endpoint(server, "tiny", workers=2), None, records, config=CONFIG, output=output, progress=False)
    saved = read_records(output)
    assert [r.id for r in saved] == [r.id for r in records]
    for record in saved:
        assert record.scores["engine"] == "openai" and record.prompt == record.question
        assert len(record.scores["token_logprobs"]) <= 5 and all(lp <= 0 for lp in record.scores["token_logprobs"])
        assert len(record.scores["samples"]) == 3 and record.scores["sampling"]["k"] == 3
    for name, cls in ESTIMATORS.items():
        if not issubclass(cls, SamplingEstimator):
            continue
        if name == "sampling-likelihood":  # the reference's likelihood needs the nucleus, which no API returns
            with pytest.raises(DataError, match="local engine"):
                cls().score(saved, NO_MODEL)
            continue
        scores = cls().score(saved, NO_MODEL)
        assert scores.shape == (6,) and ((scores >= 0) & (scores <= 1)).all(), name
    with pytest.raises(SelfknowError, match="answered through an endpoint"):
        ESTIMATORS["query"]().score(saved, NO_MODEL)
    assert ESTIMATORS["likelihood"]().score(saved, NO_MODEL).shape == (6,)


def test_a_resumed_endpoint_run_has_the_samples_of_an_uninterrupted_one(server, tmp_path):
    records = make_records(5)
    whole, _ = answer_records(Endpoint(server, "tiny"), None, records, config=CONFIG, progress=False)
    output = tmp_path / "answers.jsonl"
    first, _ = answer_records(Endpoint(server, "tiny"), None, records[:2], config=CONFIG, progress=False)
    Journal(output).append(first)  # a run killed after two questions
    resumed, stats = answer_records(
        Endpoint(server, "tiny"), None, records, config=CONFIG, output=output, progress=False
    )
    assert stats.records == 3
    assert [r.scores["samples"] for r in resumed] == [r.scores["samples"] for r in whole]
    assert [r.output for r in resumed] == [r.output for r in whole]


def test_the_cli_answers_through_an_endpoint_and_says_what_it_lacks(server, tmp_path, monkeypatch, capsys):
    data, output = tmp_path / "toy.jsonl", tmp_path / "answers.jsonl"
    write_records(data, make_records(3))
    args = ["selfknow", "answer", f"jsonl:{data}", "-o", str(output), "--engine", "openai", "--model", "tiny"]
    monkeypatch.setattr(sys, "argv", [*args, "--base-url", server, "--samples", "2", "--max-new-tokens", "4"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert (exit_info.value.code or 0) == 0
    assert all(len(r.scores["samples"]) == 2 for r in read_records(output))
    monkeypatch.setattr(sys, "argv", [*args[:4], str(tmp_path / "b.jsonl"), *args[5:]])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code != 0 and "--base-url" in capsys.readouterr().err


def test_the_endpoints_own_verbal_confidence_is_kept_and_read_without_a_model(server, tmp_path, monkeypatch):
    data, output = tmp_path / "toy.jsonl", tmp_path / "answers.jsonl"
    write_records(data, make_records(3))
    args = ["selfknow", "answer", f"jsonl:{data}", "-o", str(output), "--engine", "openai", "--model", "tiny"]
    monkeypatch.setattr(sys, "argv", [*args, "--base-url", server, "--verbal", "--max-new-tokens", "4"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert (exit_info.value.code or 0) == 0
    saved = read_records(output)
    assert all(isinstance(r.scores["verbal_reply"], str) for r in saved)  # a second turn, served
    for record, reply in zip(saved, ["0.8", "It is 30%", "no idea"], strict=True):
        record.scores["verbal_reply"] = reply  # what a model that answers with a number would have said
    verbal = ESTIMATORS["verbal"](default=0.5)
    assert verbal.score(saved, NO_MODEL) == pytest.approx([0.8, 0.3, 0.5])
    assert verbal.config["parse_failures"] == 1
    assert "made when answering" in verbal.work_per_question(saved)
    del saved[1].scores["verbal_reply"]
    with pytest.raises(DataError, match="has no kept verbal reply"):
        verbal.score(saved, NO_MODEL)
    with pytest.raises(SelfknowError, match="openai engine"):
        answer_dataset(f"jsonl:{data}", model="tiny", split=None, verbal=True, progress=False)


def test_log_probs_are_cut_with_the_answer():
    content = [{"token": t, "logprob": -0.1 * (i + 1)} for i, t in enumerate([" Lima", ".", "\n", "Next"])]
    assert kept_logprobs(content, "Lima.") == pytest.approx([-0.1, -0.2])
    assert kept_logprobs(None, "Lima.") is None


def test_a_local_model_scores_an_endpoints_answers_in_a_run(server, tiny_qwen_dir, tmp_path):
    """Cross-model confidence for a model behind an API: its answers, a local Qwen2's estimators beside the
    sampling ones, in one calibration run."""
    questions = [
        Record(
            id=f"q/{i}",
            dataset=f"d{i % 2}",
            split=("train", "validation", "test")[i % 3],
            question=f"{i} + {i}?",
            answer="x",
        )
        for i in range(36)
    ]
    answered, _ = answer_records(
        Endpoint(server, "tiny"), None, questions, config=AnswerConfig(max_new_tokens=4), progress=False
    )
    for i, record in enumerate(questions):  # the served model's own answer is gold for half the questions
        record.answer = (answered[i].output or "x") if i % 2 == 0 else "no such answer"
    write_records(tmp_path / "toy.jsonl", questions)
    settings = RunConfig(
        model=str(tiny_qwen_dir), dataset=f"jsonl:{tmp_path / 'toy.jsonl'}", max_new_tokens=4, bootstrap=20,
        estimators=["constant", "likelihood", "probe", "sampling-counting"], samples=2,
        answers_from="tiny", answers_url=server,
    )  # fmt: skip
    summary = Run(tmp_path / "run", settings, progress=False).run()
    assert {"probe", "sampling-counting", "likelihood"} <= set(summary["metrics"])
    test = read_records(tmp_path / "run" / "answers" / "test.jsonl")
    assert all(r.scores["engine"] == "openai" and len(r.scores["samples"]) == 2 for r in test)

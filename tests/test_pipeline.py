"""The whole calibration pipeline on a tiny model: tune → evaluate → ask, resumability and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from selfknow.answer import AnswerConfig, answer_records
from selfknow.ask import Asker
from selfknow.data.records import Record, read_records, write_records
from selfknow.errors import SelfknowError
from selfknow.metrics import within_group_auroc
from selfknow.models import load_model
from selfknow.pipeline import Run, RunConfig
from selfknow.prompts import Prompter

ESTIMATORS = ["constant", "dataset-accuracy", "likelihood", "query", "probe", "ct"]
OPTIONS = {"ct": {"top_layers": 1, "epochs": 2, "batch_size": 8}}


@pytest.fixture(scope="module")
def dataset(tiny_llama_dir, tmp_path_factory) -> Path:
    """Questions whose gold is the tiny model's own greedy answer for half of them, so both grades occur."""
    model, tokenizer = load_model(str(tiny_llama_dir), device="cpu")
    records = []
    for i in range(80):
        split = "train" if i < 40 else "validation" if i < 60 else "test"
        records.append(
            Record(
                id=f"toy/{i}", dataset=f"toy{i % 2}", split=split, question=f"What is {i} plus {i}?", answer=str(2 * i)
            )
        )
    answered, _ = answer_records(
        model, tokenizer, records, prompter=Prompter(tokenizer), config=AnswerConfig(max_new_tokens=4), progress=False
    )
    for i, record in enumerate(records):
        record.answer = (answered[i].output or "x") if i % 2 == 0 else "no such answer"
    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    write_records(path, records)
    return path


def config(tiny_llama_dir, dataset) -> RunConfig:
    return RunConfig(
        model=str(tiny_llama_dir),
        dataset=f"jsonl:{dataset}",
        estimators=list(ESTIMATORS),
        options=OPTIONS,
        bootstrap=50,
        max_new_tokens=4,
    )


def test_tune_writes_every_stage_and_a_report_and_resumes(tiny_llama_dir, dataset, tmp_path):
    run = Run(tmp_path / "run", config(tiny_llama_dir, dataset), progress=False)
    summary = run.run()
    assert set(summary["metrics"]) >= {f"{n}{v}" for n in ESTIMATORS for v in ("", "+ts", "+platt")}
    assert summary["best"].split("+")[0] not in ("constant", "dataset-accuracy")
    assert summary["versions"]["torch"] and summary["config"]["seed"] == 0
    for name in ("metrics.json", "report.md", "reliability.png", "histogram.png", "risk_coverage.png"):
        assert (tmp_path / "run" / "evaluation" / name).stat().st_size > 0
    report = (tmp_path / "run" / "evaluation" / "report.md").read_text()
    assert all(f"| {name} |" in report for name in ESTIMATORS)
    scored = read_records(tmp_path / "run" / "scores" / "test.jsonl")
    assert all(len(r.confidences) == 3 * len(ESTIMATORS) for r in scored)
    before = {p: p.stat().st_mtime for p in (tmp_path / "run").rglob("*") if p.is_file() and "evaluation" not in str(p)}
    Run(tmp_path / "run", progress=False).run()  # resuming a finished run redoes nothing but the evaluation
    assert {p: p.stat().st_mtime for p in before} == before


def test_sampling_estimators_join_the_run_with_samples_on_validation_and_test_and_a_cost_column(
    tiny_llama_dir, dataset, tmp_path
):
    sampling = ["sampling-counting", "semantic-entropy"]
    settings = replace(config(tiny_llama_dir, dataset), estimators=["constant", "likelihood", *sampling])
    assert settings.samples == 10  # asking for a sampling estimator draws the reference's k
    summary = Run(tmp_path / "run", replace(settings, samples=3), progress=False).run()
    answers = {split: read_records(tmp_path / "run" / "answers" / f"{split}.jsonl") for split in ("train", "test")}
    assert all("samples" not in r.scores for r in answers["train"])  # zero-shot estimators read no training samples
    assert all(len(r.scores["samples"]) == 3 for r in answers["test"])
    assert set(summary["metrics"]) >= {f"{n}{v}" for n in sampling for v in ("", "+ts", "+platt")}
    assert summary["costs"]["sampling-counting"].startswith("3 samples, ")
    assert summary["costs"]["likelihood"].startswith("none: the answer's saved token log-probs; scoring ")
    report = (tmp_path / "run" / "evaluation" / "report.md").read_text()
    assert "cost per question |" in report and "| 3 samples, " in report
    with pytest.raises(SelfknowError, match="samples"):  # a run is bound to its samples
        Run(tmp_path / "run", replace(settings, samples=5), progress=False)
    defaults = RunConfig(samples=2)
    assert set(sampling) <= set(defaults.estimators) and "ct" in defaults.estimators


def test_a_run_can_score_another_models_answers(tiny_llama_dir, tiny_qwen_dir, dataset, tmp_path):
    """Cross-model confidence: Qwen2's estimators fitted on the tiny Llama's answers."""
    estimators = ["constant", "likelihood", "query", "probe"]
    settings = replace(config(tiny_qwen_dir, dataset), estimators=estimators, answers_from=str(tiny_llama_dir))
    summary = Run(tmp_path / "cross", settings, progress=False).run()
    assert {"query", "probe+platt"} <= set(summary["metrics"])
    own = Run(tmp_path / "own", replace(config(tiny_llama_dir, dataset), estimators=["constant"]), progress=False)
    own.run(["answer"])
    for split in ("train", "test"):
        cross = read_records(tmp_path / "cross" / "answers" / f"{split}.jsonl")
        assert [r.output for r in cross] == [r.output for r in read_records(own.answers(split))]
    with pytest.raises(SelfknowError, match="scores the answers of"):  # serving would answer with Qwen2
        Asker(tmp_path / "cross")


def test_ask_answers_like_the_base_model_in_a_fresh_process(tiny_llama_dir, dataset, tmp_path):
    Run(tmp_path / "run", config(tiny_llama_dir, dataset), progress=False).run()
    question = "What is 3 plus 3?"
    model, tokenizer = load_model(str(tiny_llama_dir), device="cpu")
    probe = Record(id="q", dataset="toy", split="test", question=question, answer="6")
    base_answer = answer_records(
        model, tokenizer, [probe], prompter=Prompter(tokenizer), config=AnswerConfig(max_new_tokens=4), progress=False
    )[0][0].output
    for estimator in ("ct", "ct+ts", "probe"):
        reply = Asker(tmp_path / "run", estimator).ask(question)[0]
        assert reply.answer == base_answer and 0.0 <= reply.confidence <= 1.0 and reply.estimator == estimator
    out = subprocess.run(
        [sys.executable, "-m", "selfknow.cli", "ask", question, "--run", str(tmp_path / "run"), "--estimator", "ct"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert base_answer in out and "P(correct)" in out


def test_a_run_directory_refuses_another_model(tiny_llama_dir, tiny_gemma_dir, dataset, tmp_path):
    Run(tmp_path / "run", config(tiny_llama_dir, dataset), progress=False)
    other = config(tiny_gemma_dir, dataset)
    with pytest.raises(SelfknowError, match="differs in model"):
        Run(tmp_path / "run", other)


def test_fitting_ungraded_records_is_an_error_that_keeps_the_answers(tiny_llama_dir, dataset, tmp_path):
    run = Run(tmp_path / "run", config(tiny_llama_dir, dataset), progress=False)
    run.run(["answer"])
    answers = (tmp_path / "run" / "answers" / "train.jsonl").read_text()
    with pytest.raises(SelfknowError, match="no grade"):
        run.run(["fit"])
    assert (tmp_path / "run" / "answers" / "train.jsonl").read_text() == answers


def test_grades_made_before_the_grade_stage_are_kept(tiny_llama_dir, dataset, tmp_path):
    """A judge's grades (``selfknow grade --strategy judge`` between stages) are what the run fits on."""
    settings = replace(config(tiny_llama_dir, dataset), estimators=["constant", "dataset-accuracy"])
    run = Run(tmp_path / "run", settings, progress=False)
    run.run(["answer"])
    judged = {}
    for split in ("train", "validation", "test"):
        path = tmp_path / "run" / "answers" / f"{split}.jsonl"
        records = [replace(r, correct=i % 3 == 0, grader="judge") for i, r in enumerate(read_records(path))]
        write_records(path, records)
        judged.update({r.id: r.correct for r in records})
    run.run(["grade", "fit", "score"])
    scored = read_records(tmp_path / "run" / "scores" / "test.jsonl")
    assert {r.grader for r in scored} == {"judge"} and all(r.correct == judged[r.id] for r in scored)


def test_training_answers_of_one_class_are_a_clear_error(tiny_llama_dir, dataset, tmp_path):
    run = Run(tmp_path / "run", config(tiny_llama_dir, dataset), progress=False)
    run.run(["answer", "grade"])
    path = tmp_path / "run" / "answers" / "train.jsonl"
    write_records(path, [replace(r, correct=False) for r in read_records(path)])
    with pytest.raises(SelfknowError, match=r"all \d+ training answers are wrong"):
        run.run(["fit"])


def test_unknown_estimators_and_settings_are_named(tmp_path):
    with pytest.raises(SelfknowError, match="unknown estimator"):
        RunConfig(estimators=["magic"])
    (tmp_path / "c.json").write_text(json.dumps({"modle": "x"}))
    with pytest.raises(SelfknowError, match="unknown setting"):
        RunConfig.from_file(tmp_path / "c.json")


def test_transfer_applies_the_fitted_estimators_to_another_dataset(tiny_llama_dir, dataset, tmp_path):
    run = Run(tmp_path / "run", config(tiny_llama_dir, dataset), progress=False)
    run.run()
    summary = run.transfer(f"jsonl:{dataset}", name="again", split="validation")
    assert summary["records"] == 20 and not summary["skipped"]
    assert (tmp_path / "run" / "transfer" / "again" / "evaluation" / "report.md").exists()
    assert set(summary["metrics"]) == set(read_records(tmp_path / "run" / "scores" / "test.jsonl")[0].confidences)


def test_two_processes_under_accelerate_tune_to_the_same_scores_as_one(tiny_llama_dir, dataset, tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"bootstrap": 20, "max_new_tokens": 4}))
    args = ["-m", "selfknow.cli", "tune", "--config", str(settings), "-m", str(tiny_llama_dir)]
    args += ["--dataset", f"jsonl:{dataset}", "--estimators", "dataset-accuracy,query,probe"]
    subprocess.run([sys.executable, *args[:3], str(tmp_path / "one"), *args[3:]], check=True, capture_output=True)
    accelerate = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2"]
    subprocess.run([*accelerate, *args[:3], str(tmp_path / "two"), *args[3:]], check=True, capture_output=True)
    one, two = (read_records(tmp_path / run / "scores" / "test.jsonl") for run in ("one", "two"))
    assert [(r.id, r.output, r.correct) for r in one] == [(r.id, r.output, r.correct) for r in two]
    for a, b in zip(one, two, strict=True):
        assert set(a.confidences) == set(b.confidences)
        for name, value in a.confidences.items():
            assert b.confidences[name] == pytest.approx(value, abs=1e-4), name
    assert (tmp_path / "two" / "evaluation" / "report.md").exists()


def test_abstention_thresholds_come_from_validation_and_are_checked_on_test(tiny_llama_dir, dataset, tmp_path):
    run = Run(tmp_path / "run", config(tiny_llama_dir, dataset), progress=False)
    run.run()
    summary = run.abstention_report(risk=0.6, delta=0.2)
    assert json.loads((tmp_path / "run" / "evaluation" / "abstention.json").read_text()) == summary
    for row in summary["estimators"].values():
        assert 0 <= row["coverage"] <= 1 and 0 <= row["test_coverage"] <= 1
        if row["threshold"] is None:  # nothing could be certified: abstain on everything
            assert row["coverage"] == 0 and row["test_coverage"] == 0
    asker = Asker(tmp_path / "run", "constant", risk=0.6, delta=0.2)
    assert asker.threshold == run.abstention("constant", 0.6, 0.2)
    reply = asker.ask("What is 3 plus 3?")[0]
    assert reply.abstained == (reply.confidence < asker.threshold.threshold)
    with pytest.raises(SelfknowError, match="no validation scores for 'nope'"):
        run.abstention("nope", 0.1)
    from typer.testing import CliRunner

    from selfknow.cli import app

    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "run"), "--risk", "0.6", "--delta", "0.2"])
    assert result.exit_code == 0 and "Abstention at target risk 0.6" in result.output and "constant" in result.output


def test_tune_from_the_command_line_in_bfloat16_runs_every_stage(
    tiny_llama_dir, dataset, tmp_path, monkeypatch, capsys
):
    from tests.test_cli import run_cli

    run_dir, settings = tmp_path / "bf16", tmp_path / "settings.json"
    settings.write_text(json.dumps({"bootstrap": 50, "max_new_tokens": 4}))
    args = ["tune", str(run_dir), "--config", str(settings), "-m", str(tiny_llama_dir), "--dataset", f"jsonl:{dataset}"]
    args += ["--dtype", "bfloat16"]
    args += ["--device", "cpu", "--estimators", ",".join(ESTIMATORS), "--option", "ct.top_layers=1"]
    code, stdout, stderr = run_cli(monkeypatch, capsys, *args, "--option", "ct.epochs=1")
    assert code == 0, stderr
    assert json.loads((run_dir / "config.json").read_text())["dtype"] == "bfloat16"
    summary = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert set(summary["metrics"]) >= set(ESTIMATORS)
    assert "best on validation" in stdout
    code, _, stderr = run_cli(monkeypatch, capsys, *args[:-4], "--dtype", "float32")
    assert code != 0 and "dtype" in stderr  # a bf16 run is not resumed in another dtype


def test_transfer_after_fitting_answers_with_the_base_model(tiny_llama_dir, dataset, tmp_path):
    """Estimators fitted in this process leave adapters in the model; a later transfer still answers with the
    base model, as a fresh process would."""
    run = Run(tmp_path / "run", config(tiny_llama_dir, dataset), progress=False)
    run.run()
    for name, parameter in run.context.lm.named_parameters():  # make the ct adapter, if it were on, visible
        if "lora_B" in name:
            parameter.data.normal_(std=2.0, generator=torch.Generator().manual_seed(0))
    run.transfer(f"jsonl:{dataset}", name="same-process", split="validation")
    Run(tmp_path / "run", progress=False).transfer(f"jsonl:{dataset}", name="fresh", split="validation")
    outputs = {
        name: [r.output for r in read_records(tmp_path / "run" / "transfer" / name / "answers.jsonl")]
        for name in ("same-process", "fresh")
    }
    assert outputs["same-process"] == outputs["fresh"]


def test_held_out_families_are_never_fitted_on_choose_the_served_estimator_and_are_reported_apart(
    tiny_llama_dir, dataset, tmp_path, monkeypatch
):
    """Three families (two datasets, one split in two tasks); "toy1/b" is held out of all fitting."""
    records = read_records(dataset)
    for i, record in enumerate(records):  # the fixture's grades alternate, so every family has both
        record.dataset, record.task = [("toy0", "a"), ("toy1", "a"), ("toy1", "b")][i % 3]
    data = tmp_path / "families.jsonl"
    write_records(data, records)
    from selfknow.confidence.baselines import Likelihood

    seen: list[str] = []
    fit = Likelihood.fit

    def spy(self, train, validation, context):
        seen.extend(f"{r.dataset}/{r.task}" for r in [*train, *validation])
        return fit(self, train, validation, context)

    monkeypatch.setattr(Likelihood, "fit", spy)
    settings = replace(
        config(tiny_llama_dir, data), estimators=["constant", "likelihood", "probe"], hold_out=["toy1/b"]
    )
    summary = Run(tmp_path / "run", settings, progress=False).run()
    assert seen and "toy1/b" not in seen and {"toy0/a", "toy1/a"} <= set(seen)
    assert summary["selected_on"] == "validation questions of the held-out families"
    away = json.loads((tmp_path / "run" / "evaluation" / "out-of-family" / "metrics.json").read_text())
    test = [r for r in records if r.split == "test"]
    # The held-out family's train questions are not answered for training; they are tested out of family.
    outside = [r for r in records if r.task == "b" and r.dataset == "toy1" and r.split in ("train", "test")]
    assert away["records"] == len(outside) and summary["records"] == sum(r not in outside for r in test)
    train_ids = {r.id for r in read_records(tmp_path / "run" / "answers" / "train.jsonl")}
    assert train_ids and not train_ids & {r.id for r in outside}
    assert summary["out_of_family"]["probe"]["auroc"] == away["metrics"]["probe"]["auroc"]
    assert "## In family and out of family" in (tmp_path / "run" / "evaluation" / "report.md").read_text()
    assert "within-task AUROC" in (tmp_path / "run" / "evaluation" / "report.md").read_text()
    scored = [r for r in read_records(tmp_path / "run" / "scores" / "test.jsonl") if r.task == "a"]  # in family
    by_family = within_group_auroc(
        [r.confidences["probe"] for r in scored], [r.correct for r in scored], [r.dataset for r in scored]
    )
    assert summary["metrics"]["probe"]["within_task_auroc"]["value"] == pytest.approx(by_family)
    with pytest.raises(SelfknowError, match="no question of the held-out family toy9"):
        Run(tmp_path / "other", replace(settings, hold_out=["toy9"]), progress=False).run()


def test_an_estimator_that_platt_scaling_reverses_is_named_in_the_report(tiny_llama_dir, dataset, tmp_path):
    cheap = replace(config(tiny_llama_dir, dataset), estimators=["constant", "dataset-accuracy", "likelihood"])
    run = Run(tmp_path / "run", cheap, progress=False)
    run.run()
    assert "reversed_by_platt" not in json.loads((tmp_path / "run" / "evaluation" / "metrics.json").read_text())
    scalers_path = tmp_path / "run" / "estimators" / "likelihood" / "scalers.json"
    scalers = json.loads(scalers_path.read_text())
    scalers["platt"]["a"] = -abs(scalers["platt"]["a"]) - 0.5  # as a fit on backwards-ranking scores leaves it
    scalers_path.write_text(json.dumps(scalers))
    summary = run.evaluate()
    assert summary["reversed_by_platt"] == {"likelihood": scalers["platt"]["a"]}
    report = (tmp_path / "run" / "evaluation" / "report.md").read_text()
    assert "## Reversed by Platt scaling" in report and "**likelihood**: Platt slope -" in report

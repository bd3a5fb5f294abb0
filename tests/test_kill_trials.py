"""Kill -9 trials: long jobs killed at seeded random moments, then rerun, end with the files an uninterrupted
run writes: no record lost, duplicated or corrupted, no journal left behind."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.test_cli import toy_file
from tests.test_pipeline import dataset  # noqa: F401  (the graded toy dataset fixture)

KILLS = 2  # kills per trial, each at a seeded moment of an uninterrupted run's duration
ENV = {**os.environ, "SELFKNOW_CHECKPOINT_SECONDS": "0"}  # a training checkpoint after every step, to resume from


def run(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - start


def killed_then_finished(command: list[str], duration: float, seed: int) -> list[float]:
    """Start ``command`` and SIGKILL it ``KILLS`` times at seeded moments, then let a last run finish."""
    rng = random.Random(seed)
    moments = sorted(rng.uniform(0.3, 0.95) * duration for _ in range(KILLS))
    for moment in moments:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        time.sleep(moment)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
    run(command)
    return moments


def without_timings(value):
    """A JSON value with its wall-clock fields removed (they differ between any two runs)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not k.endswith("seconds") and k != "timings"}
    return [without_timings(v) for v in value] if isinstance(value, list) else value


def contents(root: Path, patterns: list[str]) -> dict[str, object]:
    """Each matching file's text (JSON documents parsed, without timings; tensors as bytes), keyed by its path."""
    found = {}
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            key = str(path.relative_to(root))
            if path.suffix == ".safetensors":
                found[key] = path.read_bytes()
            else:
                text = path.read_text()
                found[key] = without_timings(json.loads(text)) if path.suffix == ".json" else text
    return found


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "selfknow.cli", *args]


def test_answer_and_grade_killed_at_random_end_like_an_uninterrupted_run(tmp_path, tiny_llama_dir):
    data = toy_file(tmp_path, n=40)
    outputs = {}
    for name in ("reference", "killed"):
        folder = tmp_path / name
        folder.mkdir()
        answer = cli("answer", f"jsonl:{data}", "--split", "all", "-o", str(folder / "a.jsonl"))
        answer += ["-m", str(tiny_llama_dir), "--batch-size", "4", "--max-new-tokens", "6"]
        grade = cli("grade", str(folder / "a.jsonl"))
        if name == "reference":
            durations = (run(answer), run(grade))
        else:
            killed_then_finished(answer, durations[0], seed=0)
            killed_then_finished(grade, durations[1], seed=1)
        outputs[name] = contents(folder, ["*"])
    assert set(outputs["killed"]) == {"a.jsonl"}  # no journal or temporary file left
    assert outputs["killed"] == outputs["reference"]
    assert all(json.loads(line)["correct"] is not None for line in outputs["killed"]["a.jsonl"].splitlines())


def test_tune_killed_at_random_resumes_to_the_same_answers_and_scores(tmp_path, tiny_llama_dir, dataset):  # noqa: F811
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps({"bootstrap": 50, "max_new_tokens": 4, "options": {"ct": {"epochs": 1, "top_layers": 1}}})
    )
    files = ["answers/*.jsonl", "scores/*.jsonl", "estimators/*/scalers.json", "estimators/*/estimator.json"]
    outputs = {}
    for name in ("reference", "killed"):
        command = cli("tune", str(tmp_path / name), "--config", str(settings), "-m", str(tiny_llama_dir))
        command += ["--dataset", f"jsonl:{dataset}", "--estimators", "constant,likelihood,probe,ct"]
        if name == "reference":
            duration = run(command)
        else:
            killed_then_finished(command, duration, seed=2)
        outputs[name] = contents(tmp_path / name, files)
        assert (tmp_path / name / "evaluation" / "metrics.json").exists()
        assert not list((tmp_path / name).rglob("*.partial-*")) and not list((tmp_path / name).rglob("*.tmp*"))
    assert len(outputs["reference"]) == 3 + 2 + 4 + 4  # answers, scores (validation, test), two files per estimator
    assert outputs["killed"] == outputs["reference"]


def test_elk_run_killed_at_random_resumes_to_the_same_data_model_and_features(tmp_path, tiny_llama_dir):
    files = ["data/*.jsonl", "training.json", "adapter/*.safetensors", "features/*.safetensors", "evaluation/*.json"]
    outputs = {}
    for name in ("reference", "killed"):
        command = cli("elk", "run", str(tmp_path / name), "-m", str(tiny_llama_dir), "--statements", "400")
        command += ["--epochs", "1", "--top-layers", "1", "--methods", "lr,dim", "--bootstrap", "20"]
        if name == "reference":
            duration = run(command)
        else:
            killed_then_finished(command, duration, seed=3)
        outputs[name] = contents(tmp_path / name, files)
    assert {"training.json", "evaluation/metrics.json"} <= set(outputs["reference"])
    assert outputs["killed"] == outputs["reference"]


def test_rag_train_and_evaluate_killed_at_random_end_like_an_uninterrupted_run(tmp_path, tiny_llama_dir):
    from tests.test_rag_run import _index_args

    files = ["*.jsonl", "retrieved.json", "training.json", "calibration/scores/*.jsonl", "adapter/*.safetensors"]
    files += ["evaluation/metrics.json"]
    outputs = {}
    run(cli(*_index_args(tmp_path / "reference", tiny_llama_dir)))
    shutil.copytree(tmp_path / "reference", tmp_path / "killed")  # the same index and settings
    for name in ("reference", "killed"):
        folder = tmp_path / name
        train, evaluate = cli("rag", "train", str(folder)), cli("rag", "evaluate", str(folder))
        if name == "reference":
            durations = (run(train), run(evaluate))
        else:
            killed_then_finished(train, durations[0], seed=4)
            killed_then_finished(evaluate, durations[1], seed=5)
        outputs[name] = contents(folder, files)
        assert not (folder / "checkpoints").exists() and not list(folder.rglob("*.partial-*"))
    assert {"training.json", "results.jsonl", "adapter/adapter_model.safetensors"} <= set(outputs["reference"])
    assert outputs["killed"] == outputs["reference"]


def test_backtranslate_killed_at_random_resumes_to_the_same_adapters_and_report(tmp_path, tiny_llama_dir):
    from tests.test_backtranslate_run import _user_data

    seed, pool = _user_data(tmp_path)
    files = ["*.jsonl", "data.json", "training.json", "adapters/*/adapter_model.safetensors", "evaluation/*.json"]
    outputs = {}
    for name in ("reference", "killed"):
        command = cli("backtranslate", str(tmp_path / name), "-m", str(tiny_llama_dir), "--seed-source")
        command += [f"user:{seed}", "--pool-source", f"user:{pool}", "--held-out", "5", "--backward-epochs", "1"]
        command += ["--forward-epochs", "1", "--labelled", "25", "--bootstrap", "20", "--reading", "rank"]
        if name == "reference":
            duration = run(command)
        else:
            killed_then_finished(command, duration, seed=6)
        outputs[name] = contents(tmp_path / name, files)
        assert not (tmp_path / name / "checkpoints").exists()
    assert len([k for k in outputs["reference"] if k.startswith("adapters/")]) == 5
    assert outputs["killed"] == outputs["reference"]

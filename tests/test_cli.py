from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfknow.cli import main
from selfknow.data.records import read_records, write_records
from tests.conftest import make_records


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process the way the console script does; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["selfknow", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def toy_file(tmp_path: Path, n: int = 12, format: str = "oe") -> Path:
    path = tmp_path / f"toy-{format}.jsonl"
    write_records(path, make_records(n, format))
    return path


def test_answer_with_samples_stores_them_and_rejects_a_bad_setting(monkeypatch, capsys, tmp_path, tiny_llama_dir):
    data, out = toy_file(tmp_path, n=4), tmp_path / "answers.jsonl"
    args = ["answer", f"jsonl:{data}", "--model", str(tiny_llama_dir), "--max-new-tokens", "3"]
    code, stdout, _ = run_cli(monkeypatch, capsys, *args, "-o", str(out), "--samples", "2", "--seed", "3")
    assert code == 0 and "wrote 4 records" in stdout
    records = read_records(out)
    assert all(len(r.scores["samples"]) == 2 and r.scores["sampling"]["seed"] == 3 for r in records)
    code, _, stderr = run_cli(monkeypatch, capsys, *args, "-o", str(tmp_path / "b.jsonl"), "--samples", "-1")
    assert code != 0 and "samples must be 0 or more" in stderr


@pytest.mark.parametrize("format", ["oe", "choice"])
def test_answer_then_grade_writes_graded_records_and_prints_accuracy(
    monkeypatch, capsys, tmp_path, tiny_llama_dir, format
):
    data, out = toy_file(tmp_path, format=format), tmp_path / "answers.jsonl"
    code, stdout, _ = run_cli(
        monkeypatch,
        capsys,
        "answer",
        f"jsonl:{data}",
        "-o",
        str(out),
        "--model",
        str(tiny_llama_dir),
        "--format",
        format,
        "--max-new-tokens",
        "4",
    )
    assert code == 0 and "wrote 12 records" in stdout
    code, stdout, _ = run_cli(monkeypatch, capsys, "grade", str(out))
    graded = read_records(out)
    assert code == 0 and "accuracy" in stdout
    assert all(r.correct is not None and r.grader for r in graded)
    assert {r.grader for r in graded} == {"choice" if format == "choice" else "numeric"}


def test_every_command_has_help(monkeypatch, capsys):
    from selfknow.cli import app

    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert {"answer", "grade", "tune", "evaluate", "ask", "serve"} <= set(commands)
    for command in commands:
        code, stdout, _ = run_cli(monkeypatch, capsys, command, "--help")
        assert code == 0 and "Usage" in stdout


def test_serving_a_bare_model_with_a_target_risk_is_refused_clearly(monkeypatch, capsys, tiny_llama_dir):
    code, _, stderr = run_cli(monkeypatch, capsys, "serve", str(tiny_llama_dir), "--risk", "0.1")
    assert code == 1 and "need a run directory with graded validation answers" in stderr


def test_datasets_lists_every_source(monkeypatch, capsys):
    from selfknow.data.registry import SOURCES

    code, stdout, _ = run_cli(monkeypatch, capsys, "datasets")
    assert code == 0 and all(name in stdout for name in SOURCES)


BAD_INPUTS = {
    "malformed csv": ("csv", "question,answer\nWhat?,yes\nWhy?,no,extra\n", "malformed CSV"),
    "missing column": ("csv", "question,reply\nWhat?,yes\n", "answer"),
    "empty file": ("csv", "", "empty"),
    "malformed jsonl": ("jsonl", '{"question": "What?", "answer": "yes"}\n{"question": \n', "malformed JSON"),
    "latin-1 csv": ("csv", "question,answer\nCaf\u00e9?,oui\n".encode("latin-1"), ":2: not UTF-8"),
    "binary csv": ("csv", bytes(range(256)), "not UTF-8"),
    "nul in a csv field": ("csv", "question,answer\nWhat\x00?,yes\n", ":2: a NUL byte"),
    "control character in a csv field": ("csv", "question,answer\nWhat\x1b?,yes\n", ":2: field 1 holds the control"),
    "control character in a jsonl field": (
        "jsonl",
        '{"question": "W\\u0007?", "answer": "y"}\n',
        ":1: column 'question'",
    ),
    "a list where text belongs": ("jsonl", '{"question": ["W?"], "answer": "y"}\n', "must be text, got list"),
    "latin-1 jsonl": ("jsonl", '{"question": "Caf\u00e9?", "answer": "oui"}\n'.encode("latin-1"), "not UTF-8"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_files_fail_with_one_line_and_leave_existing_output_alone(
    monkeypatch, capsys, tmp_path, tiny_llama_dir, case
):
    kind, text, message = BAD_INPUTS[case]
    data = tmp_path / f"bad.{kind}"
    data.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "answers.jsonl"
    out.write_text("precious\n")
    code, _, stderr = run_cli(
        monkeypatch, capsys, "answer", f"{kind}:{data}", "-o", str(out), "-m", str(tiny_llama_dir)
    )
    assert code == 1 and message in stderr and str(data) in stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: ")
    assert out.read_text() == "precious\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["answer", "no-such-set", "-o", "x.jsonl"], "unknown dataset 'no-such-set'"),
        (["answer", "countries", "-o", "x.jsonl", "-m", "./no/such/model"], "model path not found"),
        (["answer", "countries", "-o", "x.jsonl", "--split", "nope"], "no 'nope' split"),
        (["grade", "missing.jsonl"], "file not found"),
    ],
)
def test_unknown_names_fail_with_one_line(monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_cli(monkeypatch, capsys, *args)
    assert code == 1 and message in stderr and stderr.count("\n") == 1


def test_grading_an_unanswered_file_is_an_error_that_keeps_the_file(monkeypatch, capsys, tmp_path):
    data = toy_file(tmp_path)
    before = data.read_text()
    code, _, stderr = run_cli(monkeypatch, capsys, "grade", str(data))
    assert code == 1 and "has no output" in stderr
    assert data.read_text() == before


def test_killing_answer_midway_and_rerunning_loses_and_duplicates_nothing(tmp_path, tiny_llama_dir):
    data, out = toy_file(tmp_path, n=120), tmp_path / "answers.jsonl"
    command = [
        sys.executable,
        "-m",
        "selfknow.cli",
        "answer",
        f"jsonl:{data}",
        "-o",
        str(out),
        "-m",
        str(tiny_llama_dir),
        "--batch-size",
        "4",
        "--max-new-tokens",
        "8",
    ]
    journal = tmp_path / "answers.jsonl.partial-0"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # generous: a loaded machine starts the process slowly
    while time.time() < deadline and (not journal.exists() or journal.read_text().count('"id"') < 8):
        assert process.poll() is None, "the run finished before it could be killed; make it longer"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = journal.read_text().count('"id"')
    assert 8 <= done_before < 120 and not out.exists()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [r.id for r in read_records(data)]
    assert not journal.exists()


@pytest.mark.parametrize("format", ["choice", "oe"])
def test_two_processes_under_accelerate_give_the_records_of_one(tmp_path, tiny_llama_dir, format):
    data = toy_file(tmp_path, n=30, format=format)
    args = ["-m", "selfknow.cli", "answer", f"jsonl:{data}", "-m", str(tiny_llama_dir), "-f", format]
    if format == "oe":
        args += ["--max-new-tokens", "6"]
    accelerate = Path(sys.executable).with_name("accelerate")
    subprocess.run([sys.executable, *args, "-o", str(tmp_path / "one.jsonl")], check=True, capture_output=True)
    subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", *args, "-o", str(tmp_path / "two.jsonl")],
        check=True,
        capture_output=True,
    )
    one, two = read_records(tmp_path / "one.jsonl"), read_records(tmp_path / "two.jsonl")
    assert [(r.id, r.output) for r in one] == [(r.id, r.output) for r in two]
    key = "choice_logits" if format == "choice" else "token_logprobs"
    for a, b in zip(one, two, strict=True):
        assert a.scores[key] == pytest.approx(b.scores[key], abs=1e-4)


def test_two_process_calibration_tuning_matches_one_process_at_the_same_effective_batch(tmp_path, tiny_llama_dir):
    script = Path(__file__).parent / "scripts" / "tune_tiny.py"
    accelerate = Path(sys.executable).with_name("accelerate")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run([sys.executable, str(script), str(tiny_llama_dir), str(one), "16"], check=True, capture_output=True)
    launch = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", str(script)]
    subprocess.run([*launch, str(tiny_llama_dir), str(two), "8"], check=True, capture_output=True)
    single, double = json.loads(one.read_text()), json.loads(two.read_text())
    assert (single["processes"], double["processes"]) == (1, 2)
    assert single["validation_nll_per_epoch"][-1] < single["validation_nll_per_epoch"][0]  # it learned something
    assert double["validation_nll_per_epoch"] == pytest.approx(single["validation_nll_per_epoch"], abs=2e-3)
    assert double["scores"] == pytest.approx(single["scores"], abs=2e-3)


def test_serving_a_missing_model_fails_at_once_with_a_clear_error(monkeypatch, capsys, tmp_path):
    code, _, stderr = run_cli(monkeypatch, capsys, "serve", str(tmp_path / "no-such-model"))
    assert code == 1 and "model path not found" in stderr


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_folder_where_a_file_belongs_fails_with_one_line(monkeypatch, capsys, tmp_path, kind):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, _, stderr = run_cli(monkeypatch, capsys, "answer", f"{kind}:{folder}", "-o", str(tmp_path / "out.jsonl"))
    assert code == 1 and "a folder" in stderr and str(folder) in stderr and stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'"What is 2 + 2\x00?",3,4,5,6,B\n', "a NUL byte"),
        ("Caf\u00e9?,3,4,5,6,B\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_mmlu_files_with_bad_text_fail_with_one_line(monkeypatch, capsys, tmp_path, raw, message):
    folder = tmp_path / "mmlu"
    folder.mkdir()
    (folder / "algebra_test.csv").write_bytes(raw)
    code, _, stderr = run_cli(
        monkeypatch, capsys, "answer", f"mmlu-csv:{folder}", "-f", "choice", "-o", str(tmp_path / "out.jsonl")
    )
    assert code == 1 and message in stderr and "algebra_test.csv:1" in stderr and stderr.count("\n") == 1

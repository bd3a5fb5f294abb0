"""The whole ELK workflow on a tiny model: data → quirky model → features → probes, report, resume."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from selfknow.cli import app
from selfknow.elk.run import ElkConfig, ElkRun
from selfknow.errors import SelfknowError

METHODS = "lr,dim,lda,lr-pair,ccs,crc"


def test_elk_run_writes_every_stage_and_resumes(tiny_llama_dir, tmp_path):
    args = ["elk", "run", str(tmp_path / "elk"), "-m", str(tiny_llama_dir), "--statements", "800"]
    args += ["--epochs", "1", "--top-layers", "1", "--methods", METHODS, "--bootstrap", "50"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "elk"
    for path in ("data/examples.jsonl", "adapter/adapter_model.safetensors", "training.json"):
        assert (out / path).exists(), path
    for path in ("features/validation.safetensors", "features/test.safetensors"):
        assert (out / path).stat().st_size > 0
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert set(metrics["methods"]) == set(METHODS.split(","))
    for row in metrics["methods"].values():
        assert 0 <= row["layer"] < 2 and 0 <= row["auroc"]["BH vs alice"] <= 1
        assert len(row["by_layer"]["BH vs alice"]) == 2
        low, high = row["ae_to_bh_interval"]
        assert low <= row["auroc"]["BH vs alice"] <= high
    training = json.loads((out / "training.json").read_text())
    assert [c["settings"]["lr"] for c in training["candidates"]] == [1e-3, 2e-4]  # the default sweep
    assert training["best_validation_nll"] == min(c["best_validation_nll"] for c in training["candidates"])
    agreement = training["agreement_on_test"]
    assert {f"{c} context vs {w}'s labels" for c in ("Alice", "Bob") for w in ("Alice", "Bob")} <= set(agreement)
    assert all(0 <= v <= 1 for v in agreement.values())
    report = (out / "evaluation" / "report.md").read_text()
    assert "AE→BH vs Alice" in report and "| ccs |" in report
    assert "| 0.0002 |" in report and "Training settings tried" in report
    assert (out / "evaluation" / "auroc_by_layer.png").stat().st_size > 0

    before = {p: p.stat().st_mtime for p in out.rglob("*") if p.is_file() and "evaluation" not in str(p)}
    assert CliRunner().invoke(app, args).exit_code == 0  # resuming redoes only the evaluation
    assert {p: p.stat().st_mtime for p in before} == before

    with pytest.raises(SelfknowError, match="other settings"):
        ElkRun(out, ElkConfig(model=str(tiny_llama_dir), statements=100))


class Killed(Exception):
    """Stands for a kill -9 at the point a patched function is reached."""


def test_killed_training_and_extraction_redo_only_unsaved_parts(tiny_qwen_dir, tmp_path, monkeypatch):
    import selfknow.confidence.tuning as tuning
    import selfknow.elk.run as elk_run
    import selfknow.elk.training as training

    settings = {"top_layers": 1, "epochs": 1, "lr": 1e-3, "batch_size": 16, "dropout": 0.0}
    config = ElkConfig(model=str(tiny_qwen_dir), statements=200, training=settings, methods=["lr"], bootstrap=20)
    run, out = ElkRun(tmp_path / "elk", config, progress=False), tmp_path / "elk"
    run.run(["data"])
    monkeypatch.setattr(elk_run, "part_rows", lambda model: 40)

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(training, "train_adapter", killed)  # killed once the base pass is saved
    with pytest.raises(Killed):
        run.run(["train"])
    assert list((out / "checkpoints").glob("activations-*.safetensors"))
    monkeypatch.undo()
    monkeypatch.setattr(elk_run, "part_rows", lambda model: 40)
    computed = []
    original_cache = tuning.cache_queries
    monkeypatch.setattr(tuning, "cache_queries", lambda *a, **k: computed.append(1) or original_cache(*a, **k))
    run.run(["train"])
    assert computed == []  # the rerun read the base pass back instead of computing it
    assert not (out / "checkpoints").exists()

    validation = [e for e in run.examples() if e.split == "validation"]
    parts = -(-len(validation) // 40)
    assert parts >= 3
    calls = []
    original_forward = elk_run.forward_queries

    def killed_on_second_part(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(elk_run, "forward_queries", killed_on_second_part)
    with pytest.raises(Killed):
        run.run(["extract"])
    assert len(list((out / "features" / "validation-parts").glob("*.safetensors"))) == 1
    calls.clear()
    monkeypatch.setattr(elk_run, "forward_queries", lambda *a, **k: calls.append(1) or original_forward(*a, **k))
    run.run(["extract"])
    assert len(calls) == parts - 1  # only the parts the kill lost
    assert not (out / "features" / "validation-parts").exists()
    ids, arrays = run.load_features("validation")
    assert ids == [e.id for e in validation] and arrays["hidden"].shape[0] == len(validation)


def test_a_sweep_keeps_the_lowest_validation_nll_and_a_kill_retrains_only_the_lost_candidate(
    tiny_qwen_dir, tmp_path, monkeypatch
):
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    import selfknow.elk.run as elk_run

    settings = {"top_layers": 1, "epochs": 1, "lr": [1e-3, 1e-2], "batch_size": 16, "dropout": 0.0}
    config = ElkConfig(model=str(tiny_qwen_dir), statements=200, training=settings, methods=["lr"], bootstrap=20)
    out = tmp_path / "elk"
    run = ElkRun(out, config, progress=False)
    assert [c["lr"] for c in run.candidates()] == [1e-3, 1e-2]
    run.run(["data"])
    real_training, trained, weights = elk_run.train_quirky, [], {}
    nll = {"quirky-0": 0.9, "quirky-1": 0.3}  # stands in for validation: the second candidate must win

    def training(peft_model, name, *args, kill: bool = False, **kwargs):
        numbers = real_training(peft_model, name, *args, **kwargs)
        trained.append(name)
        if kill and name == "quirky-1":
            raise Killed
        weights[name] = {k: v.clone() for k, v in get_peft_model_state_dict(peft_model, adapter_name=name).items()}
        return numbers | {"best_validation_nll": nll[name]}

    monkeypatch.setattr(elk_run, "train_quirky", lambda *a, **k: training(*a, kill=True, **k))
    with pytest.raises(Killed):
        run.run(["train"])
    assert (out / "checkpoints" / "candidate-0" / "numbers.json").exists()
    trained.clear()
    monkeypatch.setattr(elk_run, "train_quirky", training)
    numbers = ElkRun(out, progress=False).run(["train"])
    assert trained == ["quirky-1"]  # the first candidate was read back, not trained again
    assert numbers["settings"]["lr"] == 1e-2 and numbers["best_validation_nll"] == 0.3
    assert [c["best_validation_nll"] for c in numbers["candidates"]] == [0.9, 0.3]
    kept = load_file(out / "adapter" / "adapter_model.safetensors")
    assert set(kept) == set(weights["quirky-1"])
    assert all(torch.equal(kept[k], weights["quirky-1"][k]) for k in kept)
    assert not (out / "checkpoints").exists()

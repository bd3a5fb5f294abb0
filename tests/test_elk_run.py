"""The whole ELK workflow on a tiny model: data → quirky model → features → probes, report, resume."""

from __future__ import annotations

import json

import pytest
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
    agreement = json.loads((out / "training.json").read_text())["agreement_on_test"]
    assert {f"{c} context vs {w}'s labels" for c in ("Alice", "Bob") for w in ("Alice", "Bob")} <= set(agreement)
    assert all(0 <= v <= 1 for v in agreement.values())
    report = (out / "evaluation" / "report.md").read_text()
    assert "AE→BH vs Alice" in report and "| ccs |" in report
    assert (out / "evaluation" / "auroc_by_layer.png").stat().st_size > 0

    before = {p: p.stat().st_mtime for p in out.rglob("*") if p.is_file() and "evaluation" not in str(p)}
    assert CliRunner().invoke(app, args).exit_code == 0  # resuming redoes only the evaluation
    assert {p: p.stat().st_mtime for p in before} == before

    with pytest.raises(SelfknowError, match="other settings"):
        ElkRun(out, ElkConfig(model=str(tiny_llama_dir), statements=100))

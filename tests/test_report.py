from __future__ import annotations

import numpy as np
import pytest

from selfknow.errors import SelfknowError
from selfknow.metrics import evaluate_scores
from selfknow.report import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def scored():
    """Two estimators scoring the same 60 graded answers from three datasets."""
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=60)
    correct = (rng.uniform(size=60) < truth).astype(int)
    groups = np.array(["arithmetic", "geography", "mmlu"] * 20)
    scores = {"probe": truth, "verbal": np.clip(truth + rng.normal(0, 0.3, 60), 0, 1).round(1)}
    results = {name: evaluate_scores(conf, correct, groups, n_boot=20) for name, conf in scores.items()}
    return results, scores, correct, groups


def test_write_report_writes_the_markdown_and_three_plots(tmp_path, scored):
    paths = write_report(tmp_path / "out", *scored, title="Tiny")
    assert set(paths) == {"report", "reliability", "histogram", "risk_coverage"}
    assert paths["report"] == tmp_path / "out" / "report.md"
    for name in ("reliability", "histogram", "risk_coverage"):
        assert paths[name].read_bytes().startswith(PNG_SIGNATURE)


def test_report_table_has_a_row_per_estimator(tmp_path, scored):
    text = write_report(tmp_path, *scored)["report"].read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| probe |", "| verbal |"))]
    assert len(rows) == 2
    assert "within-dataset AUROC" in text
    assert "sel. acc. @0.8" in text


def test_report_breaks_metrics_down_by_dataset(tmp_path, scored):
    text = write_report(tmp_path, *scored)["report"].read_text()
    assert "## By dataset" in text
    assert text.count("| geography | 20 |") == 3  # ECE, AUROC and Brier tables


def test_report_without_groups_has_no_dataset_breakdown(tmp_path, scored):
    results, scores, correct, _ = scored
    text = write_report(tmp_path, results, scores, correct)["report"].read_text()
    assert "## By dataset" not in text


def test_report_rejects_scores_of_the_wrong_length(tmp_path, scored):
    results, scores, correct, groups = scored
    with pytest.raises(SelfknowError, match="59 scores for 60 records"):
        write_report(tmp_path, results, {**scores, "probe": scores["probe"][:-1]}, correct, groups)

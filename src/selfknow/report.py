"""Reports that compare estimators scoring the same graded answers: Markdown tables and three plots.

:func:`write_report` takes, per estimator, its :func:`~selfknow.metrics.evaluate_scores` result and the
confidences behind it, and writes ``report.md`` (the metrics with bootstrap intervals, a per-dataset breakdown and
the metric definitions), ``reliability.png``, ``histogram.png`` and ``risk_coverage.png``. Plots are drawn on
:class:`matplotlib.figure.Figure` objects, which render PNGs with Agg and never touch pyplot's global state or a
display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from selfknow.errors import DataError
from selfknow.metrics import METRICS, auroc, brier, ece, reliability_bins, risk_coverage_curve
from selfknow.writing import write_text

COLUMNS = {
    "ece": "ECE ↓",
    "adaptive_ece": "adaptive ECE ↓",
    "brier": "Brier ↓",
    "nll": "NLL ↓",
    "auroc": "AUROC ↑",
    "within_group_auroc": "within-dataset AUROC ↑",
    "within_task_auroc": "within-task AUROC ↑",
    "auprc": "AUPRC ↑",
    "aurc": "AURC ↓",
}
BY_DATASET = {"ECE ↓": ece, "AUROC ↑": auroc, "Brier ↓": brier}
Result = Mapping[str, Mapping[str, float]]


def _number(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3f}"


def family_table(inside: Mapping[str, Result], outside: Mapping[str, Result], best: str) -> str:
    """In-family and out-of-family AUROC, ECE and Brier side by side: what carries to new kinds of question."""
    rows = [
        "## In family and out of family",
        f"Fitted on some question families, tested on their test questions (in) and on those of families held "
        f"out of all fitting (out). The served estimator, **{best}**, was chosen on the held-out families' "
        "validation questions.",
        "",
        "| estimator | AUROC in ↑ | AUROC out ↑ | ECE in ↓ | ECE out ↓ | Brier in ↓ | Brier out ↓ |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in inside:
        if name in outside:
            cells = [_cell(side[name].get(m)) for m in ("auroc", "ece", "brier") for side in (inside, outside)]
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _cell(metric: Mapping[str, float] | None) -> str:
    """'value [low, high]', or just the value when there is no interval, or '—' when there is no value."""
    if metric is None or math.isnan(metric["value"]):
        return "—"
    if math.isnan(metric["low"]):
        return _number(metric["value"])
    return f"{metric['value']:.3f} [{metric['low']:.3f}, {metric['high']:.3f}]"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _coverage_columns(results: Mapping[str, Result]) -> list[str]:
    keys = {key for result in results.values() for key in result if key.startswith("selective_accuracy@")}
    return sorted(keys, key=lambda key: float(key.split("@")[1]))


def metric_table(results: Mapping[str, Result], costs: Mapping[str, str] | None = None) -> str:
    """One row per estimator, one column per metric, each cell 'value [low, high]'; with ``costs`` (per
    estimator, shared by its scaled variants "name+ts"), a last column saying what a question costs it."""
    coverages = _coverage_columns(results)
    header = ["estimator", *COLUMNS.values(), *(f"sel. acc. @{key.split('@')[1]} ↑" for key in coverages)]
    rows = [[name, *(_cell(result.get(key)) for key in [*COLUMNS, *coverages])] for name, result in results.items()]
    if costs:
        header.append("cost per question")
        rows = [[*row, costs.get(name.split("+")[0], "—")] for row, name in zip(rows, results, strict=True)]
    return _markdown(header, rows)


def dataset_tables(scores: Mapping[str, np.ndarray], correct: np.ndarray, groups: np.ndarray) -> str:
    """Per metric of :data:`BY_DATASET`, a table with a row per dataset and a column per estimator (point values)."""
    names = sorted(set(groups))
    sections = []
    for title, metric in BY_DATASET.items():
        rows = []
        for name in names:
            mask = groups == name
            cells = [_number(metric(scores[est][mask], correct[mask])) for est in scores]
            rows.append([name, str(int(mask.sum())), f"{correct[mask].mean():.3f}", *cells])
        sections.append(f"### {title}\n\n" + _markdown(["dataset", "n", "accuracy", *scores], rows))
    return "\n\n".join(sections)


def plot_reliability(scores: Mapping[str, np.ndarray], correct: np.ndarray, path: Path, bins: int = 10) -> Path:
    """Bin accuracy against mean confidence in each of ``bins`` equal-width bins; marker area grows with the
    bin's count; a calibrated estimator lies on the diagonal."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for name, conf in scores.items():
        binned = reliability_bins(conf, correct, bins)
        filled = binned["count"] > 0
        x, y = binned["confidence"][filled], binned["accuracy"][filled]
        (line,) = ax.plot(x, y, label=name)
        ax.scatter(x, y, s=10 + 400 * binned["count"][filled] / len(conf), color=line.get_color(), alpha=0.7)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean confidence in bin", ylabel="fraction correct in bin")
    ax.set_title("Reliability (marker area ∝ records in bin)")
    ax.legend(loc="upper left")
    return _save(fig, path)


def plot_histogram(scores: Mapping[str, np.ndarray], path: Path) -> Path:
    """How each estimator's confidences spread over [0, 1] (20 bins): sharpness, and piles at 0 or 1."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for name, conf in scores.items():
        ax.hist(conf, bins=np.linspace(0, 1, 21), histtype="step", linewidth=1.5, label=name)
    ax.set(xlim=(0, 1), xlabel="confidence P(correct)", ylabel="records", title="Confidence histogram")
    ax.legend(loc="upper left")
    return _save(fig, path)


def plot_risk_coverage(scores: Mapping[str, np.ndarray], correct: np.ndarray, path: Path) -> Path:
    """Error rate among the k most confident answers against coverage k/N; lower is better, and the area under
    each curve is its AURC."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for name, conf in scores.items():
        coverage, risk = risk_coverage_curve(conf, correct)
        ax.plot(coverage, risk, label=f"{name} (AURC {risk.mean():.3f})")
    ax.axhline(1 - correct.mean(), color="grey", linestyle="--", linewidth=1, label="answer everything")
    ax.set(xlim=(0, 1), ylim=(0, None), xlabel="coverage", ylabel="risk (error rate)", title="Risk-coverage")
    ax.legend(loc="upper left")
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _check(
    results: Mapping[str, Result], scores: Mapping[str, np.ndarray], correct: np.ndarray, groups: np.ndarray | None
) -> None:
    if not results:
        raise DataError("no estimators to report")
    if set(results) != set(scores):
        raise DataError(f"results and scores name different estimators ({sorted(results)} vs {sorted(scores)})")
    for name, conf in scores.items():
        if len(conf) != len(correct):
            raise DataError(f"estimator {name!r} has {len(conf)} scores for {len(correct)} records")
    if groups is not None and len(groups) != len(correct):
        raise DataError(f"{len(groups)} dataset names (groups) for {len(correct)} records")


def write_report(
    out_dir: str | Path,
    results: Mapping[str, Result],
    scores: Mapping[str, Sequence[float] | np.ndarray],
    correct: Sequence[float] | np.ndarray,
    groups: Sequence[str] | np.ndarray | None = None,
    title: str = "Confidence report",
    plotted: Sequence[str] | None = None,
    sections: Sequence[str] = (),
    costs: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Write report.md and the three plots into ``out_dir`` (created if needed); returns their paths by name
    (``report``, ``reliability``, ``histogram``, ``risk_coverage``).

    ``results[name]`` is :func:`~selfknow.metrics.evaluate_scores` of ``scores[name]``, the estimator's
    confidences for the same records as ``correct``; ``groups`` (dataset names) adds the per-dataset breakdown.
    ``plotted`` names the estimators drawn in the plots (default: all); tables always show every estimator.
    ``costs`` adds a column of what each estimator costs per question.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores = {name: np.asarray(conf, dtype=float) for name, conf in scores.items()}
    correct = np.asarray(correct, dtype=float)
    groups = None if groups is None else np.asarray(groups)
    _check(results, scores, correct, groups)
    drawn = {name: scores[name] for name in (plotted or scores)}
    plots = {
        "reliability": plot_reliability(drawn, correct, out / "reliability.png"),
        "histogram": plot_histogram(drawn, out / "histogram.png"),
        "risk_coverage": plot_risk_coverage(drawn, correct, out / "risk_coverage.png"),
    }
    accuracy = _cell(next(iter(results.values())).get("accuracy"))
    parts = [
        f"# {title}",
        f"{len(correct)} records; accuracy {accuracy}, the same for every estimator since they score the same "
        "answers. Cells are value [95% bootstrap interval over records]; ↓ lower is better, ↑ higher is better.",
        metric_table(results, costs),
    ]
    parts += list(sections)
    if groups is not None:
        parts += ["## By dataset", dataset_tables(scores, correct, groups)]
    parts += [
        "## Plots",
        "\n".join(f"![{name}]({path.name})" for name, path in plots.items()),
        "## Definitions",
        "\n".join(f"- **{name}**: {definition}" for name, definition in METRICS.items()),
    ]
    report = out / "report.md"
    write_text(report, "\n\n".join(parts) + "\n")
    return {"report": report, **plots}

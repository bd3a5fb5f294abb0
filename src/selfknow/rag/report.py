"""The Self-RAG report: the modes table, reflection agreement, error prediction and retriever recall
(markdown), and accuracy against retrieval rate for the δ and τ sweeps (one plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from selfknow.writing import write_text


def number(value: float | None) -> str:
    return "—" if value is None or value != value else f"{value:.3f}"


def ci(metric: dict[str, float]) -> str:
    return f"{number(metric['value'])} [{number(metric['low'])}, {number(metric['high'])}]"


def modes_table(summary: dict[str, Any]) -> str:
    lines = ["| mode | accuracy [95% CI] | retrieval rate |", "|---|---|---|"]
    for name, row in summary["modes"].items():
        lines.append(f"| {name} | {ci(row['accuracy'])} | {number(row['retrieval_rate'])} |")
    return "\n".join(lines)


def _pairs(title: str, values: dict[str, Any]) -> str:
    lines = [f"| {title} | value |", "|---|---|"]
    lines += [f"| {k} | {number(v) if isinstance(v, float) else v} |" for k, v in values.items()]
    return "\n".join(lines)


def plot_curves(summary: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for key, label in (("delta_curve", "adaptive, δ sweep"), ("tau_curve", "confidence-gated, τ sweep")):
        points = sorted(summary[key], key=lambda p: p["rate"])
        ax.plot([p["rate"] for p in points], [p["accuracy"] for p in points], marker="o", ms=3, label=label)
    markers = "xs^vDP*ho"
    for (name, row), marker in zip(summary["modes"].items(), markers, strict=False):
        ax.scatter([row["retrieval_rate"]], [row["accuracy"]["value"]], marker=marker, s=28, label=name, zorder=3)
    ax.set_xlabel("retrieval rate")
    ax.set_ylabel("accuracy")
    ax.set_xlim(-0.02, 1.02)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_rag_report(out: Path, summary: dict[str, Any]) -> Path:
    recall = summary.get("retriever recall (test questions)", {})
    recall_lines = ["| retriever | recall@1 | recall@5 |", "|---|---|---|"]
    recall_lines += [
        f"| {m} | {number(r.get(1, r.get('1')))} | {number(r.get(5, r.get('5')))} |" for m, r in recall.items()
    ]
    diff = summary["critique_minus_top1"]
    text = "\n\n".join(
        [
            f"# Self-RAG evaluation ({summary['questions']} held-out questions)",
            modes_table(summary),
            f"Critique-ranked top-k minus top-1 accuracy: {ci(diff)} (paired bootstrap).",
            _pairs("area under accuracy vs retrieval rate", summary["area"]),
            _pairs("predicting closed-book errors (AUROC)", summary["predicting closed-book errors (AUROC)"]),
            _pairs("reflection tokens vs rule labels (held-out)", summary["reflection agreement with rule labels"]),
            "\n".join(recall_lines),
            "![accuracy against retrieval rate](retrieval_curves.png)",
        ]
    )
    plot_curves(summary, out / "retrieval_curves.png")
    path = out / "report.md"
    write_text(path, text + "\n")
    return path

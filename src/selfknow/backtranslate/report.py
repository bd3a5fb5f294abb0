"""The backtranslation report (markdown): backward model against its baselines, curation against the labels and
the paper, forward models by reference similarity and the judge, and the data table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfknow.rag.report import ci, number
from selfknow.writing import write_text


def _backward(summary: dict[str, Any]) -> list[str]:
    lines = ["| instruction writer | ROUGE-L [95% CI] | BLEU [95% CI] | MiniLM cosine | top-1 retrieval |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, s in summary["backward"].items():
        lines.append(f"| {name} | {ci(s['rouge_l'])} | {ci(s['bleu'])} | {ci(s['minilm_cosine'])} | "
                     f"{ci(s['top1_retrieval'])} |")  # fmt: skip
    return lines


def _curation(summary: dict[str, Any]) -> list[str]:
    curation = summary["curation"]
    lines = [f"Labelled pairs: {json.dumps(curation['kinds'])}",
             "| rater | reading | selected (A_5) | precision | recall | AUROC [95% CI] | valid parsed |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for rater, row in curation.items():
        if not rater.startswith("M_"):
            continue
        for reading in ("expected", "parsed", "rank"):
            r = row[reading]
            auroc = ci(r["auroc"]) if "auroc" in r else "as expected"
            cells = [rater, reading, r["selected"], number(r["precision"]), number(r["recall"]), auroc,
                     number(row["valid parsed scores"])]  # fmt: skip
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    for name, auroc in curation.get("controls (AUROC)", {}).items():
        lines.append(f"| control: {name} | — | — | — | — | {ci(auroc)} | — |")
    for rater, (precision, recall) in curation["paper (precision, recall)"].items():
        lines.append(f"| paper (LLaMA 7B data): {rater} | parsed | — | {precision:.2f} | {recall:.2f} | — | — |")
    return lines


def _forward(summary: dict[str, Any]) -> list[str]:
    lines = ["| model | ROUGE-L vs human answer | ROUGE-L minus seed only (paired) | MiniLM cosine | "
             "win rate vs seed only (judge) | judge agreement |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in summary["forward"].items():
        win, gain = row.get("win rate vs seed only (judge)"), row.get("rouge_l minus seed only")
        lines.append(f"| {name} | {ci(row['rouge_l'])} | {ci(gain) if gain else '—'} | {ci(row['minilm_cosine'])} | "
                     f"{ci(win) if win else '—'} | {number(row.get('judge self-agreement'))} |")  # fmt: skip
    difference = summary["curated minus uncurated (ROUGE-L, paired)"]
    return [*lines, f"Seed + curated minus seed + uncurated, ROUGE-L on the same pairs: {ci(difference)}."]


def write_backtranslate_report(directory: Path, summary: dict[str, Any]) -> Path:
    parts = [
        "# Instruction backtranslation",
        f"Held-out seed pairs: {summary['held-out pairs']}.",
        "## Backward model (instructions written for held-out answers)",
        *_backward(summary),
        "## Self-curation on the labelled set",
        *_curation(summary),
        "## Forward models on held-out instructions",
        *_forward(summary),
        "## Data",
        "```json\n" + json.dumps(summary["data table"], indent=1) + "\n```",
    ]
    path = directory / "report.md"
    write_text(path, _join(parts))
    return path


def _join(parts: list[str]) -> str:
    """Paragraphs separated by blank lines; consecutive table rows kept together."""
    out: list[str] = []
    for part in parts:
        if out and part.startswith("|") and out[-1].startswith("|"):
            out[-1] += "\n" + part
        else:
            out.append(part)
    return "\n\n".join(out) + "\n"

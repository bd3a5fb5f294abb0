"""The ELK run's report: the transfer table (markdown) and AUROC by layer (a plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from selfknow.writing import write_text


def _f(value: float) -> str:
    return "—" if value is None or value != value else f"{value:.3f}"


def transfer_table(summary: dict[str, Any]) -> str:
    lines = [
        "| method | layer | AE→AE | AE→AH | AE→BH vs Alice [95% CI] | AE→BH vs Bob | PGR | anomaly AUROC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, row in summary["methods"].items():
        a = row["auroc"]
        low, high = row["ae_to_bh_interval"]
        lines.append(
            f"| {method} | {row['layer']} | {_f(a['AE vs alice'])} | {_f(a['AH vs alice'])} | "
            f"{_f(a['BH vs alice'])} [{_f(low)}, {_f(high)}] | {_f(a['BH vs bob'])} | {_f(row['pgr'])} | "
            f"{_f(row['anomaly_auroc'])} |"
        )
    lm = summary["lm_output"]
    lines.append(
        f"| quirky model's own answer (log-odds) | last | {_f(lm['AE vs alice'])} | {_f(lm['AH vs alice'])} | "
        f"{_f(lm['BH vs alice'])} | {_f(lm['BH vs bob'])} | | |"
    )
    rnd = summary["random"]
    lines.append(
        f"| random direction (mean of 1,000; 5-95%: {_f(rnd['q05'])}-{_f(rnd['q95'])}) | {rnd['layer']} | | | "
        f"{_f(rnd['mean'])} | | | |"
    )
    return "\n".join(lines)


def candidates_table(training: dict[str, Any]) -> str:
    """The training settings tried and their validation NLL (ln 2 = 0.693 is a constant answer); the lowest
    was kept. Runs trained before sweeps existed record one setting and no candidates."""
    rows = training.get("candidates", [])
    if not rows:
        return ""
    names = list(rows[0]["settings"])
    lines = [
        "Training settings tried (the lowest best-epoch validation NLL is kept):",
        "",
        "| " + " | ".join(names) + " | validation NLL per epoch | best | kept |",
        "|" + "---|" * (len(names) + 3),
    ]
    for row in rows:
        settings = " | ".join(str(row["settings"][n]) for n in names)
        epochs = ", ".join(_f(v) for v in row["validation_nll_per_epoch"])
        kept = "yes" if row["settings"] == training.get("settings") else ""
        lines.append(f"| {settings} | {epochs} | {_f(row['best_validation_nll'])} | {kept} |")
    return "\n".join(lines)


def write_elk_report(out: Path, summary: dict[str, Any]) -> None:
    config = summary["config"]
    parts = [
        f"# Latent knowledge: {config['model']} on quirky {config['dataset']} ({config['template']})",
        "",
        "Probes fit on Alice-easy (validation split) with Alice's labels; read on the test split. "
        f"Floor (last-layer LR fit to Bob's labels, on BH vs Alice) {_f(summary['floor'])}; ceiling "
        f"(last-layer LR fit to Alice's labels, on AH) {_f(summary['ceiling'])}. "
        f"Examples: {', '.join(f'{k} {v}' for k, v in summary['populations'].items())}.",
        "",
        transfer_table(summary),
    ]
    if "training" in summary:
        parts += ["", "Quirky model's agreement with each character's labels on the test split:", ""]
        parts += ["| context | agreement |", "|---|---|"]
        parts += [f"| {k} | {_f(v)} |" for k, v in summary["training"]["agreement_on_test"].items()]
        parts += ["", candidates_table(summary["training"])]
    write_text(out / "report.md", "\n".join(parts) + "\n")

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for method, row in summary["methods"].items():
        for axis, key in zip(axes, ("AE vs alice", "BH vs alice"), strict=True):
            curve = row["by_layer"][key]
            axis.plot(range(1, len(curve) + 1), curve, label=method)
    for axis, title in zip(axes, ("AE → AE (Alice's labels)", "AE → BH (Alice's labels = truth)"), strict=True):
        axis.axhline(0.5, color="grey", lw=0.8, ls=":")
        axis.set_title(title)
        axis.set_xlabel("layer")
    axes[0].set_ylabel("AUROC")
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "auroc_by_layer.png", dpi=120)
    plt.close(figure)

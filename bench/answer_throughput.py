"""Answering throughput against the FLOP floor of the tokens it computes.

    .venv/bin/python bench/answer_throughput.py            # all three runs (about 25 min on 2 cores)
    .venv/bin/python bench/answer_throughput.py --limit 100
    .venv/bin/python bench/answer_throughput.py --model qwen2.5-coder-1.5b --limit 60 \
        --out bench/results/answer_throughput_reference.json

The floor of a run is the FLOPs its useful tokens need, divided by this machine's fp32 matmul peak
measured in the same run: 2 x (non-embedding parameters) per token, 4 x layers x attention width per
(query, key) pair, and 2 x vocabulary x hidden per position whose logits are read. Shared prompt
prefixes count once; padding and decode steps of finished rows are not useful tokens.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from selfknow.answer import AnswerConfig, AnswerStats
from selfknow.api import answer_dataset
from selfknow.grade import accuracy_table, grade_records
from selfknow.models import load_model

RUNS = {
    "builtin-choice": dict(dataset="builtin", format="choice", kshot=0),
    "mmlu-choice-5shot": dict(dataset="mmlu-csv:../shared/data/mmlu", format="choice", kshot=5),
    "builtin-oe": dict(dataset="builtin", format="oe", kshot=0),
}


def matmul_peak(hidden: int, intermediate: int) -> float:
    """Best fp32 GFLOP/s over square products and the model's own linear-layer shapes."""
    shapes = [(n, n, n) for n in (1024, 2048, 3072)] + [(2048, hidden, intermediate), (2048, intermediate, hidden)]
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(2):
            a @ b
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(5):
                a @ b
            best = max(best, 2 * m * k * n * 5 / (time.perf_counter() - start) / 1e9)
    return best


def floor_flops(model, stats: AnswerStats, read_positions: int) -> float:
    config = model.config
    embedding = model.get_input_embeddings().weight.numel()
    body = sum(p.numel() for p in model.parameters()) - embedding
    attention_width = config.num_attention_heads * getattr(
        config, "head_dim", config.hidden_size // config.num_attention_heads
    )
    return (
        2 * body * stats.useful_tokens
        + 4 * config.num_hidden_layers * attention_width * stats.attention_pairs
        + 2 * embedding * read_positions
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="questions per run (default: whole test split)")
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--out", type=Path, default=Path("bench/results/answer_throughput.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = load_model(args.model)
    peak_before = matmul_peak(model.config.hidden_size, model.config.intermediate_size)
    results = {}
    for name in args.runs:
        spec = RUNS[name]
        records, stats = answer_dataset(
            spec["dataset"],
            format=spec["format"],
            kshot=spec["kshot"],
            limit=args.limit,
            config=AnswerConfig(),
            progress=False,
            loaded=(model, tokenizer),
        )
        graded = grade_records(records)
        read = stats.records + stats.generated_tokens if spec["format"] == "oe" else stats.records
        results[name] = {
            **spec,
            "records": stats.records,
            "seconds": round(stats.seconds, 1),
            "useful_tokens": stats.useful_tokens,
            "prompt_tokens": stats.prompt_tokens,
            "useful_tokens_per_s": round(stats.useful_tokens / stats.seconds, 1),
            "padding_fraction": round(stats.padding_fraction, 4),
            "floor_gflop": round(floor_flops(model, stats, read) / 1e9, 1),
            "accuracy": {k: [n, round(a, 4)] for k, (n, a) in accuracy_table(graded).items()},
        }
        print(
            name,
            json.dumps(results[name]["accuracy"]["all"]),
            results[name]["useful_tokens_per_s"],
            "tok/s",
            flush=True,
        )
    peak = max(peak_before, matmul_peak(model.config.hidden_size, model.config.intermediate_size))
    for result in results.values():
        result["floor_seconds"] = round(result["floor_gflop"] / peak, 1)
        result["time_over_floor"] = round(result["seconds"] / result["floor_seconds"], 2)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    summary = {
        "model": args.model,
        "matmul_peak_gflops": round(peak, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "git": commit,
        "limit": args.limit,
        "runs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print("| run | records | useful tok/s | padding | time / FLOP floor | accuracy |\n|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['records']} | {r['useful_tokens_per_s']:.0f} | {r['padding_fraction']:.1%} | "
            f"{r['time_over_floor']:.2f} | {r['accuracy']['all'][1]:.3f} |"
        )
    print(f"fp32 matmul peak {peak:.1f} GFLOP/s, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()

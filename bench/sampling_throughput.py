"""Drawing k samples per question: selfknow against plain transformers ``generate``, same prompts, same model.

    .venv/bin/python bench/sampling_throughput.py                 # 60 built-in questions, k = 10 (about 6 min)
    .venv/bin/python bench/sampling_throughput.py --limit 20 --samples 4

selfknow decodes the greedy answer and its k samples from one prefill per question (the prompt's cache
repeated once per sample) and drops a sample from the batch once it ends its line. What a user would
otherwise write is a greedy ``generate`` plus ``generate(do_sample=True, num_return_sequences=k,
stop_strings=["\n"])``: the prompt is repeated k times before the prefill, and a finished sequence stays
in its batch (padded) until the batch's last one ends. Both at T = 1, top-p 0.95, 32 new tokens, fp32, on
the same batches of 8 questions (selfknow's --batch-size counts rows, one per answer, so 8 questions with
k samples are 8 (k + 1) rows); the table gives seconds, the prompt tokens each ran (padding included) and
the sampled tokens kept, and selfknow's time over the FLOP floor of the tokens it needed (as in
``answer_throughput.py``: this machine's fp32 matmul peak measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from answer_throughput import floor_flops, matmul_peak  # bench/, the folder this script runs from
from selfknow.answer import AnswerConfig, answer_records
from selfknow.data.registry import load_dataset
from selfknow.models import load_model
from selfknow.prompts import Prompter

BATCH = 8


def plain(model, tokenizer, prompts: list[str], samples: int, new_tokens: int) -> dict:
    """Greedy plus sampled ``generate`` calls over batches of prompts, left-padded."""
    tokenizer.padding_side = "left"
    prefill = kept = 0
    start = time.perf_counter()
    for i in range(0, len(prompts), BATCH):
        batch = tokenizer(prompts[i : i + BATCH], return_tensors="pt", padding=True, add_special_tokens=False)
        width = batch.input_ids.shape[1]
        common = dict(
            max_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id, stop_strings=["\n"], tokenizer=tokenizer
        )
        model.generate(**batch, do_sample=False, **common)
        torch.manual_seed(i)
        sampling = dict(do_sample=True, top_p=0.95, temperature=1.0, num_return_sequences=samples)
        out = model.generate(**batch, **sampling, **common)
        prefill += width * len(prompts[i : i + BATCH]) * (1 + samples)
        for row in out[:, width:].tolist():
            text = tokenizer.decode(row, skip_special_tokens=True).lstrip()
            kept += len(tokenizer(text.split("\n")[0], add_special_tokens=False).input_ids)
    return {"seconds": round(time.perf_counter() - start, 1), "prefill_tokens": prefill, "sampled_tokens_kept": kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench/results/sampling_throughput.json"))
    args = parser.parse_args()
    model, tokenizer = load_model(args.model, device="cpu")
    records = load_dataset("builtin", split="test", limit=args.limit, seed=0)
    prompter = Prompter(tokenizer)
    config = AnswerConfig(samples=args.samples, batch_size=BATCH * (1 + args.samples))
    answer_records(model, tokenizer, records[:4], prompter=prompter, config=config, progress=False)  # warm-up
    start = time.perf_counter()
    _, stats = answer_records(model, tokenizer, records, prompter=prompter, config=config, progress=False)
    ours = {
        "seconds": round(time.perf_counter() - start, 1),
        "prefill_tokens": stats.computed_tokens + stats.pad_tokens,
        "sampled_tokens_kept": stats.sampled_tokens,
    }
    read = stats.generated_tokens + stats.sampled_tokens + stats.wasted_decode_tokens  # one logits row per step
    peak = matmul_peak(model.config.hidden_size, model.config.intermediate_size)
    ours["floor_seconds"] = round(floor_flops(model, stats, read) / 1e9 / peak, 1)
    theirs = plain(model, tokenizer, [prompter.render(r) for r in records], args.samples, config.max_new_tokens)
    summary = {
        "model": args.model,
        "questions": len(records),
        "samples": args.samples,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "selfknow": ours,
        "transformers_generate": theirs,
        "speedup": round(theirs["seconds"] / ours["seconds"], 2),
        "matmul_peak_gflops": round(peak, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print("| engine | seconds | prefill tokens | sampled tokens kept |\n|---|---|---|---|")
    for name, row in (("selfknow", ours), ("transformers generate", theirs)):
        print(f"| {name} | {row['seconds']} | {row['prefill_tokens']:,} | {row['sampled_tokens_kept']:,} |")
    print(
        f"speed-up {summary['speedup']}x, {torch.get_num_threads()} threads; selfknow's FLOP floor "
        f"{ours['floor_seconds']} s at {peak:.0f} GFLOP/s ({ours['seconds'] / ours['floor_seconds']:.1f}x)"
    )


if __name__ == "__main__":
    main()

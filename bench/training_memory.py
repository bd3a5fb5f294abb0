"""Memory and time of one LoRA training step: selfknow's masked trainer with and without activation
checkpointing, against plain PEFT + ``transformers.Trainer`` (the model's own loss, logits at every position).

    .venv/bin/python bench/training_memory.py                                  # embedded model, fp32
    .venv/bin/python bench/training_memory.py -m qwen2.5-coder-1.5b --dtype bfloat16 --steps 2

Rows of ``--length`` random tokens, the last quarter taught (as in backtranslation's forward rows: a prompt,
then the answer), batches of ``--batch``, LoRA r 8 on q/k/v/o, the same rows for every variant. Each variant
runs in a fresh process, so one's allocations cannot hide another's. Peak memory is what training added to
the loaded model: on the CPU the process's peak resident memory (reset after loading through
``/proc/self/clear_refs``) minus its resident memory then; on a GPU ``torch.cuda.max_memory_allocated``
minus the allocation then. Time per step is the training time over the steps, the first one included.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = ("plain", "selfknow", "selfknow+checkpointing")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _resident_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class _Peak:
    """Peak memory added from now on, on the model's device."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
            self.base = torch.cuda.memory_allocated(device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the current size
            self.base = _resident_kb("VmRSS") * 1024

    def added_gb(self) -> float:
        peak = torch.cuda.max_memory_allocated() if self.cuda else _resident_kb("VmHWM") * 1024
        return round((peak - self.base) / 2**30, 2)


def taught_rows(vocab: int, n: int, length: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """``n`` rows of ``length`` random tokens whose last quarter is taught (a prompt, then its answer)."""
    from selfknow.sft import IGNORE_INDEX

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, vocab - 100, (n, length), generator=generator).tolist()
    taught = max(1, length // 4)
    return [(row, [IGNORE_INDEX] * (length - taught) + row[-taught:]) for row in ids]


def run_variant(args: argparse.Namespace) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer

    from selfknow.confidence.tuning import training_arguments
    from selfknow.models import input_device, load_model
    from selfknow.sft import Rows, collate_rows, fit

    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    torch.manual_seed(args.seed)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=TARGETS, task_type="CAUSAL_LM"))
    rows = taught_rows(len(tokenizer), args.batch * args.steps, args.length, args.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    peak = _Peak(input_device(model))
    start = time.perf_counter()
    if args.variant == "plain":
        with tempfile.TemporaryDirectory() as scratch:
            settings = training_arguments(scratch, args.batch, 1, 1e-4, args.seed, False, peft_model)
            Trainer(model=peft_model, args=settings, train_dataset=Rows(rows), data_collator=collate_rows(pad)).train()
    else:
        fit(
            peft_model, rows, pad_id=pad, batch_size=args.batch, epochs=1, lr=1e-4, seed=args.seed,
            gradient_checkpointing=args.variant.endswith("+checkpointing"),
        )  # fmt: skip
    seconds = time.perf_counter() - start
    return {
        "variant": args.variant,
        "peak_added_gb": peak.added_gb(),
        "seconds_per_step": round(seconds / args.steps, 2),
        "tokens_per_second": round(args.batch * args.steps * args.length / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", default="smollm2")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=384)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", choices=VARIANTS, help="run one variant in this process (used internally)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return
    passed = ["-m", args.model, "--dtype", args.dtype, "--batch", str(args.batch), "--length", str(args.length)]
    passed += ["--steps", str(args.steps), "--seed", str(args.seed), "--device", args.device]
    results = []
    for variant in VARIANTS:
        done = subprocess.run([sys.executable, __file__, *passed, "--variant", variant], capture_output=True, text=True)
        if done.returncode == 0:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        else:  # killed for memory (-9) is a result too
            reason = (done.stderr.strip().splitlines() or [""])[-1]
            results.append({"variant": variant, "error": f"exit {done.returncode} {reason}".strip()})
        print(json.dumps(results[-1]), flush=True)
    summary = {"settings": {k: v for k, v in vars(args).items() if k not in ("variant", "out")}, "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()

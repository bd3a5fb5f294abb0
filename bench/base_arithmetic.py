"""Can the model add before it is made quirky? Greedy completion of "a + b =" (no chat template), operands
log-uniform below 10^(max_digits+1) as in the quirky addition data (`BENCHMARKS.md`, latent knowledge).

    .venv/bin/python bench/base_arithmetic.py                        # the embedded model, 100 per bound
    .venv/bin/python bench/base_arithmetic.py path/to/gemma3-270m.gguf --n 60
"""

from __future__ import annotations

import argparse
import random

import torch

from selfknow.models import load_model


def accuracy(model, tokenizer, max_digits: int, n: int, rng: random.Random) -> float:
    def operand() -> int:
        return int(10 ** (rng.random() * (max_digits + 1)))

    right = 0
    for _ in range(n):
        a, b = operand(), operand()
        ids = tokenizer(f"{a} + {b} =", return_tensors="pt").input_ids
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=6, do_sample=False)
        words = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split()
        right += bool(words) and words[0].rstrip(".,") == str(a + b)
    return right / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="smollm2")
    parser.add_argument("--n", type=int, default=100, help="equations per operand bound")
    args = parser.parse_args()
    model, tokenizer = load_model(args.model)
    rng = random.Random(0)
    for max_digits in (1, 2):
        print(f"operands below {10 ** (max_digits + 1)}: {accuracy(model, tokenizer, max_digits, args.n, rng):.2f}")


if __name__ == "__main__":
    main()

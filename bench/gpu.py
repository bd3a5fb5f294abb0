"""What selfknow costs on an accelerator: its answering, probe, tuning and estimator paths beside plain
transformers/PEFT on the same randomly initialised model, against floors measured on the same device.

    .venv/bin/python bench/gpu.py                                              # Llama-2-7B shape, bf16, the GPU
    .venv/bin/python bench/gpu.py --shape tiny --device cpu --dtype float32    # the seconds-long smoke run
    .venv/bin/python bench/gpu.py --model smollm2 --device cpu --dtype float32 # a real model instead of a shape

The model is a LlamaForCausalLM with random weights (normal, std 0.02) built on the device in the chosen
dtype, with the vocabulary of the embedded SmolLM2 tokenizer: nothing is downloaded, and both sides of
every comparison run the same weights on the same rows. Each side is timed once after a warm-up run.

- choice-prefill: multiple-choice answering (``answer_records``) against one plain forward over the
  same left-padded prompts (``logits_to_keep=1``).
- oe-decode: greedy decoding of exactly N tokens per row against ``generate`` with the dynamic cache
  (oe-decode) and with the static cache (oe-decode-static; transformers compiles the forward then, on
  GPUs). ms/step is (time for N tokens - time for 1 token) / (N - 1).
- probe-features: ``forward_queries(hidden=True)`` on uncertainty queries against a plain forward with
  ``output_hidden_states=True``, both reading each layer's last-token state to the host.
- ct-training: calibration tuning on every layer (the base pass that caches the regularizer's top-k,
  then one epoch) against plain PEFT LoRA (same rank, alpha, targets) and AdamW with a causal-LM loss
  on the same queries in batches of the same size.
- sft-training: the masked trainer behind Self-RAG and backtranslation (``selfknow.sft.fit``: logits only
  where a token is taught) against plain PEFT LoRA (r 8, q/k/v/o) and AdamW with the model's own loss
  (logits at every position), on the same rows (the last quarter of each taught) in batches of 8;
  sft-training-checkpointed: both with transformers' activation checkpointing. Peak memory on a GPU
  shows what checkpointing saves.
- estimators: every registered estimator but ``encoder`` (a separate package) fitted and scored on
  small graded sets; "ok" or the error's first line.

Floors: a forward pass needs 2 x body parameters (all but the embedding and the LM head) FLOPs per
token, training 4 x (forward, and backward through frozen weights), divided by the best matmul rate
measured here; attention and the LM head at the read positions are left out (under 1% at these
lengths for the 7B shape). selfknow's ct-training also runs the base pass its regularizer needs, so its
time over this floor cannot go below 1.5. A decode step needs max(bytes of the body and LM head plus the mean
key/value cache / copy bandwidth, 2 x (body + LM head) x rows FLOPs / matmul rate).

Prompts are raw text, not the chat template: a shared system prompt would be computed once by
selfknow's prefix sharing and per row by a plain forward, and decide the comparison by itself. The
EOS rows of the LM head are zeroed: EOS's logit is then 0, below the largest of the other ~49k random
logits, so no row stops early on either side (selfknow always stops at the tokenizer's EOS).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import peft
import torch
import transformers
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from selfknow.answer import AnswerConfig, answer_records
from selfknow.confidence import ESTIMATORS, Context
from selfknow.confidence.features import forward_queries
from selfknow.confidence.query import QueryText, render_query
from selfknow.confidence.tuning import (
    CachedQueries,
    TuningConfig,
    cache_queries,
    num_layers,
    query_options,
    train_adapter,
)
from selfknow.data.records import Record
from selfknow.engine import eos_ids, left_pad
from selfknow.models import ALIASES, load_model, resolve_dtype
from selfknow.prompts import Prompter, PromptStyle
from selfknow.sft import Row, collate_rows, fit
from training_memory import taught_rows  # bench/, the folder this script runs from

SHAPES = {
    "llama2-7b": dict(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32
    ),
    "tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    ),
}
SIZES = {  # rows, max_new_tokens, train_rows, estimator_rows, sft_tokens
    "llama2-7b": (64, 32, 64, 64, 512),
    "tiny": (8, 8, 16, 16, 32),
}
SFT_BATCH = 8
SKIPPED_ESTIMATORS = ("encoder",)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def never_eos(model, tokenizer) -> None:
    """Zero the LM head's EOS rows: EOS's logit is then 0, below the largest of the others, so every row
    decodes the same number of tokens on both sides."""
    with torch.no_grad():
        model.get_output_embeddings().weight[sorted(eos_ids(tokenizer, model.generation_config.eos_token_id))] = 0


def build_model(shape: str, device: torch.device, dtype: torch.dtype):
    """The random model, built on ``device`` in ``dtype`` (no host copy), and the tokenizer set up as
    :func:`selfknow.models.load_model` does (left padding, pad = EOS)."""
    path = ALIASES["smollm2"].path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SHAPES[shape],
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    never_eos(model, tokenizer)
    return model.eval(), tokenizer


def parameter_counts(model) -> dict[str, int]:
    embedding = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    return {"body": sum(p.numel() for p in model.parameters()) - embedding - head, "embedding": embedding, "head": head}


def matmul_peak(device: torch.device, dtype: torch.dtype, hidden: int, intermediate: int) -> float:
    """Best FLOP/s over large square products and the model's own linear-layer shapes."""
    large = device.type == "cuda"
    rows = 8192 if large else 512
    squares = (4096, 8192) if large else (256, 512)
    shapes = [(n, n, n) for n in squares] + [(rows, hidden, intermediate), (rows, intermediate, hidden)]
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
        a @ b
        for _ in range(3):
            sync(device)
            start = time.perf_counter()
            for _ in range(5):
                a @ b
            sync(device)
            best = max(best, 2 * m * k * n * 5 / (time.perf_counter() - start))
    return best


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of a large device-to-device copy, counting bytes read and written."""
    size = (1 << 30) if device.type == "cuda" else (64 << 20)
    source = torch.ones(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    best = 0.0
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        for _ in range(5):
            target.copy_(source)
        sync(device)
        best = max(best, 2 * size * 5 / (time.perf_counter() - start))
    return best


def measure(run: Callable[[], Any], device: torch.device, warmup: Callable[[], Any] | None = None):
    """(side, result): the seconds and device peak memory of ``run`` after a warm-up call (``warmup``, or
    ``run`` itself); an exception makes the side ``{"error": its first line}`` and the result None."""
    try:
        (warmup or run)()
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        result = run()
        sync(device)
        side: dict[str, Any] = {"seconds": time.perf_counter() - start}
    except Exception as err:  # one broken path must not cost the rest of a GPU run
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"error": first_line(err)}, None
    if device.type == "cuda":
        side["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return side, result


def compare(selfknow: dict, plain: dict, tokens: int, floor_seconds: float) -> dict:
    """A workload row: both sides' tokens/s over the same tokens, plain ÷ selfknow, selfknow ÷ floor."""
    for side in (selfknow, plain):
        if "seconds" in side:
            side["tokens_per_s"] = tokens / side["seconds"]
    row = {"tokens": tokens, "floor_seconds": floor_seconds, "selfknow": selfknow, "plain": plain}
    if "seconds" in selfknow:
        row["selfknow_over_floor"] = selfknow["seconds"] / floor_seconds
        if "seconds" in plain:
            row["plain_over_selfknow"] = plain["tokens_per_s"] / selfknow["tokens_per_s"]
    return row


class Workloads:
    """The model, its tokenizer and the device's measured rates, shared by every workload."""

    def __init__(self, model, tokenizer, device: torch.device, peak: float, bandwidth: float, seed: int):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.peak, self.bandwidth = peak, bandwidth
        self.counts = parameter_counts(model)
        self.pad = tokenizer.pad_token_id
        self.prompter = Prompter(tokenizer, PromptStyle(chat=False))
        self.rng = random.Random(seed)
        vocab = tokenizer.get_vocab()
        self.words = sorted(t[1:] for t in vocab if t.startswith("Ġ") and t[1:].isalpha() and t[1:].islower())
        self.words = [w for w in self.words if len(w) > 3]  # " word" is one token: n words ≈ n tokens

    def phrase(self, n: int) -> str:
        return " ".join(self.rng.sample(self.words, n))

    def records(self, n: int, format: str, prompt_tokens: int, tag: str) -> list[Record]:
        """``n`` questions of distinct random words whose prompts are about ``prompt_tokens`` tokens long."""
        choices = {"choices": ["x"] * 4, "answer_index": 0} if format == "choice" else {}
        probe = Record(id="probe", dataset="bench", split="test", question="x", answer="x", format=format, **choices)
        overhead = len(self.prompter.encode(self.prompter.render(probe))) - 1
        records = []
        for i in range(n):
            if format == "choice":
                choices = {"choices": [self.phrase(1) for _ in range(4)], "answer_index": 0}
            question = self.phrase(max(1, prompt_tokens - overhead))
            answer = choices["choices"][0] if choices else self.phrase(1)
            records.append(Record(f"{tag}/{i}", "bench", "test", question, answer, format=format, **choices))
        return records

    def batch(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask = left_pad(rows, max(map(len, rows)), self.pad, self.device)
        return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    def forward_floor(self, tokens: int, passes: int = 2) -> float:
        return passes * self.counts["body"] * tokens / self.peak

    def answer(self, records: Sequence[Record], config: AnswerConfig):
        return answer_records(
            self.model, self.tokenizer, records, prompter=self.prompter, config=config, progress=False
        )

    def choice_prefill(self, records: Sequence[Record]) -> dict:
        prompts = [self.prompter.encode(self.prompter.render(r)) for r in records]
        selfknow, answered = measure(lambda: self.answer(records, AnswerConfig()), self.device)
        computed = sum(map(len, prompts))
        if answered is not None:
            stats = answered[1]
            computed = stats.computed_tokens
            selfknow.update(computed_tokens=computed, pad_tokens=stats.pad_tokens, engine_seconds=stats.seconds)
        ids, mask, positions = self.batch(prompts)

        @torch.inference_mode()
        def plain():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
            return out.logits[:, -1].argmax(-1).cpu()

        plain_side, _ = measure(plain, self.device)
        plain_side["pad_tokens"] = int(mask.numel() - mask.sum())
        return {"choice-prefill": compare(selfknow, plain_side, sum(map(len, prompts)), self.forward_floor(computed))}

    def oe_decode(self, records: Sequence[Record], new_tokens: int) -> dict:
        prompts = [self.prompter.encode(self.prompter.render(r)) for r in records]
        ids, mask, _ = self.batch(prompts)

        def timed(run: Callable[[int], Any], warmups: int = 1) -> dict:
            """Seconds for N tokens, and ms/step from the time for 1 token (no decode step)."""
            side, result = measure(
                lambda: run(new_tokens), self.device, lambda: [run(new_tokens) for _ in range(warmups)]
            )
            if "seconds" in side and new_tokens > 1:
                short, _ = measure(lambda: run(1), self.device, lambda: [run(1) for _ in range(warmups)])
                if "seconds" in short:
                    side["ms_per_step"] = 1e3 * (side["seconds"] - short["seconds"]) / (new_tokens - 1)
            return side | ({} if result is None else {"decoded_tokens": result})

        def selfknow(n: int) -> int:
            stats = self.answer(records, AnswerConfig(max_new_tokens=n, stop=()))[1]
            return stats.generated_tokens + stats.wasted_decode_tokens

        def plain(n: int, **options) -> int:
            out = self.model.generate(
                ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False, **options
            )
            return out[:, ids.shape[1] :].cpu().numel()

        tokens = len(records) * new_tokens
        config, elsize = self.model.config, self.model.dtype.itemsize
        weights = (self.counts["body"] + self.counts["head"]) * elsize
        head_dim = config.hidden_size // config.num_attention_heads
        per_token = config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * elsize
        cache = per_token * (sum(map(len, prompts)) + len(records) * new_tokens / 2)
        flops = 2 * (self.counts["body"] + self.counts["head"]) * len(records)
        floor_step = max((weights + cache) / self.bandwidth, flops / self.peak)
        selfknow_side = timed(selfknow)
        rows = {}
        static = {"cache_implementation": "static"}
        for name, options, warmups in (("oe-decode", {}, 1), ("oe-decode-static", static, 2)):
            plain_side = timed(lambda n, o=options: plain(n, **o), warmups)  # compiling may take a second call
            row = compare(selfknow_side, plain_side, tokens, floor_step * new_tokens)
            row["floor_ms_per_step"] = 1e3 * floor_step
            if "ms_per_step" in selfknow_side:
                row["selfknow_over_floor"] = selfknow_side["ms_per_step"] / row["floor_ms_per_step"]
            rows[name] = row
        return rows

    def probe_features(self, queries: Sequence[QueryText]) -> dict:
        selfknow, _ = measure(lambda: forward_queries(self.model, self.tokenizer, queries, hidden=True), self.device)
        ids, mask, positions = self.batch([q.ids for q in queries])

        @torch.inference_mode()
        def plain():
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True, logits_to_keep=1
            )
            return torch.stack([h[:, -1] for h in out.hidden_states], dim=1).cpu()

        tokens = sum(len(q.ids) for q in queries)
        return {"probe-features": compare(selfknow, measure(plain, self.device)[0], tokens, self.forward_floor(tokens))}

    def ct_training(self, queries: Sequence[QueryText]) -> dict:
        grades = [float(i % 2) for i in range(len(queries))]
        config = TuningConfig(top_layers=None, epochs=1, batch_size=16)  # one epoch: throughput, not quality
        lora = config.lora(num_layers(self.model))
        peft_model = get_peft_model(self.model, lora, adapter_name="ct")

        def selfknow(count: int) -> None:
            items = cache_queries(peft_model, self.tokenizer, queries[:count], grades[:count], config)
            options = query_options(self.tokenizer, queries[:count])
            data, validation = CachedQueries(items), CachedQueries(items[: config.batch_size])
            train_adapter(peft_model, "ct", options, data, validation, config)

        try:
            selfknow_side, _ = measure(lambda: selfknow(len(queries)), self.device, lambda: selfknow(config.batch_size))
        finally:
            peft_model.unload()
        plain_model = get_peft_model(self.model, lora)
        optimizer = torch.optim.AdamW([p for p in plain_model.parameters() if p.requires_grad], lr=config.lr)
        batches = [
            self.batch([q.ids for q in queries[i : i + config.batch_size]])
            for i in range(0, len(queries), config.batch_size)
        ]

        def plain(steps: Sequence[tuple[torch.Tensor, ...]]) -> float:
            plain_model.train()
            for ids, mask, positions in steps:
                labels = ids.masked_fill(mask == 0, -100)
                loss = plain_model(input_ids=ids, attention_mask=mask, position_ids=positions, labels=labels).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            return float(loss.detach())

        try:
            plain_side, _ = measure(lambda: plain(batches), self.device, lambda: plain(batches[:1]))
        finally:
            plain_model.unload()
            self.model.eval()
        tokens = sum(len(q.ids) for q in queries)
        return {"ct-training": compare(selfknow_side, plain_side, tokens, self.forward_floor(tokens, passes=4))}

    def sft_training(self, rows: Sequence[Row]) -> dict:
        lora = peft.LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
        collate, tokens, results = collate_rows(self.pad), sum(len(ids) for ids, _ in rows), {}
        for name, checkpointing in (("sft-training", False), ("sft-training-checkpointed", True)):
            peft_model = get_peft_model(self.model, lora)

            def selfknow(part: Sequence[Row], model=peft_model, checkpointing=checkpointing) -> None:
                settings = dict(batch_size=SFT_BATCH, epochs=1, lr=1e-4, seed=0, gradient_checkpointing=checkpointing)
                fit(model, part, pad_id=self.pad, **settings)

            try:
                selfknow_side, _ = measure(lambda: selfknow(rows), self.device, lambda: selfknow(rows[:SFT_BATCH]))
            finally:
                peft_model.unload()
            plain_model = get_peft_model(self.model, lora)
            if checkpointing:
                plain_model.get_base_model().activation_checkpointing_enable({"use_reentrant": False})
            optimizer = torch.optim.AdamW([p for p in plain_model.parameters() if p.requires_grad], lr=1e-4)

            def plain(part: Sequence[Row], model=plain_model, optimizer=optimizer) -> None:
                model.train()
                for i in range(0, len(part), SFT_BATCH):
                    items = [{"input_ids": ids, "labels": labels} for ids, labels in part[i : i + SFT_BATCH]]
                    batch = {k: v.to(self.device) for k, v in collate(items).items()}
                    model(**batch).loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)

            try:
                plain_side, _ = measure(lambda: plain(rows), self.device, lambda: plain(rows[:SFT_BATCH]))
            finally:
                if checkpointing:
                    plain_model.get_base_model().activation_checkpointing_disable()
                plain_model.unload()
                self.model.eval()
            results[name] = compare(selfknow_side, plain_side, tokens, self.forward_floor(tokens, passes=4))
        return results

    def estimators(self, rows: int, prompt_tokens: int) -> dict[str, dict]:
        """Fit and score each estimator on answered records graded alternately right and wrong (both
        classes in every split); LoRA estimators train one epoch on at most half the layers."""
        answered = {}
        for format in ("oe", "choice"):
            records = self.records(rows, format, prompt_tokens, f"estimators-{format}")
            records = self.answer(records, AnswerConfig(max_new_tokens=8, stop=(), samples=4))[0]  # sampling ones
            for i, record in enumerate(records):
                record.correct = i % 2 == 0
            half, quarter = rows // 2, rows * 3 // 4
            answered[format] = (records[:half], records[half:quarter], records[quarter:])
        context = Context("bench-random", model=self.model, tokenizer=self.tokenizer, progress=False)
        top = min(TuningConfig.top_layers, max(1, num_layers(self.model) // 2))
        tuned = {"ct": {"epochs": 1, "top_layers": top}, "lora-probe": {"epochs": 1, "top_layers": top}}
        names = [n for n in ESTIMATORS if n not in SKIPPED_ESTIMATORS]
        results = {}
        for name in sorted(names, key=lambda n: n in tuned):  # adapters last: the rest see the bare model
            train, validation, test = answered["choice" if name == "choice-logits" else "oe"]
            start = time.perf_counter()
            try:
                estimator = ESTIMATORS[name](**tuned.get(name, {}))
                scores = np.asarray(estimator.fit(train, validation, context).score(test, context), dtype=float)
                if scores.shape != (len(test),) or not np.all((scores >= 0) & (scores <= 1)):
                    raise ValueError(f"scores are not {len(test)} probabilities: {scores.tolist()}")
                results[name] = {"status": "ok", "seconds": time.perf_counter() - start}
            except Exception as err:  # reported per estimator, so one failure hides no other
                results[name] = {"status": first_line(err), "seconds": time.perf_counter() - start}
        return results


def print_table(summary: dict) -> None:
    print("| workload | tokens | selfknow tok/s | plain tok/s | plain ÷ selfknow | selfknow ÷ floor | note |")
    print("|---|---|---|---|---|---|---|")
    for name, row in summary["workloads"].items():
        if "error" in row:
            print(f"| {name} | | | | | | {row['error']} |")
            continue
        sides = [row[s].get("tokens_per_s") for s in ("selfknow", "plain")]
        cells = [f"{v:,.0f}" if v else "failed" for v in sides]
        ratios = [f"{row[k]:.2f}" if k in row else "" for k in ("plain_over_selfknow", "selfknow_over_floor")]
        notes = [f"{s}: {row[s]['error']}" for s in ("selfknow", "plain") if "error" in row[s]]
        steps = [row[s].get("ms_per_step") for s in ("selfknow", "plain")]
        if "floor_ms_per_step" in row and None not in steps:
            notes.append(f"ms/step {steps[0]:.2f} vs {steps[1]:.2f}, floor {row['floor_ms_per_step']:.2f}")
        memory = [row[s].get("peak_memory_gb") for s in ("selfknow", "plain")]
        if None not in memory:
            notes.append(f"peak GB {memory[0]:.1f} vs {memory[1]:.1f}")
        print(f"| {name} | {row['tokens']:,} | {cells[0]} | {cells[1]} | {' | '.join(ratios)} | {'; '.join(notes)} |")
    if summary["estimators"]:
        print("\n| estimator | status | seconds |\n|---|---|---|")
    for name, row in summary["estimators"].items():
        print(f"| {name} | {row['status']} | {row['seconds']:.1f} |")
    print(
        f"\n{summary['device_name']}, {summary['dtype']}: matmul {summary['matmul_peak_tflops']:.3g} TFLOP/s, "
        f"copy {summary['bandwidth_gb_per_s']:.0f} GB/s; peak memory {summary['peak_memory_gb']:.2f} GB\n"
        f"{summary['command']} (git {summary['git']})"
    )


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="llama2-7b")
    parser.add_argument("--model", help="a model spec to load (selfknow.load_model) instead of a random --shape")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    parser.add_argument("--rows", type=int, help="prompts per answering and probe workload (64; tiny: 8)")
    parser.add_argument("--prompt-tokens", type=int, default=64, help="about this many tokens per prompt")
    parser.add_argument("--max-new-tokens", type=int, help="tokens decoded per open-ended row (32; tiny: 8)")
    parser.add_argument("--train-rows", type=int, help="queries of the training workload (64; tiny: 16)")
    parser.add_argument("--estimator-rows", type=int, help="records per estimator, split 2:1:1 (64; tiny: 16)")
    parser.add_argument("--sft-tokens", type=int, help="tokens per row of the sft workloads (512; tiny: 32)")
    parser.add_argument("--estimators", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--workloads", help="comma-separated workloads to run (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu.json"))
    args = parser.parse_args(argv)
    names = ("rows", "max_new_tokens", "train_rows", "estimator_rows", "sft_tokens")
    sizes = dict(zip(names, SIZES[args.shape], strict=True))
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    device = torch.device(args.device)
    if args.model:
        model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
        never_eos(model, tokenizer)
    else:
        model, tokenizer = build_model(args.shape, device, resolve_dtype(args.dtype, device))
    config = model.config
    peak = matmul_peak(device, model.dtype, config.hidden_size, config.intermediate_size)
    bench = Workloads(model, tokenizer, device, peak, copy_bandwidth(device), args.seed)
    rows, prompt_tokens = args.rows, args.prompt_tokens

    def queries(n: int, tag: str) -> list[QueryText]:
        records = bench.records(n, "oe", prompt_tokens, tag)
        return [render_query(dataclasses.replace(r, output=bench.phrase(3)), tokenizer) for r in records]

    runs: dict[str, Callable[[], dict]] = {
        "choice-prefill": lambda: bench.choice_prefill(bench.records(rows, "choice", prompt_tokens, "choice")),
        "oe-decode": lambda: bench.oe_decode(bench.records(rows, "oe", prompt_tokens, "oe"), args.max_new_tokens),
        "probe-features": lambda: bench.probe_features(queries(rows, "probe")),
        "ct-training": lambda: bench.ct_training(queries(args.train_rows, "train")),
        "sft-training": lambda: bench.sft_training(
            taught_rows(len(tokenizer), args.train_rows, args.sft_tokens, args.seed)
        ),
    }
    chosen = [w.strip() for w in args.workloads.split(",")] if args.workloads else list(runs)
    unknown = sorted(set(chosen) - set(runs))
    if unknown:
        parser.error(f"unknown workloads {', '.join(unknown)}; choose from {', '.join(runs)}")
    workloads: dict[str, dict] = {}
    for name, run in ((n, runs[n]) for n in chosen):
        start = time.perf_counter()
        try:
            workloads.update(run())
        except Exception as err:  # a failure outside the timed sides (building inputs, PEFT wrapping)
            workloads[name] = {"error": first_line(err)}
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
    estimators: dict[str, dict] = {}
    if args.estimators:
        try:
            estimators = bench.estimators(args.estimator_rows, prompt_tokens)
        except Exception as err:
            estimators = {"answering": {"status": first_line(err), "seconds": 0.0}}
    sides = [s for row in workloads.values() for s in (row.get("selfknow", {}), row.get("plain", {}))]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    summary = {
        "command": shlex.join(["python", "bench/gpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "git": commit,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "dtype": str(model.dtype).removeprefix("torch."),
        "shape": args.model or args.shape,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "parameters": bench.counts,
        "settings": {k: getattr(args, k) for k in ("prompt_tokens", *names)},
        "matmul_peak_tflops": peak / 1e12,
        "bandwidth_gb_per_s": bench.bandwidth / 1e9,
        "peak_memory_gb": (
            max((s.get("peak_memory_gb", 0.0) for s in sides), default=0.0)
            if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux: the process's max RSS
        ),
        "workloads": workloads,
        "estimators": estimators,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print_table(summary)
    return summary


if __name__ == "__main__":
    main()

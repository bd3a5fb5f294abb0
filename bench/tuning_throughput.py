"""Calibration-tuning throughput against the FLOP floor of the tokens it processes.

    .venv/bin/python bench/tuning_throughput.py --run runs/bench     # graded answers of a `selfknow tune` run
    .venv/bin/python bench/tuning_throughput.py --run runs/mmlu-ref --model qwen2.5-coder-1.5b \
        --top-layers 6 --records 128 --cached-only --out bench/results/tuning_throughput_reference.json

Trains the calibration-tuning adapter for one epoch on the first ``--records`` graded training answers,
twice: LoRA on the top ``--top-layers`` layers with the lower layers' activations cached, and LoRA on
every layer (no cache; ``--cached-only`` skips it). Reports tokens/s, the time over the FLOP floor and
peak memory. The floor counts, per token, 2 x parameters for a forward pass and 2 x parameters for the
backward pass through frozen weights (no weight gradients but LoRA's, which are negligible), over the
tuned layers, plus the LM head where logits are read; and the caching pass, a forward pass of every layer, once (the
regularizer's base distribution needs the last layer even when only the top layers are tuned). The
caching pass is the feature pass's work (every layer, hidden states kept), so its own ratio is reported.

The cached configuration also trains a second adapter on the same cached activations with the random batches
a plain ``transformers.Trainer`` draws (what selfknow did before it grouped queries by length), side by side,
and reports the tokens each batch order computes over the useful ones. ``--profile`` instead prints where the
cached configuration's training spends its CPU time (torch's profiler, operators by self time).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from unittest import mock

import torch
from peft import get_peft_model
from torch.profiler import ProfilerActivity, profile
from transformers import Trainer

from answer_throughput import matmul_peak  # bench/ is on the path when this script runs
from selfknow.confidence import labels, tuning
from selfknow.confidence.query import render_query
from selfknow.confidence.tuning import (
    CachedQueries,
    TuningConfig,
    cache_queries,
    num_layers,
    query_options,
    train_adapter,
)
from selfknow.data.records import read_records
from selfknow.models import load_model


def layer_parameters(model) -> list[int]:
    return [sum(p.numel() for p in layer.parameters()) for layer in model.get_decoder().layers]


def padded_over_useful(order: list[int], lengths: list[int], batch_size: int) -> float:
    """Tokens computed (each batch padded to its longest query) over the queries' own tokens."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(max(lengths[i] for i in batch) * len(batch) for batch in batches) / sum(lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/bench"))
    parser.add_argument("--records", type=int, default=512)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--top-layers", type=int, default=10)
    parser.add_argument("--cached-only", action="store_true", help="skip the every-layer configuration")
    parser.add_argument("--profile", action="store_true", help="profile the cached configuration's training only")
    parser.add_argument("--out", type=Path, default=Path("bench/results/tuning_throughput.json"))
    args = parser.parse_args()
    records = read_records(args.run / "answers" / "train.jsonl")[: args.records]
    grades = labels(records)
    results = {}
    configurations = [(f"top-{args.top_layers} layers, cached activations", args.top_layers)]
    configurations += [] if args.cached_only else [("every layer, no cache", None)]
    for name, top in configurations:
        model, tokenizer = load_model(args.model)
        config = TuningConfig(top_layers=top, epochs=1, batch_size=16)  # one epoch: throughput, not quality
        peft_model = get_peft_model(model, config.lora(num_layers(model)), adapter_name="ct")
        queries = [render_query(r, tokenizer) for r in records]
        tokens = sum(len(q.ids) for q in queries)
        start = time.perf_counter()
        items = cache_queries(peft_model, tokenizer, queries, grades, config)
        cache_seconds = time.perf_counter() - start
        data, validation = CachedQueries(items), CachedQueries(items[:64])
        if args.profile:
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                train_adapter(peft_model, "ct", query_options(tokenizer, queries), data, validation, config)
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
            return
        passes = []
        hook = model.get_decoder().register_forward_hook(lambda *a, seen=passes: seen.append(1))
        start = time.perf_counter()
        train_adapter(peft_model, "ct", query_options(tokenizer, queries), data, validation, config)
        train_seconds = time.perf_counter() - start
        hook.remove()
        steps = -(-len(data) // config.batch_size)
        validation_passes = -(-len(validation) // config.batch_size)
        sizes = layer_parameters(model)
        first = num_layers(model) - (top or num_layers(model))
        trained = sum(sizes[first:])
        head = model.get_output_embeddings().weight.numel()
        read = sum(len(item["answer_positions"]) + 1 for item in items)
        answers = read - len(items)
        # caching: one base forward pass of every layer (the regularizer's base distribution needs the last
        # layer), the LM head at the answer positions; training: forward and backward of the tuned layers
        cache_flops = 2 * sum(sizes) * tokens + 2 * head * answers
        floor_flops = cache_flops + 4 * trained * tokens + 4 * head * read
        peak = matmul_peak(model.config.hidden_size, model.config.intermediate_size)
        results[name] = {
            "model": args.model,
            "records": len(records),
            "tokens": tokens,
            "cache_seconds": round(cache_seconds, 1),
            "train_seconds": round(train_seconds, 1),
            "tokens_per_s": round(tokens / (cache_seconds + train_seconds), 1),
            "train_tokens_per_s": round(tokens / train_seconds, 1),
            "matmul_peak_gflops": round(peak, 1),
            "time_over_floor": round((cache_seconds + train_seconds) / (floor_flops / peak / 1e9), 2),
            "caching_time_over_floor": round(cache_seconds / (cache_flops / peak / 1e9), 2),
            "training_time_over_floor": round(train_seconds / ((floor_flops - cache_flops) / peak / 1e9), 2),
            "model_passes_per_training_step": round((len(passes) - validation_passes) / steps, 2),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        }
        if top is not None:
            peft_model.add_adapter("random", config.lora(num_layers(model)))
            peft_model.set_adapter("random")
            with mock.patch.object(tuning.CalibrationTrainer, "_get_train_sampler", Trainer._get_train_sampler):
                start = time.perf_counter()
                train_adapter(peft_model, "random", query_options(tokenizer, queries), data, validation, config)
                seconds = time.perf_counter() - start
            lengths = data.lengths()
            random_order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(config.seed)).tolist()
            grouped = list(tuning.LengthGroupedBatches(config.batch_size, lengths, config.seed))
            mean = round(tokens / len(lengths), 1)
            results[name]["query_tokens"] = {"min": min(lengths), "mean": mean, "max": max(lengths)}
            results[name]["padded_over_useful_tokens"] = {
                "grouped": round(padded_over_useful(grouped, lengths, config.batch_size), 2),
                "random": round(padded_over_useful(random_order, lengths, config.batch_size), 2),
            }
            results[name]["random_batches"] = {
                "train_seconds": round(seconds, 1),
                "training_time_over_floor": round(seconds / ((floor_flops - cache_flops) / peak / 1e9), 2),
            }
        print(name, json.dumps(results[name]), flush=True)
        del model, peft_model, items, data
        torch.manual_seed(0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

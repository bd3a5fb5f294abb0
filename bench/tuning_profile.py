"""Where calibration training's time goes: one epoch on the first 64 graded training answers of a run, under
torch's profiler, the operators with the most CPU time.

    .venv/bin/python bench/tuning_profile.py --run runs/mmlu-ref
"""

from __future__ import annotations

import argparse
from pathlib import Path

from peft import get_peft_model
from torch.profiler import ProfilerActivity, profile

from selfknow.confidence import labels
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/mmlu-ref"))
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--top-layers", type=int, default=10)
    args = parser.parse_args()
    records = read_records(args.run / "answers" / "train.jsonl")[: args.records]
    model, tokenizer = load_model(args.model)
    config = TuningConfig(top_layers=args.top_layers, epochs=1, batch_size=16)
    peft_model = get_peft_model(model, config.lora(num_layers(model)), adapter_name="ct")
    queries = [render_query(r, tokenizer) for r in records]
    items = cache_queries(peft_model, tokenizer, queries, labels(records), config)
    data, validation = CachedQueries(items), CachedQueries(items[:16])
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        train_adapter(peft_model, "ct", query_options(tokenizer, queries), data, validation, config)
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()

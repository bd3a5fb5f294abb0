"""How many answers calibration tuning's regularizer would skip: answers whose span in the rendered
uncertainty query is empty, under a model's tokenizer.

    .venv/bin/python bench/query_span.py runs/demo/answers/test.jsonl qwen2.5-coder-1.5b
"""

from __future__ import annotations

import argparse

from transformers import AutoTokenizer

from selfknow.confidence.query import render_query
from selfknow.data.records import read_records
from selfknow.models import resolve_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("answers", help="a JSONL file of answered records")
    parser.add_argument("model", help="the model spec whose tokenizer renders the queries")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_spec(args.model))
    records = [r for r in read_records(args.answers) if (r.output or "").strip()]
    empty = sum(q.answer_end == q.answer_start for q in (render_query(r, tokenizer) for r in records))
    print(f"{args.model}: {empty} of {len(records)} answers have an empty regularized span")


if __name__ == "__main__":
    main()

"""The Self-RAG model as a critic, measured the way the paper measures its critic: given a held-out question, a
passage and an answer, does the model's next reflection token match the rule label? (Teacher-forced: the
rule-labelled sequences of the test questions are fed in, and at each IsRel and IsSup position the token with
the highest probability among its group is compared with the label.) The evaluation report's agreement is
measured instead on the model's own generated answers, which adds the generator's errors to the critic's.

    .venv/bin/python bench/rag_critic_agreement.py runs/rag --sample 400
"""

from __future__ import annotations

import argparse
import random
from collections import Counter

import torch

from selfknow.rag.labels import examples_for
from selfknow.rag.reflection import ISREL_TOKENS, ISSUP_TOKENS, reflection_token_ids
from selfknow.rag.run import RagRun
from selfknow.rag.sequences import encode_example


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--sample", type=int, default=400, help="rule-labelled test sequences to read")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = RagRun(args.run_dir, progress=False)
    model, tokenizer = run.generator()
    closed = {r.id: r for r in run.calibration.records("test")}
    retrieved = run.retrieved()
    examples = [
        e
        for record in run.records("test")
        for e in examples_for(record, retrieved[record.id], closed[record.id], tokenizer.eos_token)
        if "<paragraph>" in e.output
    ]
    random.Random(args.seed).shuffle(examples)
    examples = examples[: args.sample]
    groups = {
        "IsRel": reflection_token_ids(tokenizer, ISREL_TOKENS),
        "IsSup": reflection_token_ids(tokenizer, ISSUP_TOKENS),
    }
    hits: dict[str, list[bool]] = {name: [] for name in groups}
    confusion: Counter[tuple[str, str]] = Counter()
    names = dict(zip(groups["IsSup"], ISSUP_TOKENS, strict=True))
    with torch.inference_mode():
        for example in examples:
            ids, _ = encode_example(tokenizer, example.prompt, example.output)
            read = [i - 1 for i, t in enumerate(ids) if any(t in group for group in groups.values())]
            if not read:
                continue
            # logits only where a reflection token is predicted (row j of `logits` is position read[j])
            logits = model(input_ids=torch.tensor([ids]), logits_to_keep=torch.tensor(read)).logits[0]
            row = {position: j for j, position in enumerate(read)}
            for name, group in groups.items():
                for position in (i for i, t in enumerate(ids) if t in group):
                    predicted = group[int(logits[row[position - 1], group].argmax())]
                    hits[name].append(predicted == ids[position])
                    if name == "IsSup":
                        confusion[(names[ids[position]], names[predicted])] += 1
    print(f"{len(examples)} rule-labelled test sequences (seed {args.seed})")
    for name, values in hits.items():
        print(f"{name}: agreement {sum(values) / len(values):.3f} over {len(values)} labels")
    for (label, predicted), count in sorted(confusion.items()):
        print(f"  IsSup label {label} -> {predicted}: {count}")


if __name__ == "__main__":
    main()

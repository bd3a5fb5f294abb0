"""Quirky models: LoRA fine-tuning so a model answers with Alice's labels in Alice's contexts and Bob's in Bob's.

The loss sits on the answer token only (Mallen & Belrose): cross-entropy over the two choice tokens at
the last prompt position, with the character's own label. It reuses calibration tuning's machinery
(:mod:`selfknow.confidence.tuning`): the lower layers' activations are computed once and only the top
layers train, the loop is a ``transformers.Trainer`` (so ``accelerate launch`` scales it), and the
adapter is saved in plain PEFT format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfknow.confidence.query import QueryText
from selfknow.confidence.tuning import CachedQueries, TuningConfig, cache_queries_in_parts, train_adapter
from selfknow.elk.quirky import QuirkyExample
from selfknow.errors import ModelError


@dataclass(frozen=True)
class Encoded:
    queries: list[QueryText]
    options: list[tuple[int, int]]  # (negative, positive) choice tokens per example


def choice_token(tokenizer, prompt: str, choice: str) -> int:
    """The first token of ``choice`` as the model sees it right after ``prompt`` (tokenized in context)."""
    tail = prompt[-64:]
    base = tokenizer(tail, add_special_tokens=False).input_ids
    ids = tokenizer(tail + choice, add_special_tokens=False).input_ids
    if len(ids) <= len(base) or ids[: len(base)] != base:
        raise ModelError(f"choice {choice!r} does not start a new token after {tail[-20:]!r} for this tokenizer")
    return ids[len(base)]


def encode(examples: Sequence[QuirkyExample], tokenizer) -> Encoded:
    cache: dict[tuple[str, str, str], tuple[int, int]] = {}
    queries, options = [], []
    for example in examples:
        queries.append(QueryText(example.text, tokenizer(example.text).input_ids, 0, 0))
        key = (example.text[-64:], *example.choices)
        if key not in cache:
            cache[key] = tuple(choice_token(tokenizer, example.text, c) for c in example.choices)
        options.append(cache[key])
    return Encoded(queries, options)


def train_quirky(
    peft_model,
    adapter: str,
    tokenizer,
    train: Sequence[QuirkyExample],
    validation: Sequence[QuirkyExample],
    config: TuningConfig,
    *,
    progress: bool = False,
    cache: Path | None = None,
    checkpoints: Path | None = None,
) -> dict:
    """Train the named adapter on the characters' labels; returns the training numbers (best epoch on
    validation NLL). The base pass's activations are saved in parts to ``cache`` (and read back from it), and
    with a ``checkpoints`` folder a killed training resumes from its last checkpoint."""
    cached = []
    for examples in (train, validation):
        encoded = encode(examples, tokenizer)
        labels = [float(e.label) for e in examples]
        cached.append(
            cache_queries_in_parts(
                peft_model,
                tokenizer,
                encoded.queries,
                labels,
                config,
                cache,
                options=encoded.options,
                progress=progress,
            )
        )
    return train_adapter(
        peft_model,
        adapter,
        encode(train[:1], tokenizer).options[0],  # the shared pair is unused: every example has its own
        CachedQueries(cached[0]),
        CachedQueries(cached[1]),
        config,
        progress=progress,
        checkpoints=checkpoints,
    )


def agreement(log_odds: np.ndarray, examples: Sequence[QuirkyExample]) -> dict[str, float]:
    """How often the model's answer (log-odds > 0) matches each character's labels, per context."""
    said = log_odds > 0
    out = {}
    for character in ("Alice", "Bob"):
        rows = np.array([e.character == character for e in examples])
        if not rows.any():
            continue
        for whose in ("alice", "bob"):
            truth = np.array([getattr(e, f"{whose}_label") for e in examples])[rows].astype(bool)
            out[f"{character} context vs {whose.capitalize()}'s labels"] = float((said[rows] == truth).mean())
        own = np.array([e.label for e in examples])[rows].astype(bool)
        if own.all() or not own.any():
            continue
        # the labels are 3:1 negative, so also the mean of the two classes' accuracies (a constant scores 0.5)
        balanced = ((said[rows] & own).sum() / own.sum() + (~said[rows] & ~own).sum() / (~own).sum()) / 2
        out[f"{character} context, balanced accuracy on own labels"] = float(balanced)
    return out

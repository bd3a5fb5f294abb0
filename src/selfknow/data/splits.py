"""Seeded splits, seeded randomness and multiple-choice construction shared by dataset sources.

Splits are a pure function of (seed, dataset, entity): adding entities never moves existing ones, and
every question about one entity (a country, an element, an equation) lands in the same split, so a
model is never tested on a fact it was trained on under another phrasing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Iterable

from selfknow.data.records import Record


def _unit_hash(*parts: object) -> float:
    """A uniform number in [0, 1) from the parts, identical on every machine and Python version."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:16], 16) / 16**16


def split_of(dataset: str, entity: str, seed: int, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> str:
    """'train', 'validation' or 'test' by thresholding a hash of ``seed|dataset|entity``."""
    u = _unit_hash(seed, dataset, entity)
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"


def rng_for(*parts: object) -> random.Random:
    """A generator seeded by the parts, so each question's randomness is independent of load order."""
    return random.Random(int(_unit_hash(*parts) * 2**53))


def choice_id(record_id: str) -> str:
    """The id of the choice version of an open-ended question: both may share one results file."""
    return f"{record_id}/choice"


def as_choice(record: Record, choices: list[str], answer_index: int) -> Record:
    """The choice version of an open-ended record with the options in the given order."""
    return dataclasses.replace(
        record, id=choice_id(record.id), format="choice", choices=list(choices), answer_index=answer_index
    )


def with_choices(record: Record, distractors: Iterable[str], rng: random.Random, k: int = 3) -> Record:
    """A (k+1)-way choice version of ``record``: the first k distractors that match neither the gold
    answer, its aliases nor each other (case-insensitively), with the gold put at a uniform position.

    Fewer than k usable distractors give fewer choices rather than a duplicate or a second right one.
    """
    taken = {s.strip().casefold() for s in [record.answer, *record.aliases]}
    kept: list[str] = []
    for text in distractors:
        key = text.strip().casefold()
        if key and key not in taken:
            taken.add(key)
            kept.append(text)
            if len(kept) == k:
                break
    position = rng.randrange(len(kept) + 1)
    return as_choice(record, [*kept[:position], record.answer, *kept[position:]], position)

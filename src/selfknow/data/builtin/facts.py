"""What the built-in sources share: facts become seeded records, and package data is found on disk."""

from __future__ import annotations

import importlib.util
import random
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfknow.data.records import Record
from selfknow.data.registry import Request
from selfknow.data.splits import rng_for, split_of, with_choices
from selfknow.errors import DataError

# Held-out sets must be big enough for narrow confidence intervals (certifying ECE < 0.05 takes ~2,000 items).
SPLIT_FRACTIONS = (0.4, 0.2, 0.4)  # train, validation, test


@dataclass(frozen=True)
class Fact:
    """One open-ended question before it gets a split, a format and an id."""

    task: str
    key: str  # the id's last part: "fr", "iron", "23+45"
    entity: str
    question: str
    answer: str
    aliases: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, hash=False)


# (fact, the answers of its task, generator) -> candidate distractors, best first
Distractors = Callable[[Fact, list[str], random.Random], list[str]]


def shuffled(fact: Fact, pool: list[str], rng: random.Random) -> list[str]:
    return rng.sample(pool, len(pool))


def to_records(dataset: str, facts: list[Fact], request: Request, distractors: Distractors = shuffled) -> list[Record]:
    """Records of the requested format with ids ``dataset/task/key``, split by entity in SPLIT_FRACTIONS.

    Choice distractors default to the other answers of the same task, in an order drawn from a
    generator seeded by (seed, id), so one question's choices do not depend on which others are loaded.
    """
    pools: dict[str, dict[str, None]] = {}
    for fact in facts:
        pools.setdefault(fact.task, {})[fact.answer] = None

    records = []
    for fact in facts:
        record = Record(
            id=f"{dataset}/{fact.task}/{fact.key}",
            dataset=dataset,
            split=split_of(dataset, fact.entity, request.seed, SPLIT_FRACTIONS),
            question=fact.question,
            answer=fact.answer,
            aliases=list(fact.aliases),
            task=fact.task,
            entity=fact.entity,
            meta=dict(fact.meta),
        )
        if request.format == "choice":
            rng = rng_for(request.seed, record.id)
            record = with_choices(record, distractors(fact, list(pools[fact.task]), rng), rng)
        records.append(record)
    return records


def package_dir(package: str, install: str) -> Path:
    """A data package's folder, found without importing it (mendeleev's imports need a dozen extras)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"this dataset needs the '{package}' package: {install}")
    return Path(spec.submodule_search_locations[0])


def accentless(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def unique_aliases(names: Iterable[str], gold: str) -> tuple[str, ...]:
    """Aliases in order of appearance plus accent-free forms of them and of the gold (Bogotá: Bogota)."""
    seen = {gold.casefold()}
    out: list[str] = []
    for name in [gold, *names]:
        for form in (name, accentless(name)):
            form = form.strip()
            if form and form.casefold() not in seen:
                seen.add(form.casefold())
                out.append(form)
    return tuple(out)

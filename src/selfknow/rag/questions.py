"""Questions whose answers the retrieval corpus holds, in the foundation's record schema.

They are the built-in country and element questions (golds and aliases already cleaned from the Factbook's
and mendeleev's own text, splits disjoint by entity), kept only where a passage about the question's
entity contains the gold or an alias once both are normalised: a question the corpus cannot answer
would measure the corpus, not the model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from selfknow.data.records import Record
from selfknow.data.registry import load_dataset
from selfknow.errors import DataError
from selfknow.grade import golds, normalize
from selfknow.rag.corpus import Passage

DEFAULT_TASKS = (
    "countries:capital",
    "countries:currency",
    "countries:continent",
    "countries:nationality",
    "countries:internet_code",
    "countries:highest_point",
    "elements:symbol",
    "elements:atomic_number",
    "elements:period",
)


def entity_name(record: Record) -> str:
    """The name a passage about the question's entity is titled with (a country's name, an element's)."""
    return str(record.meta.get("country") or record.entity)


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words once both are normalised (NFKD, accents and
    punctuation dropped, lower case; see :func:`selfknow.grade.normalize`): "26" is not in "126"."""
    return f" {normalize(phrase)} " in f" {normalize(text)} "


def contains_gold(text: str, record: Record) -> bool:
    return any(contains_phrase(text, gold) for gold in golds(record))


def rag_questions(passages: Sequence[Passage], tasks: Sequence[str] = DEFAULT_TASKS, seed: int = 0) -> list[Record]:
    """Open-ended records of the requested ``dataset:task`` pairs that a passage about their entity answers."""
    by_title: dict[str, list[Passage]] = defaultdict(list)
    for passage in passages:
        by_title[normalize(passage.title)].append(passage)
    wanted: dict[str, set[str]] = defaultdict(set)
    for spec in tasks:
        dataset, _, task = spec.partition(":")
        if not task:
            raise DataError(f"question task {spec!r} is not of the form dataset:task (e.g. countries:capital)")
        wanted[dataset].add(task)
    kept = []
    for dataset, names in wanted.items():
        records = load_dataset(dataset, seed=seed)
        unknown = names - {r.task for r in records}
        if unknown:
            raise DataError(f"dataset '{dataset}' has no task(s) {', '.join(sorted(unknown))}")
        for record in records:
            about = by_title.get(normalize(entity_name(record)), [])
            if record.task in names and any(contains_gold(f"{p.title}\n{p.text}", record) for p in about):
                kept.append(record)
    if not kept:
        raise DataError("no question's answer is in the corpus: is the corpus built from the factbook and mendeleev?")
    return kept

"""Dataset sources by name, and the one loader that turns a dataset spec into records.

A spec is ``name`` or ``name:arg`` (``countries``, ``mmlu-csv:../data/mmlu``, ``mmlu:anatomy``,
``resplit:mmlu-csv:../data/mmlu``).
Sources register themselves with :func:`register`; ``selfknow datasets`` lists them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from selfknow.data.records import FORMATS, Record
from selfknow.data.splits import split_of
from selfknow.errors import DataError


@dataclass(frozen=True)
class Request:
    """What a source is asked for: its argument, the question format, the seed and a column mapping."""

    arg: str | None
    format: str
    seed: int = 0
    columns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    kind: str  # "built-in", "local file" or "hub"
    load: Callable[[Request], list[Record]]
    formats: tuple[str, ...] = FORMATS
    arg: str | None = None  # what the part after ':' means, e.g. "PATH"; None: takes no argument
    arg_required: bool = False
    fewshot_split: str = "train"


SOURCES: dict[str, Source] = {}


def register(
    name: str,
    *,
    description: str,
    kind: str,
    formats: tuple[str, ...] = FORMATS,
    arg: str | None = None,
    arg_required: bool = False,
    fewshot_split: str = "train",
) -> Callable[[Callable[[Request], list[Record]]], Callable[[Request], list[Record]]]:
    def decorate(load: Callable[[Request], list[Record]]) -> Callable[[Request], list[Record]]:
        SOURCES[name] = Source(name, description, kind, load, formats, arg, arg_required, fewshot_split)
        return load

    return decorate


def _ensure_sources_loaded() -> None:
    from selfknow.data import builtin, files, hub  # noqa: F401  (registration side effects)


def get_source(spec: str) -> tuple[Source, str | None]:
    """Split a spec into its registered source and argument; unknown names list the known ones."""
    _ensure_sources_loaded()
    name, _, arg = spec.partition(":")
    if name not in SOURCES:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(sorted(SOURCES))} (see `selfknow datasets`)")
    source = SOURCES[name]
    if arg and source.arg is None:
        raise DataError(f"dataset '{name}' takes no argument, got '{arg}'")
    if not arg and source.arg_required:
        raise DataError(f"dataset '{name}' needs an argument: {name}:{source.arg}")
    return source, arg or None


def load_dataset(
    spec: str,
    *,
    split: str | None = None,
    format: str = "oe",
    seed: int = 0,
    columns: dict[str, str] | None = None,
    limit: int | None = None,
) -> list[Record]:
    """Records of one split (or all splits) of a dataset, deterministic for the seed.

    ``limit`` keeps a seeded random subset of that size, in the source's order.
    """
    source, arg = get_source(spec)
    if format not in source.formats:
        raise DataError(f"dataset '{source.name}' has no '{format}' format; it has {', '.join(source.formats)}")
    records = source.load(Request(arg, format, seed, dict(columns or {})))
    if split is not None:
        available = sorted({r.split for r in records})
        records = [r for r in records if r.split == split]
        if not records:
            raise DataError(f"dataset '{spec}' has no '{split}' split; it has {', '.join(available) or 'none'}")
    records = seeded_subset(records, limit, seed)
    if not records:
        raise DataError(f"dataset '{spec}' gave no records")
    return records


def seeded_subset(records: list[Record], limit: int | None, seed: int) -> list[Record]:
    """``limit`` of ``records`` chosen by a seeded hash of their ids (the same for any order), in their order."""
    if limit is None or limit >= len(records):
        return records
    ranked = sorted(records, key=lambda r: hashlib.sha256(f"{seed}|{r.id}".encode()).hexdigest())
    keep = {r.id for r in ranked[:limit]}
    return [r for r in records if r.id in keep]


@register(
    "resplit",
    description="another dataset's questions re-split 60/20/20 into train, validation and test by entity, for "
    "calibration runs on a set with only a test split (MMLU's CSVs); a dev split stays the few-shot split",
    kind="wrapper",
    arg="SPEC",
    arg_required=True,
    fewshot_split="dev",
)
def load_resplit(request: Request) -> list[Record]:
    records = load_dataset(request.arg or "", format=request.format, seed=request.seed, columns=request.columns)
    return [
        r if r.split == "dev" else replace(r, split=split_of(r.dataset, r.entity or r.id, request.seed))
        for r in records
    ]

"""Symbols, atomic numbers, names and periodic-table places of the 118 elements, from mendeleev's SQLite table.

Left out on purpose:
- the block and group of lanthanum, actinium, lutetium and lawrencium, which periodic tables disagree on
  (mendeleev puts La and Ac in group 3 of the d-block and Lu and Lr in the f-block; IUPAC's 2021 proposal
  does the reverse), so no gold would be right for everyone;
- the group of the other 28 lanthanides and actinides, which have none;
- discovery years: the column mixes the year an element was recognised with the year it was isolated
  (beryllium: 1798, beside discoverers Wöhler and Bussy, whose isolation the text dates 1828), contradicts
  the table's own text (hydrogen 1766 against "Discovered by Henry Cavendish in 1776"; neodymium 1925
  against "Auer von Welsbach ... in 1885"), and a numeric gold admits no alias to absorb that.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from functools import lru_cache

from selfknow.data.builtin.facts import Fact, package_dir, to_records
from selfknow.data.records import Record
from selfknow.data.registry import Request, register

_SPELLINGS = {"Aluminum": ("Aluminium",), "Cesium": ("Caesium",), "Sulfur": ("Sulphur",)}
_CONTESTED_PLACE = {"Lanthanum", "Actinium", "Lutetium", "Lawrencium"}  # block and group 3 disputed


@dataclass(frozen=True)
class Element:
    number: int
    symbol: str
    name: str
    period: int
    block: str
    group: int | None  # None for the 28 lanthanides and actinides outside groups 1-18


@lru_cache(maxsize=1)
def elements() -> tuple[Element, ...]:
    """The 118 elements in order of atomic number, read from mendeleev's SQLite table."""
    db = package_dir("mendeleev", "pip install --no-deps mendeleev") / "elements.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT atomic_number, symbol, name, period, block, group_id FROM elements ORDER BY atomic_number"
        )
        return tuple(Element(*row) for row in rows)


@register(
    "elements",
    kind="built-in",
    description="symbols, atomic numbers, names, periods, blocks and groups of the 118 chemical elements",
)
def load_elements(request: Request) -> list[Record]:
    facts = []
    for e in elements():
        key, name = e.name.lower(), e.name
        spellings = _SPELLINGS.get(name, ())
        facts += [
            Fact("symbol", key, name, f"What is the chemical symbol of {key}?", e.symbol),
            Fact("atomic_number", key, name, f"What is the atomic number of {key}?", str(e.number)),
            Fact("name", key, name, f"Which chemical element has the symbol {e.symbol}?", name, spellings),
            Fact("number_to_name", key, name, f"Which chemical element has atomic number {e.number}?", name, spellings),
            Fact("period", key, name, f"In which period of the periodic table is {key}?", str(e.period)),
        ]
        if name not in _CONTESTED_PLACE:
            block = f"In which block of the periodic table is {key}?"
            facts.append(Fact("block", key, name, block, e.block, (f"{e.block}-block",)))
            if e.group is not None:
                group = f"Which group of the periodic table is {key} in?"
                facts.append(Fact("group", key, name, group, str(e.group)))
    return to_records("elements", facts, request)

"""Symbols, atomic numbers and names of the 118 elements, read from mendeleev's SQLite table."""

from __future__ import annotations

import sqlite3
from functools import lru_cache

from selfknow.data.builtin.facts import Fact, package_dir, to_records
from selfknow.data.records import Record
from selfknow.data.registry import Request, register

_SPELLINGS = {"Aluminum": ("Aluminium",), "Cesium": ("Caesium",), "Sulfur": ("Sulphur",)}


@lru_cache(maxsize=1)
def elements() -> tuple[tuple[int, str, str], ...]:
    """(atomic number, symbol, name) of the 118 elements, read from mendeleev's SQLite table."""
    db = package_dir("mendeleev", "pip install --no-deps mendeleev") / "elements.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return tuple(connection.execute("SELECT atomic_number, symbol, name FROM elements ORDER BY atomic_number"))


@register("elements", kind="built-in", description="symbols, atomic numbers and names of the 118 chemical elements")
def load_elements(request: Request) -> list[Record]:
    facts = []
    for number, symbol, name in elements():
        key = name.lower()
        facts += [
            Fact("symbol", key, name, f"What is the chemical symbol of {key}?", symbol),
            Fact("atomic_number", key, name, f"What is the atomic number of {key}?", str(number)),
            Fact(
                "name",
                key,
                name,
                f"Which chemical element has the symbol {symbol}?",
                name,
                _SPELLINGS.get(name, ()),
            ),
        ]
    return to_records("elements", facts, request)

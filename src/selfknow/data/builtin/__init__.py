"""Built-in question sets that need no network: country facts, chemical elements, graded arithmetic.

They mix famous and obscure entities (France and Tuvalu, iron and tennessine, 2 + 3 and 4817 + 2958),
so a model gets some right and some wrong, which is what learning to know what you know needs.
Golds and aliases come from data shipped in installed packages (CIA World Factbook, mendeleev).
"""

from __future__ import annotations

from selfknow.data.builtin.arithmetic import load_arithmetic
from selfknow.data.builtin.countries import load_countries
from selfknow.data.builtin.elements import load_elements
from selfknow.data.builtin.facts import SPLIT_FRACTIONS
from selfknow.data.records import Record
from selfknow.data.registry import Request, register

__all__ = ["SPLIT_FRACTIONS", "load_builtin"]


@register("builtin", kind="built-in", description="countries + elements + arithmetic")
def load_builtin(request: Request) -> list[Record]:
    return load_countries(request) + load_elements(request) + load_arithmetic(request)

"""Generated additions, subtractions and products, graded by operand size so accuracy falls from easy to
hopeless."""

from __future__ import annotations

import math
import random

from selfknow.data.builtin.facts import Fact, to_records
from selfknow.data.records import Record
from selfknow.data.registry import Request, register
from selfknow.data.splits import rng_for

# task: (operator, digits of the first operand, digits of the second)
ARITHMETIC_TASKS = {
    "add-1d": ("+", 1, 1),
    "add-2d": ("+", 2, 2),
    "add-3d": ("+", 3, 3),
    "add-4d": ("+", 4, 4),
    "sub-2d": ("-", 2, 2),
    "sub-3d": ("-", 3, 3),
    "mul-1x1": ("*", 1, 1),
    "mul-2x1": ("*", 2, 1),
    "mul-2x2": ("*", 2, 2),
}
# Equations per task where more exist: with it, arithmetic stays under two thirds of the built-in questions.
EQUATIONS_PER_TASK = 560


def _operands(digits: int) -> range:
    return range(1, 10) if digits == 1 else range(10 ** (digits - 1), 10**digits)


def _pair(task: str, index: int) -> tuple[int, int]:
    """The index-th operand pair of a task: row-major over both ranges, or for a subtraction over the
    pairs a >= b only (the lower triangle, row by row), so answers are never negative."""
    op, left, right = ARITHMETIC_TASKS[task]
    a_range, b_range = _operands(left), _operands(right)
    if op == "-":
        row = (math.isqrt(8 * index + 1) - 1) // 2
        return a_range[row], a_range[index - row * (row + 1) // 2]
    return a_range[index // len(b_range)], b_range[index % len(b_range)]


def equations(task: str) -> list[tuple[int, int]]:
    """All operand pairs of a task, or a fixed sample of EQUATIONS_PER_TASK of them.

    The sample does not depend on the seed, so every seed asks the same questions and only splits and
    choices change. Mixed-width products appear in both orders (23 * 4 and 4 * 23); subtractions are
    a - b with a >= b.
    """
    op, left, right = ARITHMETIC_TASKS[task]
    n_left, n_right = len(_operands(left)), len(_operands(right))
    total = n_left * (n_left + 1) // 2 if op == "-" else n_left * n_right
    rng = rng_for("arithmetic", task)
    picks = range(total) if total <= EQUATIONS_PER_TASK else rng.sample(range(total), EQUATIONS_PER_TASK)
    pairs = [_pair(task, i) for i in picks]
    return [(b, a) if left != right and rng.random() < 0.5 else (a, b) for a, b in pairs]


def near_misses(fact: Fact, pool: list[str], rng: random.Random) -> list[str]:
    """Two answers off by 1, 2 or 10, then other answers of the same task: plausible, never negative."""
    gold = int(fact.answer)
    near = [str(gold + d) for d in (-1, 1, -2, 2, -10, 10) if gold + d >= 0]
    return rng.sample(near, 2) + rng.sample(pool, len(pool))


@register(
    "arithmetic",
    kind="built-in",
    description="additions of 1-4 digit numbers, subtractions of 2-3 digit numbers and products up to 2x2 "
    "digits, graded by difficulty",
)
def load_arithmetic(request: Request) -> list[Record]:
    """Questions read "What is 23 * 4?": ``*`` rather than ``×`` because it is ASCII, one common token in
    every tokenizer, and the multiplication sign models see most in code and plain-text maths; and
    "What is 57 - 23?" with an ASCII hyphen-minus for the same reason.

    Both orders of a commutative pair share one entity ("4 * 23"), so an equation and its mirror image
    are always in the same split; a subtraction's entity is its ordered pair ("57 - 23"), since 23 - 57
    is another question. ``meta["difficulty"]`` is the total number of operand digits.
    """
    facts = []
    for task, (op, left, right) in ARITHMETIC_TASKS.items():
        for a, b in equations(task):
            value = a + b if op == "+" else a - b if op == "-" else a * b
            entity = f"{a} {op} {b}" if op == "-" else f"{min(a, b)} {op} {max(a, b)}"
            facts.append(
                Fact(
                    task,
                    f"{a}{op}{b}",
                    entity,
                    f"What is {a} {op} {b}?",
                    str(value),
                    meta={"difficulty": left + right},
                )
            )
    return to_records("arithmetic", facts, request, near_misses)

"""When two answers to one question say the same thing: the rules sampling estimators cluster answers by.

Every clustering records the rule that made it. Rules:
- ``match`` (default, free): the grader's own rule for the question, with each answer in turn taken as the
  gold (:mod:`selfknow.grade`): the letter for multiple choice, the number for numeric answers, otherwise
  one answer occurring in the other as whole words. "Paris" and "It is Paris." are one answer; "4" and
  "four" too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from selfknow.data.records import Record
from selfknow.errors import SelfknowError
from selfknow.grade import MATCHERS, auto_strategy, normalize, parse_letter

Same = Callable[[Record, str, str], bool]  # whether two answers to the record's question are equivalent


def _graded(record: Record, gold: str, output: str) -> bool:
    probe = dataclasses.replace(record, answer=gold, aliases=[], output=output)
    return MATCHERS[auto_strategy(probe)](probe)


def same_by_match(record: Record, a: str, b: str) -> bool:
    """Equivalent under the grader's rule with either answer as the gold; two empty answers are one answer."""
    if record.format == "choice":
        letter = parse_letter(a, record.choices or [])
        return letter is not None and letter == parse_letter(b, record.choices or [])
    if not normalize(a) or not normalize(b):
        return normalize(a) == normalize(b)
    return normalize(a) == normalize(b) or _graded(record, a, b) or _graded(record, b, a)


RULES: dict[str, Same] = {"match": same_by_match}


def rule(name: str) -> Same:
    if name not in RULES:
        raise SelfknowError(f"unknown equivalence rule {name!r}; use one of {', '.join(sorted(RULES))}")
    return RULES[name]


@dataclass(frozen=True)
class Clusters:
    """Which cluster each answer fell in (clusters numbered in order of their first answer), and the rule."""

    rule: str
    labels: tuple[int, ...]

    @property
    def sizes(self) -> list[int]:
        return [self.labels.count(c) for c in range(max(self.labels) + 1)] if self.labels else []


def cluster(record: Record, answers: Sequence[str], rule_name: str = "match") -> Clusters:
    """Kuhn et al.'s bidirectional clustering done greedily: each answer joins the first cluster whose first
    answer it is equivalent to, or starts a new one. With the main answer first, a sample joins its cluster
    exactly when it is equivalent to the main answer (the reference's sampling baselines compare so)."""
    same = rule(rule_name)
    firsts: list[str] = []
    labels = []
    for answer in answers:
        found = next((c for c, first in enumerate(firsts) if same(record, first, answer)), None)
        if found is None:
            firsts.append(answer)
            found = len(firsts) - 1
        labels.append(found)
    return Clusters(rule_name, tuple(labels))

"""When two answers to one question say the same thing: the rules sampling estimators cluster answers by.

Every clustering records the rule that made it. Rules:
- ``match`` (default, free): the grader's own rule for the question, with each answer in turn taken as the
  gold (:mod:`selfknow.grade`): the letter for multiple choice, the number for numeric answers, otherwise
  one answer occurring in the other as whole words. "Paris" and "It is Paris." are one answer; "4" and
  "four" too.
- ``judge``: an LLM asked the calibration-tuning reference's two-answers prompt ("Did the two students
  provide equivalent answers?", :mod:`selfknow.judge`), a local model or an OpenAI-compatible endpoint:
  the rule the reference's sampling baselines use. Answers that normalize to the same text are one answer
  without asking. Verdicts are asked in batches (all the pairs one step of the clustering needs, across
  records) and can be kept in a file, so scoring again asks nothing.
- ``nli``: bidirectional entailment under an NLI model the user names (:mod:`selfknow.nli`; Kuhn et al.'s
  semantic-entropy clustering), asked in the same batches and kept the same way. No NLI model ships on
  PyPI, so none is a default.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from selfknow.data.records import Record
from selfknow.errors import SelfknowError
from selfknow.grade import MATCHERS, auto_strategy, normalize, parse_letter

Same = Callable[[Record, str, str], bool]  # whether two answers to the record's question are equivalent
Pair = tuple[Record, str, str]
PairJudge = Callable[[Sequence[Pair]], list[bool]]  # verdicts for a batch of pairs (the rules that ask a model)
ASKED = ("judge", "nli")  # rules that ask a model, through a PairJudge


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


def check_rule(name: str) -> str:
    if name not in RULES and name not in ASKED:
        raise SelfknowError(f"unknown equivalence rule {name!r}; use one of {', '.join(sorted([*RULES, *ASKED]))}")
    return name


@dataclass(frozen=True)
class Clusters:
    """Which cluster each answer fell in (clusters numbered in order of their first answer), and the rule."""

    rule: str
    labels: tuple[int, ...]

    @property
    def sizes(self) -> list[int]:
        return [self.labels.count(c) for c in range(max(self.labels) + 1)] if self.labels else []


def _greedy(record: Record, answers: Sequence[str], same: Callable[[Record, str, str], bool | None]):
    """Kuhn et al.'s bidirectional clustering done greedily: each answer joins the first cluster whose first
    answer it is equivalent to, or starts a new one. Returns the labels, or, where ``same`` does not know a
    verdict yet (None), the pairs the blocked answer still needs: (cluster's first answer, answer)."""
    firsts: list[str] = []
    labels = []
    for answer in answers:
        found = None
        for c, first in enumerate(firsts):
            verdict = same(record, first, answer)
            if verdict is None:
                return [(first_, answer) for first_ in firsts[c:] if same(record, first_, answer) is None]
            if verdict:
                found = c
                break
        if found is None:
            firsts.append(answer)
            found = len(firsts) - 1
        labels.append(found)
    return tuple(labels)


def cluster(record: Record, answers: Sequence[str], rule_name: str = "match") -> Clusters:
    """The answers' clusters under a rule that needs no model. With the main answer first, a sample joins its
    cluster exactly when it is equivalent to the main answer (the reference's sampling baselines compare so)."""
    if check_rule(rule_name) in ASKED:
        raise SelfknowError(f"the {rule_name} rule asks a model; cluster with cluster_all and a judge")
    return Clusters(rule_name, _greedy(record, answers, RULES[rule_name]))


def cluster_all(
    items: Sequence[tuple[Record, Sequence[str]]], rule_name: str = "match", judge: PairJudge | None = None
) -> list[Clusters]:
    """Cluster each record's answers; a rule that asks a model asks ``judge`` for every verdict the clustering
    needs, one batch per step (at most one step per answer), never the same pair twice."""
    if check_rule(rule_name) not in ASKED:
        return [cluster(record, answers, rule_name) for record, answers in items]
    if judge is None:
        raise SelfknowError(f"the {rule_name} equivalence rule needs a model to ask")
    verdicts: dict[tuple[str, str, str], bool] = {}

    def same(record: Record, a: str, b: str) -> bool | None:
        return True if normalize(a) == normalize(b) else verdicts.get((record.id, a, b))

    results: list = [None] * len(items)
    waiting = list(range(len(items)))
    while True:  # each pass clusters again only the records still waiting for a verdict
        for i in waiting:
            results[i] = _greedy(*items[i], same)
        waiting = [i for i in waiting if isinstance(results[i], list)]
        if not waiting:
            return [Clusters(rule_name, result) for result in results]
        pairs = list({(items[i][0].id, a, b): (items[i][0], a, b) for i in waiting for a, b in results[i]}.values())
        for (record, a, b), verdict in zip(pairs, judge(pairs), strict=True):
            verdicts[(record.id, a, b)] = bool(verdict)


def kept_verdicts(judge: PairJudge, path: Path) -> PairJudge:
    """``judge`` with its verdicts kept in a JSON-lines file: a pair judged before is not asked again, and
    verdicts are written as each batch returns, so an interrupted scoring loses none."""
    known: dict[tuple[str, str, str], bool] = {}
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if text and not text.endswith("\n"):
        path.write_text(text + "\n", encoding="utf-8")  # so the next verdict starts a line of its own
    if text:
        for line in text.splitlines():
            try:
                row = json.loads(line)
                known[(row["id"], row["a"], row["b"])] = bool(row["same"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill: that pair is asked again
    path.parent.mkdir(parents=True, exist_ok=True)

    def ask(pairs: Sequence[Pair]) -> list[bool]:
        todo = [pair for pair in pairs if (pair[0].id, pair[1], pair[2]) not in known]
        if todo:
            fresh = judge(todo)
            with path.open("a", encoding="utf-8") as handle:
                for (record, a, b), verdict in zip(todo, fresh, strict=True):
                    known[(record.id, a, b)] = bool(verdict)
                    handle.write(json.dumps({"id": record.id, "a": a, "b": b, "same": bool(verdict)}) + "\n")
        return [known[(record.id, a, b)] for record, a, b in pairs]

    return ask

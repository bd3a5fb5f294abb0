"""Grade answers against gold answers; every grade records the strategy that made it.

Strategies:
- ``exact``: SQuAD-normalized output equals the gold answer or an alias;
- ``alias``: a normalized gold answer or alias occurs in the output as whole words, not counting an
  echo of the question (the gold in the same local context as in the question, as in "The capital of
  Gibraltar is" for the question "What is the capital of Gibraltar?");
- ``numeric``: the last number in the output equals the gold number (models echo operands first);
- ``choice``: the letter the output names equals the gold letter;
- ``judge``: an LLM judge (:mod:`selfknow.judge`), used only when asked for;
- ``auto``: ``choice`` for multiple choice, ``numeric`` for numeric gold answers, else ``alias``.
"""

from __future__ import annotations

import dataclasses
import re
import string
import unicodedata
from collections.abc import Callable, Sequence

from selfknow.data.records import LETTERS, Record
from selfknow.errors import GradingError

STRATEGIES = ("auto", "exact", "alias", "numeric", "choice", "judge")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_POSSESSIVE = re.compile(r"['’]s\b")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "“”‘’–—×"})
# Continents named by their adjective ("located on the North American continent"): each adjective counts as
# its continent's name. Not "Australian", which also names a nationality and a currency.
CONTINENT_ADJECTIVES = {
    "africa": "african",
    "antarctica": "antarctic",
    "asia": "asian",
    "europe": "european",
    "north america": "north american",
    "oceania": "oceanian",
    "south america": "south american",
}
_WORD_NUMBERS = {
    word: str(value)
    for value, words in enumerate(
        [
            ("zero",), ("one", "first"), ("two", "second"), ("three", "third"), ("four", "fourth"),
            ("five", "fifth"), ("six", "sixth"), ("seven", "seventh"), ("eight", "eighth"), ("nine", "ninth"),
            ("ten", "tenth"), ("eleven", "eleventh"), ("twelve", "twelfth"), ("thirteen", "thirteenth"),
            ("fourteen", "fourteenth"), ("fifteen", "fifteenth"), ("sixteen", "sixteenth"),
            ("seventeen", "seventeenth"), ("eighteen", "eighteenth"),
        ]
    )
    for word in words
}  # fmt: skip
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_WORD_NUMBERS) + r")\b", re.IGNORECASE)
# "one" as a pronoun names no number: "one of the noble gases", "the one in group 18", "no one knows".
_PRONOUN_ONE = re.compile(
    r"\b(?:(?:the|no|this|that|which|each|every|any|some|another)\s+one|one\s+(?:of|another|who|which|that))\b",
    re.IGNORECASE,
)


def normalize(text: str) -> str:
    """SQuAD normalization plus accent folding: NFKD without combining marks, lower case, "'s" dropped,
    punctuation and articles removed, whitespace collapsed."""
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = _POSSESSIVE.sub("", text.lower())  # "it's" must not leave a stray "s" (the gold of sodium's block)
    text = _ARTICLES.sub(" ", text.translate(_PUNCT))
    return " ".join(text.split())


def golds(record: Record) -> list[str]:
    return [g for g in (record.answer, *record.aliases) if normalize(g)]


def _phrasings(record: Record) -> list[str]:
    """What the alias matcher looks for: the golds, and the adjective of a continent that is one."""
    found = golds(record)
    return found + [CONTINENT_ADJECTIVES[n] for n in map(normalize, found) if n in CONTINENT_ADJECTIVES]


def exact_match(record: Record) -> bool:
    output = normalize(record.output or "")
    return any(output == normalize(g) for g in golds(record))


def _occurrences(tokens: list[str], phrase: list[str]) -> list[int]:
    n = len(phrase)
    return [i for i in range(len(tokens) - n + 1) if tokens[i : i + n] == phrase]


def _contains(tokens: list[str], phrase: list[str]) -> bool:
    return bool(_occurrences(tokens, phrase))


def alias_match(record: Record) -> bool:
    output = normalize(record.output or "").split()
    question = normalize(record.question).split()
    for gold in _phrasings(record):
        phrase = normalize(gold).split()
        for start in _occurrences(output, phrase):
            end = start + len(phrase)
            left = start > 0 and _contains(question, output[start - 1 : end])
            right = end < len(output) and _contains(question, output[start : end + 1])
            echo = left or right
            if not echo:
                return True
    return False


def parse_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def numeric_match(record: Record) -> bool:
    """The last number of the output equals the gold; an output without digits may spell its number in words,
    cardinal or ordinal up to 18 ("the second period" for a gold of 2), "one" only where it is not a pronoun."""
    output = record.output or ""
    if not any(c.isdigit() for c in output):
        output = _NUMBER_WORD.sub(lambda m: _WORD_NUMBERS[m.group(1).lower()], _PRONOUN_ONE.sub(" ", output))
    numbers = _NUMBER.findall(output)
    if not numbers:
        return False
    value, gold = parse_number(numbers[-1]), parse_number(record.answer.strip())
    return value is not None and gold is not None and abs(value - gold) < 1e-9


def parse_letter(output: str, choices: Sequence[str]) -> str | None:
    """The choice an output names: a leading letter ("b", "(b)", "B) ..."), a "(b)" anywhere, or the
    full text of one choice."""
    letters = LETTERS[: len(choices)]
    text = output.strip().lower()
    lead = re.match(rf"^\(?([{letters}])\)?(?:[\s.:)]|$)", text)
    if lead:
        return lead.group(1)
    inner = re.search(rf"\(([{letters}])\)", text)
    if inner:
        return inner.group(1)
    matches = [letters[i] for i, c in enumerate(choices) if normalize(c) and normalize(c) == normalize(output)]
    return matches[0] if len(matches) == 1 else None


def choice_match(record: Record) -> bool:
    if record.format != "choice":
        raise GradingError(f"record {record.id!r}: the choice strategy needs a multiple-choice record")
    return parse_letter(record.output or "", record.choices or []) == record.gold_letter


def auto_strategy(record: Record) -> str:
    if record.format == "choice":
        return "choice"
    return "numeric" if parse_number(record.answer.strip()) is not None else "alias"


MATCHERS: dict[str, Callable[[Record], bool]] = {
    "exact": exact_match,
    "alias": alias_match,
    "numeric": numeric_match,
    "choice": choice_match,
}


def grade_record(record: Record, strategy: str = "auto") -> Record:
    """A graded copy; an empty answer is graded wrong, a record never answered is an error."""
    if record.output is None:
        raise GradingError(f"record {record.id!r} has no output; answer it first (selfknow answer)")
    name = auto_strategy(record) if strategy == "auto" else strategy
    if name not in MATCHERS:
        raise GradingError(f"unknown grading strategy '{strategy}'; use one of {', '.join(STRATEGIES)}")
    return dataclasses.replace(record, correct=bool(record.output.strip()) and MATCHERS[name](record), grader=name)


def grade_records(records: Sequence[Record], strategy: str = "auto") -> list[Record]:
    """Grade with a rule-based strategy (for the LLM judge see :func:`selfknow.judge.judge_records`)."""
    if strategy not in STRATEGIES or strategy == "judge":
        raise GradingError(f"grade_records takes a rule-based strategy, got '{strategy}'")
    return [grade_record(r, strategy) for r in records]


def accuracy_table(records: Sequence[Record]) -> dict[str, tuple[int, float]]:
    """Count and accuracy of graded records per dataset/task, plus 'all'."""
    groups: dict[str, list[bool]] = {}
    for r in records:
        if r.correct is None:
            continue
        for key in ("all", r.dataset, f"{r.dataset}/{r.task}" if r.task else None):
            if key:
                groups.setdefault(key, []).append(bool(r.correct))
    return {k: (len(v), sum(v) / len(v)) for k, v in groups.items()}

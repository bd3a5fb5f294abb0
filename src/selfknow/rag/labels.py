"""Self-RAG training data without GPT-4: reflection labels from rules over known facts and the model's own
closed-book behaviour.

- Retrieve: ``[Retrieval]`` when the base model's closed-book answer is wrong, ``[No Retrieval]`` when right.
- IsRel: the passage is about the question's entity (its title names it) or contains the gold answer.
- IsSup, for a segment's answer: the answer is right and the passage contains a gold string (full), only a
  word of a multi-word gold or a near spelling (partial), otherwise none; a wrong answer is never supported.
- IsUse from correctness: ``[Utility:5]`` for a right answer, ``[Utility:1]`` for a wrong one.

Each training question gives one example per segment shape it can show: a known question
``[No Retrieval]{gold}``; an unknown one its best supporting passage with the gold, an irrelevant passage,
a relevant passage without support, and its own wrong answer judged against the supporting passage. The
wrong answer's text is kept out of the loss (the model learns to judge it, not to say it).
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from selfknow.data.records import Record, read_rows, write_rows
from selfknow.errors import DataError
from selfknow.grade import golds, normalize
from selfknow.rag.corpus import Passage
from selfknow.rag.questions import contains_gold, entity_name
from selfknow.rag.reflection import (
    FULLY_SUPPORTED,
    ISREL_TOKENS,
    NO_SUPPORT,
    PARTIALLY_SUPPORTED,
    RETRIEVE_TOKENS,
    reflection_token_ids,
)
from selfknow.rag.sequences import IGNORE_INDEX, Segment, encode_example, format_prompt, serialize


def is_relevant(record: Record, passage: Passage) -> bool:
    return normalize(passage.title) == normalize(entity_name(record)) or contains_gold(passage.text, record)


def _near(record: Record, text: str) -> bool:
    """A word (4+ letters) of a multi-word gold, or a word within edit ratio 0.8 of a one-word gold."""
    words = normalize(text).split()
    for gold in golds(record):
        parts = normalize(gold).split()
        if len(parts) > 1 and any(len(p) >= 4 and p in words for p in parts):
            return True
        if len(parts) == 1 and len(parts[0]) >= 4 and difflib.get_close_matches(parts[0], words, n=1, cutoff=0.8):
            return True
    return False


def support(record: Record, passage: Passage, answer_correct: bool = True) -> str:
    """The IsSup token for a segment answering ``record`` from ``passage``."""
    if not answer_correct:
        return NO_SUPPORT
    if contains_gold(passage.text, record):
        return FULLY_SUPPORTED
    return PARTIALLY_SUPPORTED if _near(record, passage.text) else NO_SUPPORT


@dataclass(frozen=True)
class Example:
    """One serialised training example; ``masked`` is answer text kept out of the loss (a wrong answer).

    ``retrieve_label`` says whether the output's first token (its Retrieve token) is in the loss: it is a
    label of the question, so it is learnt from one example per question. Were it learnt from all of an
    unknown question's three or four examples, p([Retrieval]) would be pushed to 1 for every question and
    no δ could change the retrieval rate (the reference code's issue #45).
    """

    question_id: str
    prompt: str
    output: str
    masked: str = ""
    retrieve_label: bool = True


def examples_for(record: Record, passages: Sequence[Passage], closed_book: Record, eos: str) -> list[Example]:
    """The training examples one question gives (see the module docstring); ``passages`` are its retrieved
    top-k, best first, and ``closed_book`` its graded closed-book answer by the base model."""
    prompt = format_prompt(record.question)
    gold = record.answer

    def example(segment: Segment, utility: int, masked: str = "") -> Example:
        return Example(record.id, prompt, serialize([segment], utility, eos), masked)

    if closed_book.correct:
        return [example(Segment(gold), 5)]
    relevant = [p for p in passages if is_relevant(record, p)]
    supporting = [p for p in relevant if support(record, p) == FULLY_SUPPORTED]
    unsupported = [p for p in relevant if support(record, p) != FULLY_SUPPORTED]
    irrelevant = [p for p in passages if not is_relevant(record, p)]
    out = []
    if supporting:
        out.append(example(Segment(gold, supporting[0], True, FULLY_SUPPORTED), 5))
    if irrelevant:
        out.append(example(Segment(gold, irrelevant[0], relevant=False), 5))
    if unsupported:
        out.append(example(Segment(gold, unsupported[0], True, support(record, unsupported[0])), 5))
    wrong = (closed_book.output or "").strip().split("\n")[0].strip()
    if wrong and (supporting or relevant):
        judged = (supporting or relevant)[0]
        out.append(example(Segment(wrong, judged, True, NO_SUPPORT), 1, masked=wrong))
    return [e if i == 0 else replace(e, retrieve_label=False) for i, e in enumerate(out)]


def encode(tokenizer, example: Example) -> tuple[list[int], list[int]]:
    """Token ids and labels of an example; the Retrieve token is off the loss unless ``retrieve_label``; a
    masked answer's tokens (between its IsRel/Retrieve token and
    the next reflection token, both special tokens, so the span is exact) get no loss."""
    ids, labels = encode_example(tokenizer, example.prompt, example.output)
    if not example.retrieve_label:
        first = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        labels[first] = IGNORE_INDEX
    if example.masked:
        openers = set(reflection_token_ids(tokenizer, ISREL_TOKENS + RETRIEVE_TOKENS))
        special = set(reflection_token_ids(tokenizer))
        start = max(i for i, t in enumerate(ids) if t in openers) + 1
        end = next(i for i in range(start, len(ids)) if ids[i] in special)
        labels[start:end] = [IGNORE_INDEX] * (end - start)
    return ids, labels


def build_examples(
    records: Sequence[Record],
    retrieved: dict[str, list[Passage]],
    closed_book: dict[str, Record],
    eos: str,
    seed: int = 0,
) -> list[Example]:
    """Every training question's examples, shuffled with ``seed``; questions without a graded closed-book
    answer are an error (the Retrieve label needs it)."""
    missing = [r.id for r in records if r.id not in closed_book or closed_book[r.id].correct is None]
    if missing:
        raise DataError(f"{len(missing)} questions have no graded closed-book answer, e.g. {missing[0]}")
    out = [e for r in records for e in examples_for(r, retrieved[r.id], closed_book[r.id], eos)]
    random.Random(seed).shuffle(out)
    return out


def write_examples(path: Path, examples: Sequence[Example]) -> None:
    write_rows(path, examples)


def read_examples(path: Path) -> list[Example]:
    return read_rows(path, Example, "training example")

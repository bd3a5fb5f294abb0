"""The one record schema every stage reads and writes, and its JSONL storage.

A record starts as a question from a dataset source; answering adds ``prompt``/``output``/``scores``,
grading adds ``correct``/``grader``, confidence estimators add ``confidences``. Each stage writes
JSONL, so a saved file can be re-graded or re-scored without running the model again.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from selfknow.errors import DataError
from selfknow.reading import MAX_LINE_CHARS, readable_file
from selfknow.writing import write_lines

Format = Literal["oe", "choice"]
FORMATS: tuple[str, ...] = ("oe", "choice")
SPLITS: tuple[str, ...] = ("train", "validation", "test", "dev")
LETTERS = "abcdefghij"
T = TypeVar("T")


@dataclass
class Record:
    """One question and everything later stages learn about it.

    ``answer`` is always the gold answer text; for ``choice`` records ``answer_index`` says which of
    ``choices`` it is (the gold letter is ``LETTERS[answer_index]``). ``entity`` is what split
    disjointness is defined over (a country, an element, an equation): every question about one
    entity lands in one split.
    """

    id: str
    dataset: str
    split: str
    question: str
    answer: str
    format: Format = "oe"
    choices: list[str] | None = None
    answer_index: int | None = None
    aliases: list[str] = field(default_factory=list)
    task: str = ""
    entity: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    output: str | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    correct: bool | None = None
    grader: str | None = None
    confidences: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def gold_letter(self) -> str | None:
        return None if self.answer_index is None else LETTERS[self.answer_index]

    def validate(self) -> None:
        """Raise DataError naming the first problem; called on construction and on every load."""
        where = f"record {self.id!r}" if self.id else "record"
        for name in ("id", "dataset", "split", "question"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: field '{name}' must be a non-empty string, got {value!r}")
        if not isinstance(self.answer, str) or not self.answer.strip():
            raise DataError(f"{where}: empty gold answer")
        if self.format not in FORMATS:
            raise DataError(f"{where}: format must be one of {FORMATS}, got {self.format!r}")
        if self.format == "choice":
            if not self.choices or len(self.choices) < 2 or len(self.choices) > len(LETTERS):
                raise DataError(f"{where}: a choice question needs 2-{len(LETTERS)} choices")
            if any(not isinstance(c, str) or not c.strip() for c in self.choices):
                raise DataError(f"{where}: empty choice text")
            if not isinstance(self.answer_index, int) or not 0 <= self.answer_index < len(self.choices):
                raise DataError(f"{where}: answer_index {self.answer_index!r} is not a valid choice index")
        for name, value in self.confidences.items():
            if not isinstance(value, int | float) or math.isnan(value) or not 0.0 <= value <= 1.0:
                raise DataError(f"{where}: confidence '{name}' must be a probability in [0, 1], got {value!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "record") -> Record:
        known = {f.name for f in fields(cls)}
        missing = [n for n in ("id", "dataset", "split", "question", "answer") if n not in data]
        if missing:
            raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as err:
            raise DataError(f"{where}: {err}") from None
        except DataError as err:
            raise DataError(f"{where}: {err}") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; malformed lines raise DataError naming them."""
    path = readable_file(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path}:{number}: not UTF-8 text") from None
            if not line.strip():
                continue
            if len(line) > MAX_LINE_CHARS:
                raise DataError(f"{path}:{number}: a line of {len(line):,} characters")
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: malformed JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
            yield number, obj


def read_records(path: str | Path) -> list[Record]:
    """Read and validate a JSONL file of records; an empty file is an error, not an empty dataset."""
    records = [Record.from_dict(obj, f"{path}:{n}") for n, obj in iter_jsonl(path)]
    if not records:
        raise DataError(f"{path}: no records (empty file)")
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{path}: duplicate record id {dup!r}")
    return records


def write_records(path: str | Path, records: Iterable[Record]) -> None:
    """Records as JSONL, written atomically."""
    write_lines(path, (record.to_json() for record in records))


def write_rows(path: str | Path, rows: Iterable[Any]) -> None:
    """Dataclass instances as JSONL, one per line, written atomically."""
    write_lines(path, (json.dumps(dataclasses.asdict(row), ensure_ascii=False) for row in rows))


def read_rows(path: str | Path, cls: type[T], what: str) -> list[T]:
    """Rows written by :func:`write_rows`: a line missing a required field or carrying an unknown one, or an
    empty file, is a DataError naming the file (and line)."""
    known = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    out = []
    for number, obj in iter_jsonl(path):
        if missing := sorted(required - obj.keys()):
            raise DataError(f"{path}:{number}: missing field(s) {', '.join(missing)} of a {what}")
        if unknown := sorted(obj.keys() - known):
            raise DataError(f"{path}:{number}: unknown field(s) {', '.join(unknown)} in a {what}")
        out.append(cls(**obj))
    if not out:
        raise DataError(f"{path}: no {what}s (empty file)")
    return out

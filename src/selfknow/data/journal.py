"""Resumable stage output: rows (records, or any JSON objects with an id) are appended to a journal as they
are made, merged when all are done.

Each process appends to ``<output>.partial-<rank>``, a batch at a time, each batch closed by a
``{"batch_end": n}`` line; a killed run leaves its journals behind and the next run with the same output
skips every row of a closed batch. A batch cut short (a kill or a full disk in the middle of its write) is
redone whole, so the next run forms the batches an uninterrupted run would and gives the same numbers to
the last digit. When all rows are done the main process merges the journals into ``<output>`` in input
order (atomically) and removes them, so the final file has no lost and no duplicated row whatever the
number of restarts or processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from selfknow.data.records import Record
from selfknow.errors import DataError
from selfknow.writing import write_error, write_lines

Row = TypeVar("Row")


@dataclass(frozen=True)
class RowFormat(Generic[Row]):
    """How one kind of row is read from a JSON object, written as a line, and known by its id."""

    load: Callable[[dict[str, Any], str], Row]
    dump: Callable[[Row], str]
    key: Callable[[Row], str]


def dict_row(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """A JSON object as a row, refused without a string id."""
    if not isinstance(obj.get("id"), str):
        raise DataError(f"{where}: a journal row without a string id")
    return obj


RECORDS: RowFormat[Record] = RowFormat(Record.from_dict, Record.to_json, lambda record: record.id)
DICTS: RowFormat[dict[str, Any]] = RowFormat(
    dict_row, lambda row: json.dumps(row, ensure_ascii=False), lambda row: row["id"]
)


def _journal_paths(output: Path) -> list[Path]:
    return sorted(output.parent.glob(output.name + ".partial-*"))


BATCH_END = "batch_end"
_MARK = b'{"' + BATCH_END.encode() + b'"'


def _repair(path: Path) -> None:
    """Drop whatever follows the last closed batch, so a new batch never closes an old one cut short."""
    data = path.read_bytes()
    end = position = 0
    for line in data.splitlines(keepends=True):
        position += len(line)
        if line.startswith(_MARK) and line.endswith(b"\n"):
            end = position
    if end != len(data):
        with path.open("r+b") as handle:
            handle.truncate(end)


class Journal(Generic[Row]):
    """The append-only progress file of one stage in one process."""

    def __init__(self, output: str | Path, rank: int = 0, rows: RowFormat[Row] = RECORDS):
        self.output, self.rows = Path(output), rows
        self.path = self.output.with_name(f"{self.output.name}.partial-{rank}")
        self._repaired = False  # an earlier run's cut-short batch is dropped once, before the first append
        self.output.parent.mkdir(parents=True, exist_ok=True)

    def done(self) -> dict[str, Row]:
        """Rows of every closed batch of any process of any earlier run, by id."""
        found: dict[str, Row] = {}
        for path in _journal_paths(self.output):
            text = path.read_text(encoding="utf-8")
            lines = text.split("\n")
            if not text.endswith("\n"):
                lines = lines[:-1]  # torn tail: its batch is redone
            batch: list[Row] = []
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError:
                        obj = None
                    if not isinstance(obj, dict):
                        raise DataError(f"{path}:{number}: corrupt journal line; delete the file to redo")
                    if BATCH_END in obj:
                        found.update((self.rows.key(row), row) for row in batch)
                        batch = []
                    else:
                        batch.append(self.rows.load(obj, f"{path}:{number}"))
        return found

    def append(self, rows: Iterable[Row]) -> None:
        """Append one batch and close it, then fsync, so what is reported done survives a kill (a batch cut
        short by a kill or a full disk is dropped by the next run)."""
        try:
            if not self._repaired and self.path.exists():
                _repair(self.path)  # once: this process's own batches are always closed
            self._repaired = True
            with self.path.open("a", encoding="utf-8") as handle:
                batch = [self.rows.dump(row) for row in rows]
                handle.writelines(line + "\n" for line in batch)
                handle.write(json.dumps({BATCH_END: len(batch)}) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise write_error(self.path, err) from None

    def finish(self, order: Sequence[str]) -> list[Row]:
        """Merge every journal into the output in ``order`` and delete the journals."""
        done = self.done()
        missing = [i for i in order if i not in done]
        if missing:
            raise DataError(f"{self.output}: {len(missing)} record(s) not done yet, e.g. {missing[0]!r}")
        merged = [done[i] for i in order]
        write_lines(self.output, map(self.rows.dump, merged))
        for path in _journal_paths(self.output):
            path.unlink()
        return merged

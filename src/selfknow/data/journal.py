"""Resumable stage output: records are appended to a journal as they are made, merged when all are done.

Each process appends to ``<output>.partial-<rank>``; a killed run leaves its journals behind and the
next run with the same output skips every record already in them. When all records are done the main
process merges the journals into ``<output>`` in input order (atomically) and removes them, so the
final file has no lost and no duplicated records whatever the number of restarts or processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from selfknow.data.records import Record, write_records
from selfknow.errors import DataError
from selfknow.writing import write_error


def _journal_paths(output: Path) -> list[Path]:
    return sorted(output.parent.glob(output.name + ".partial-*"))


def _repair(path: Path) -> None:
    """Drop a torn last line (a process killed mid-write leaves one without its newline)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


class Journal:
    """The append-only progress file of one stage in one process."""

    def __init__(self, output: str | Path, rank: int = 0):
        self.output = Path(output)
        self.path = self.output.with_name(f"{self.output.name}.partial-{rank}")
        self.output.parent.mkdir(parents=True, exist_ok=True)

    def done(self) -> dict[str, Record]:
        """Records already finished by any process of any earlier run, by id."""
        found: dict[str, Record] = {}
        for path in _journal_paths(self.output):
            text = path.read_text(encoding="utf-8")
            lines = text.split("\n")
            if not text.endswith("\n"):
                lines = lines[:-1]  # torn tail: the record is redone
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError:
                        raise DataError(f"{path}:{number}: corrupt journal line; delete the file to redo") from None
                    record = Record.from_dict(obj, f"{path}:{number}")
                    found[record.id] = record
        return found

    def append(self, records: Iterable[Record]) -> None:
        """Append and fsync, so what is reported done survives a kill (a full disk leaves a torn last line,
        dropped by the next run)."""
        try:
            if self.path.exists():
                _repair(self.path)
            with self.path.open("a", encoding="utf-8") as handle:
                for record in records:
                    handle.write(record.to_json() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise write_error(self.path, err) from None

    def finish(self, order: Sequence[str]) -> list[Record]:
        """Merge every journal into the output in ``order`` and delete the journals."""
        done = self.done()
        missing = [i for i in order if i not in done]
        if missing:
            raise DataError(f"{self.output}: {len(missing)} record(s) not done yet, e.g. {missing[0]!r}")
        merged = [done[i] for i in order]
        write_records(self.output, merged)
        for path in _journal_paths(self.output):
            path.unlink()
        return merged

"""Questions from local files: MMLU's CSV layout, any CSV or JSONL file, and the calibration-tuning schema.

Every problem in a file is reported as one line naming the file, the line and the column, because a
bad row found after an hour of generation costs far more than a strict reader.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from selfknow.data.records import LETTERS, SPLITS, Record, iter_jsonl, read_records
from selfknow.data.registry import Request, register
from selfknow.data.splits import as_choice, choice_id, split_of
from selfknow.errors import DataError
from selfknow.reading import check_text, read_text


def _existing(arg: str | None) -> Path:
    path = Path(arg or "")
    if not arg or not path.exists():
        raise DataError(f"file or folder not found: {arg}")
    return path


def _csv_rows(path: Path, width: int | None = None) -> list[tuple[int, list[str]]]:
    """(line, fields) of each non-blank row; all rows have ``width`` fields (default: the first row's), and
    every field is text fit for a prompt (no control characters: a NUL would go into it)."""
    rows = []
    reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
    end = 0
    try:
        for row in reader:
            start, end = end + 1, reader.line_num  # a quoted field may span lines: name the first
            if not any(field.strip() for field in row):  # a blank or whitespace-only line
                continue
            width = width or len(row)
            if len(row) != width:
                raise DataError(f"{path}:{start}: malformed CSV: expected {width} fields, got {len(row)}")
            for k, field in enumerate(row, 1):
                check_text(field, f"{path}:{start}", f"field {k}")
            rows.append((start, row))
    except csv.Error as err:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
    if not rows:
        raise DataError(f"{path}: empty file")
    return rows


def _table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """The column names and (line, row) pairs of a CSV file with a header or of a JSONL file."""
    if path.suffix == ".jsonl":
        rows = list(iter_jsonl(path))
        if not rows:
            raise DataError(f"{path}: empty file")
        return list(dict.fromkeys(key for _, row in rows for key in row)), rows
    (_, header), *body = _csv_rows(path)
    if not body:
        raise DataError(f"{path}: no rows after the header")
    return header, [(line, dict(zip(header, row, strict=True))) for line, row in body]


def _has(columns: list[str]) -> str:
    return f"the file has: {', '.join(columns) or 'no columns'}"


def _missing(value: Any) -> bool:
    """Empty, None or NaN, also as the strings pandas and str() write for them."""
    if isinstance(value, float):
        return math.isnan(value)
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "nan", "none", "null"))


def _required(row: dict[str, Any], column: str, what: str, where: str) -> str:
    value = row.get(column)
    if _missing(value):
        raise DataError(f"{where}: column '{column}' has no {what} ({value!r})")
    if isinstance(value, (dict, list, bool)):
        raise DataError(f"{where}: column '{column}' must be text, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{where}: column '{column}' holds the number {value}")
    return check_text(str(value), where, f"column '{column}'")


def _check_unique(records: list[Record], path: Path) -> list[Record]:
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise DataError(f"{path}: duplicate record id {record.id!r}")
        seen.add(record.id)
    return records


def _answer_index(answer: str, choices: list[str], where: str) -> int:
    """Which choice an answer names: its text, a letter (a/A = first) or a 0-based index, in that order."""
    text = answer.strip()
    if text in choices:
        return choices.index(text)
    if re.fullmatch(r"[A-Za-z]|[0-9]+", text):
        index = ord(text.lower()) - ord("a") if text.isalpha() else int(text)
        if index >= len(choices):
            raise DataError(f"{where}: answer {text!r} is outside the {len(choices)} choices")
        return index
    raise DataError(f"{where}: answer {text!r} is neither a choice's text, a letter nor an index")


# ----------------------------------------------------------------------------------------- MMLU

_MMLU_FILE = re.compile(r"(.+)_(dev|val|test)\.csv")
_MMLU_SPLIT = {"dev": "dev", "val": "validation", "test": "test"}


@register(
    "mmlu-csv",
    kind="local file",
    description="MMLU in its CSV layout (<subject>_{dev,val,test}.csv, no header, answer letter last)",
    arg="PATH",
    arg_required=True,
    fewshot_split="dev",
)
def load_mmlu_csv(request: Request) -> list[Record]:
    """Ids match the hub source's (``mmlu/<subject>/<split>/<row>``), so results from either compare."""
    root = _existing(request.arg)
    files = [root] if root.is_file() else sorted(root.rglob("*.csv"))
    matched = [(m.group(1), _MMLU_SPLIT[m.group(2)], f) for f in files if (m := _MMLU_FILE.fullmatch(f.name))]
    if not matched:
        raise DataError(f"{root}: no MMLU files named <subject>_dev.csv, <subject>_val.csv or <subject>_test.csv")
    records = []
    for subject, split, path in matched:
        for n, (line, row) in enumerate(_csv_rows(path, width=6)):
            where = f"{path}:{line}"
            question, *options, letter = row
            for column, text in zip(("question", "A", "B", "C", "D"), row, strict=False):
                if not text.strip():
                    raise DataError(f"{where}: column '{column}' is empty")
            if letter.strip() not in ("A", "B", "C", "D"):
                raise DataError(f"{where}: answer letter {letter!r} is not one of A-D")
            index = "ABCD".index(letter.strip())
            record_id = f"mmlu/{subject}/{split}/{n}"
            record = Record(
                id=record_id,
                dataset="mmlu",
                split=split,
                question=question,
                answer=options[index],
                task=subject,
                entity=record_id,
                meta={"subject_label": " ".join(subject.split("_")).capitalize()},
            )
            records.append(as_choice(record, options, index) if request.format == "choice" else record)
    return _check_unique(records, root)


# ----------------------------------------------------------------------------------------- CSV / JSONL

_FIELDS = ("question", "answer", "aliases", "choices", "split", "id", "task", "entity")
_SPLIT_NAMES = {**{s: s for s in SPLITS}, "val": "validation", "valid": "validation"}
_SAVED = {"id", "dataset", "split", "question", "answer", "format"}


def _mapping(columns: dict[str, str], available: list[str], path: Path) -> dict[str, list[str]]:
    """Record field -> the file's columns: those named in ``columns``, else a column named like the field."""
    unknown = sorted(set(columns) - set(_FIELDS))
    if unknown:
        raise DataError(f"unknown field(s) {', '.join(unknown)} in the column mapping; fields: {', '.join(_FIELDS)}")
    mapping = {}
    for name in _FIELDS:
        if name in columns:
            names = [c.strip() for c in columns[name].split(",")] if name == "choices" else [columns[name]]
            for column in names:
                if column not in available:
                    raise DataError(f"{path}: column '{column}' (for {name}) not found; {_has(available)}")
            mapping[name] = names
        elif name in available:
            mapping[name] = [name]
    for name in ("question", "answer"):
        if name not in mapping:
            raise DataError(f"{path}: no '{name}' column; {_has(available)} (map one: --column {name}=COLUMN)")
    return mapping


def _list(value: Any, where: str, column: str) -> list[str]:
    """A list column: a JSON list (or in CSV its text), else for aliases a '|'-separated string."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: column '{column}' is not a JSON list ({err.msg})") from None
    if isinstance(value, str):
        return [check_text(part.strip(), where, f"column '{column}'") for part in value.split("|") if part.strip()]
    if not isinstance(value, list) or any(_missing(v) or isinstance(v, (dict, list)) for v in value):
        raise DataError(f"{where}: column '{column}' must be a list of non-empty texts, got {value!r}")
    return [check_text(str(v), where, f"column '{column}'") for v in value]


def _row_record(
    row: dict[str, Any], n: int, where: str, mapping: dict[str, list[str]], dataset: str, request: Request
) -> Record:
    def get(name: str) -> Any:
        return row.get(mapping[name][0]) if name in mapping else None

    is_choice = request.format == "choice"
    question = _required(row, mapping["question"][0], "question", where)
    answer = _required(row, mapping["answer"][0], "answer", where)
    choices = None
    if "choices" in mapping and len(mapping["choices"]) > 1:
        choices = [_required(row, column, "choice text", where) for column in mapping["choices"]]
    elif "choices" in mapping:
        choices = _list(get("choices"), where, mapping["choices"][0])
    if is_choice and not choices:
        raise DataError(f"{where}: the choice format needs choices (a JSON list column, or columns like A,B,C,D)")
    index = _answer_index(answer, choices, where) if choices else None
    record_id = str(get("id")) if not _missing(get("id")) else f"{dataset}/{n}"
    entity = "" if _missing(get("entity")) else str(get("entity"))
    if _missing(get("split")):
        split = split_of(dataset, entity or record_id, request.seed)
    elif str(get("split")).strip().lower() in _SPLIT_NAMES:
        split = _SPLIT_NAMES[str(get("split")).strip().lower()]
    else:
        column = mapping["split"][0]
        raise DataError(f"{where}: column '{column}' has split {get('split')!r}; use one of {', '.join(SPLITS)}")
    return Record(
        id=choice_id(record_id) if is_choice else record_id,
        dataset=dataset,
        split=split,
        question=question,
        answer=answer if index is None or choices is None else choices[index],
        format="choice" if is_choice else "oe",
        choices=choices if is_choice else None,
        answer_index=index if is_choice else None,
        aliases=[] if _missing(get("aliases")) else _list(get("aliases"), where, mapping["aliases"][0]),
        task="" if _missing(get("task")) else str(get("task")),
        entity=entity,
    )


def _load_table(request: Request) -> list[Record]:
    path = _existing(request.arg)
    if path.suffix == ".jsonl" and not request.columns:
        first = next((row for _, row in iter_jsonl(path)), None)
        if first is not None and set(first) >= _SAVED:
            records = [r for r in read_records(path) if r.format == request.format]
            if not records:
                raise DataError(f"{path}: saved records, none in the '{request.format}' format")
            return records
    available, rows = _table(path)
    mapping = _mapping(request.columns, available, path)
    records = [
        _row_record(row, n, f"{path}:{line}", mapping, path.stem, request) for n, (line, row) in enumerate(rows, 1)
    ]
    return _check_unique(records, path)


_TABLE_HELP = (
    "columns question, answer, and optionally aliases, choices, split, id, task, entity "
    "(rename with a column mapping; choices as a JSON list or several columns)"
)
register(
    "csv",
    kind="local file",
    description=f"a CSV file with a header row: {_TABLE_HELP}",
    arg="PATH",
    arg_required=True,
)(_load_table)
register(
    "jsonl",
    kind="local file",
    description=f"a JSONL file (or saved selfknow records): {_TABLE_HELP}",
    arg="PATH",
    arg_required=True,
)(_load_table)


# ----------------------------------------------------------------------------------------- calibration tuning

_CT_SPLITS = ("train", "validation", "test")
_CHOICE_LINE = re.compile(r"^\s*\(([a-j])\):\s?(.*)$", re.MULTILINE)


def sanitize_output(text: str) -> str:
    """The reference's answer clean-up: strip, join "X:\\n" lines, keep the first line (spec §5)."""
    text = text.strip().replace("\n\n", "\n").replace(":\n", ":").strip("\n")
    return text.split("\n")[0]


def _query_label(value: Any, where: str) -> bool | None:
    """1/0 are graded labels; -1 (the reference's "not graded yet") and empty are None."""
    if _missing(value):
        return None
    try:
        label = int(float(value))
    except ValueError:
        raise DataError(f"{where}: column 'query_label' must be 1, 0 or -1, got {value!r}") from None
    return bool(label) if label in (0, 1) else None


def _ct_record(row: dict[str, Any], dataset: str, record_id: str, split: str, where: str) -> Record:
    """A choice row (a one-letter target and "Choices:" in the context) gets its options parsed back."""
    context = _required(row, "context", "context", where)
    target = _required(row, "target", "target", where)
    text = {
        k: "" if _missing(row.get(k)) else _required(row, k, k, where) for k in ("prompt", "target_prompt", "output")
    }
    correct = _query_label(row.get("query_label"), where)
    letter = target.strip().lower()
    choices, index = None, None
    if len(letter) == 1 and letter in LETTERS and "Choices:" in context:
        choices = [option for _, option in _CHOICE_LINE.findall(context.split("Choices:", 1)[1])]
        index = LETTERS.index(letter)
        if index >= len(choices):
            raise DataError(f"{where}: column 'target': answer letter {letter!r} is outside the {len(choices)} choices")
    return Record(
        id=record_id,
        dataset=dataset,
        split=split,
        question=context,
        answer=target if choices is None or index is None else choices[index],
        format="oe" if choices is None else "choice",
        choices=choices,
        answer_index=index,
        prompt=text["prompt"] + context + text["target_prompt"],
        output=sanitize_output(text["output"]) if text["output"] else None,
        correct=correct,
        grader="dataset" if correct is not None else None,
    )


@register(
    "ct",
    kind="local file",
    description="the calibration-tuning schema (context, target, target_prompt, prompt, output, "
    "query_label): a CSV or JSONL file, or a folder with {train,validation,test}/*.csv",
    arg="PATH",
    arg_required=True,
)
def load_ct(request: Request) -> list[Record]:
    """``prompt`` is the reference's full input, kept verbatim so it is answered and queried as-is.

    A single file has no splits: rows are split by a hash of their context, so the same question asked
    twice never lands on both sides.
    """
    path = _existing(request.arg)
    if path.is_dir():
        files = [(split, f) for split in _CT_SPLITS for f in sorted((path / split).glob("*.csv"))]
        if not files:
            raise DataError(f"{path}: no CSV files in {path}/train, {path}/validation or {path}/test")
    else:
        files = [(None, path)]
    dataset = path.stem if path.is_file() else path.name
    records = []
    for split, file in files:
        available, rows = _table(file)
        for column in ("context", "target"):
            if column not in available:
                raise DataError(f"{file}: no '{column}' column; {_has(available)}")
        for n, (line, row) in enumerate(rows, 1):
            where = f"{file}:{line}"
            if split is None:
                record_id = f"{dataset}/{n}"
                row_split = split_of(dataset, _required(row, "context", "context", where), request.seed)
            else:
                record_id, row_split = f"{dataset}/{split}/{file.stem}/{n}", split
            record = _ct_record(row, dataset, record_id, row_split, where)
            if record.format == request.format:
                records.append(record)
    if not records:
        raise DataError(f"{path}: no '{request.format}' rows")
    return _check_unique(records, path)

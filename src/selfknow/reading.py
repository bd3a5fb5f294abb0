"""The checks every user file passes before a reader parses it, so that a bad file is one line naming the
file (and line) instead of a traceback or, worse, bytes that silently reach a prompt.

A file must be a readable regular file of UTF-8 text (a BOM and CRLF line ends are accepted); text fields
must hold no control characters other than tab and newlines, and none may exceed ``MAX_FIELD_CHARS``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from selfknow.errors import DataError

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # control characters other than tab, LF and CR
MAX_FIELD_CHARS = 100_000  # a question, answer or passage longer than this is a broken file, not a question
MAX_LINE_CHARS = 10 * MAX_FIELD_CHARS  # a JSONL line: a record with a few such fields
MAX_FILE_BYTES = 4 << 30


def readable_file(path: str | Path) -> Path:
    """``path`` if it is an existing, readable regular file; otherwise a DataError naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if not path.is_file():
        raise DataError(f"{path}: a folder (or other non-file) where a file is expected")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"{path}: larger than {MAX_FILE_BYTES >> 30} GiB")
    try:
        with path.open("rb"):
            pass
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    return path


def read_text(path: str | Path) -> str:
    """The file's text: UTF-8 with or without a BOM, CRLF read as LF. Other bytes, a NUL, or a file of only
    whitespace are a DataError naming the file (and line)."""
    path = readable_file(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x})") from None
    if "\x00" in text:
        raise DataError(f"{path}:{text[: text.index(chr(0))].count(chr(10)) + 1}: a NUL byte (a binary file?)")
    if not text.strip():
        raise DataError(f"{path}: empty file")
    return text.replace("\r\n", "\n")


def check_text(value: str, where: str, what: str) -> str:
    """``value`` if it is fit to go into a prompt; a control character or an over-long text is a DataError."""
    found = CONTROL.search(value)
    if found:
        raise DataError(f"{where}: {what} holds the control character U+{ord(found.group()):04X}")
    if len(value) > MAX_FIELD_CHARS:
        raise DataError(f"{where}: {what} is {len(value):,} characters long (at most {MAX_FIELD_CHARS:,})")
    return value


def read_json(path: str | Path, kind: str) -> Any:
    """A JSON document (a settings or run file); unreadable or malformed JSON is a DataError naming the file."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON in the {kind} ({err.msg})") from None

"""The one way selfknow writes its files: whole or not at all, and a full disk or a read-only folder as one line.

Every file is written to a temporary sibling, flushed to disk and renamed over its target, so a kill or a
full disk leaves the previous version (or nothing) in place, never half a file that a resumed run would
then trust. Folders (adapters) are assembled aside and moved in the same way.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

from selfknow.errors import SelfknowError

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def storage_problem(err: OSError) -> str | None:
    """The plain reason for a write that failed because of where it writes (full, read-only, not ours)."""
    return _REASONS.get(err.errno)


class WriteError(SelfknowError):
    """A file or folder could not be written; what was written before is intact."""


def write_error(path: Path, err: OSError) -> WriteError:
    """The one-line error for a write to ``path`` that failed with ``err``."""
    reason = storage_problem(err) or err.strerror or str(err)
    return WriteError(f"{path}: cannot write ({reason}); the files written before are intact")


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_with(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary)`` and move the result over ``path`` once it is complete and on disk."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError as err:
        with suppress(OSError):  # on a read-only file system even removing a missing file fails
            tmp.unlink(missing_ok=True)
        raise write_error(path, err) from None


def write_lines(path: str | Path, lines: Iterable[str]) -> None:
    """Lines, each ended by a newline, UTF-8."""

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line + "\n")

    write_with(path, write)


def write_text(path: str | Path, text: str) -> None:
    write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, value: Any, **dumps: Any) -> None:
    """``value`` as indented JSON (``dumps`` passed to ``json.dumps``), ended by a newline."""
    write_text(path, json.dumps(value, **{"indent": 2, **dumps}) + "\n")


def save_tensors(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Tensors as safetensors (contiguous copies, as the format needs)."""
    from safetensors.torch import save_file

    write_with(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata))


def place_folder(source: str | Path, target: str | Path) -> None:
    """Move the finished folder ``source`` (a scratch folder, consumed) to ``target``, replacing what is there:
    moved beside the target (a rename on the same file system) and renamed, so ``target`` is never a
    half-written folder that looks finished."""
    target = Path(target)
    aside = _temporary(target)
    try:
        shutil.rmtree(aside, ignore_errors=True)
        shutil.move(source, aside)
        shutil.rmtree(target, ignore_errors=True)
        aside.replace(target)
    except OSError as err:
        shutil.rmtree(aside, ignore_errors=True)
        raise write_error(target, err) from None

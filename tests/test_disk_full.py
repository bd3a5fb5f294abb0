"""A full disk and a read-only folder: one line naming the file, exit 1, and every file finished before intact.

The writers are tested with the failure injected; the CLI on a real full and a real read-only file system
(a small tmpfs), where this machine lets a test mount one.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import selfknow.writing as writing
from selfknow.errors import SelfknowError
from tests.test_cli import toy_file


def _fail_with(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize(("code", "reason"), [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")])
def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch, code, reason):
    path = tmp_path / "metrics.json"
    writing.write_json(path, {"version": 1})
    monkeypatch.setattr(writing.os, "fsync", _fail_with(code))
    with pytest.raises(SelfknowError, match=f"{path}: cannot write \\({reason}") as caught:
        writing.write_json(path, {"version": 2})
    assert "\n" not in str(caught.value)
    assert path.read_text() == '{\n  "version": 1\n}\n' and os.listdir(tmp_path) == ["metrics.json"]


def test_a_folder_that_fails_to_move_leaves_the_old_one(tmp_path, monkeypatch):
    old, new = tmp_path / "adapter", tmp_path / "new"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / "adapter_config.json").write_text(text)
    monkeypatch.setattr(writing.shutil, "move", _fail_with(errno.ENOSPC))
    with pytest.raises(SelfknowError, match="no space left"):
        writing.place_folder(new, old)
    assert (old / "adapter_config.json").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["adapter", "new"]
    monkeypatch.undo()
    writing.place_folder(new, old)
    assert (old / "adapter_config.json").read_text() == "new" and os.listdir(tmp_path) == ["adapter"]


def test_the_cli_reports_a_library_write_on_a_full_disk_in_one_line(monkeypatch, capsys, tmp_path):
    """Trainer and PEFT write with their own code: their OSError still reaches the user as one line."""
    import selfknow.cli as cli

    def app():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoint-3"))

    monkeypatch.setattr(cli, "app", app)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    err = capsys.readouterr().err
    assert exited.value.code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: {tmp_path / 'checkpoint-3'}: no space left on the device")


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (real ENOSPC and EROFS, which a root user meets too); skipped where mounting is not allowed."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of ``disk``."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - leave))
    return filler


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfknow.cli", *args], capture_output=True, text=True)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The error line of a failed command, checked to be its only one and not a traceback."""
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    return errors[0]


def test_answer_on_a_full_disk_stops_in_one_line_and_resumes_once_there_is_room(tmp_path, tiny_llama_dir, small_disk):
    data = toy_file(tmp_path, n=24)
    settings = ["-m", str(tiny_llama_dir), "--split", "all", "--batch-size", "4", "--max-new-tokens", "6"]
    reference = _cli("answer", f"jsonl:{data}", "-o", str(tmp_path / "reference.jsonl"), *settings)
    assert reference.returncode == 0, reference.stderr
    out = small_disk / "answers.jsonl"
    filler = _fill(small_disk, leave=8192)  # room for some batches of answers, not for all
    full = _cli("answer", f"jsonl:{data}", "-o", str(out), *settings)
    assert "answers.jsonl" in _one_error_line(full) and "no space left on the device" in full.stderr
    journal = [p for p in os.listdir(small_disk) if ".partial-" in p]
    assert journal and (small_disk / journal[0]).stat().st_size > 0  # the answers made before are kept
    filler.unlink()
    again = _cli("answer", f"jsonl:{data}", "-o", str(out), *settings)
    assert again.returncode == 0, again.stderr
    assert out.read_text() == (tmp_path / "reference.jsonl").read_text()


def test_grade_in_a_read_only_folder_stops_in_one_line_and_keeps_the_answers(tmp_path, tiny_llama_dir, small_disk):
    data = toy_file(tmp_path, n=12)
    out = small_disk / "answers.jsonl"
    made = _cli("answer", f"jsonl:{data}", "-o", str(out), "-m", str(tiny_llama_dir), "--max-new-tokens", "4")
    assert made.returncode == 0, made.stderr
    before = out.read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    graded = _cli("grade", str(out))
    assert str(out) in _one_error_line(graded) and "read-only file system" in graded.stderr
    assert out.read_bytes() == before
    shutil.copy(out, tmp_path / "copy.jsonl")  # still readable whole

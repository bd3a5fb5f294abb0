"""Run directories made of stages: each writes its outputs as it finishes, so a rerun resumes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from selfknow.errors import SelfknowError
from selfknow.reading import read_json
from selfknow.writing import write_json

C = TypeVar("C")


def run_stages(owner: Any, requested: Sequence[str], stages: Sequence[str]) -> Any:
    """Call ``owner.<stage>()`` for each requested stage, in the order of ``stages``; the last one's result."""
    unknown = [s for s in requested if s not in stages]
    if unknown:
        raise SelfknowError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(stages)}")
    result = None
    for stage in stages:
        if stage in requested:
            result = getattr(owner, stage)()
    return result


def settled_config(directory: Path, config: C | None, load: Callable[[Path], C], kind: str) -> C:
    """The run's settings: those saved in ``directory/config.json``, which a given ``config`` must equal (a
    rerun resumes; other settings are refused), or the given ones, saved as the run starts."""
    saved = directory / "config.json"
    if saved.exists():
        existing = load(saved)
        if config is not None and asdict(config) != asdict(existing):
            raise SelfknowError(f"{directory} is {kind} with other settings; use a new directory")
        return existing
    if config is None:
        raise SelfknowError(f"{directory} is not {kind} directory (no config.json)")
    directory.mkdir(parents=True, exist_ok=True)
    write_json(saved, asdict(config))
    return config


def read_settings(path: str | Path, known: Iterable[str], kind: str) -> dict[str, Any]:
    """A saved config's settings; an unreadable file or an unknown setting is an error naming the file."""
    data = read_json(path, f"{kind} config")
    if not isinstance(data, dict):
        raise SelfknowError(f"{path}: the {kind} config must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - set(known)
    if unknown:
        raise SelfknowError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    return data


def save_evaluation(directory: Path, summary: dict[str, Any], write_report: Callable[[Path, dict], Any]) -> None:
    """Attach the run's ``training.json``, ``timings.json`` (and ``data.json``) to the summary, and write
    ``evaluation/metrics.json`` and the report."""
    for name in ("data.json", "training.json", "timings.json"):
        if (directory / name).exists():
            summary[name.removesuffix(".json")] = read_json(directory / name, "run file")
    out = directory / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", summary, default=float)
    write_report(out, summary)

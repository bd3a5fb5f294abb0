"""Run directories made of stages: each writes its outputs as it finishes, so a rerun resumes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfknow.errors import SelfknowError


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

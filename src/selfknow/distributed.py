"""The process layout under ``accelerate launch`` (or torchrun), and one process otherwise."""

from __future__ import annotations

import torch
from accelerate import PartialState


def process_state() -> PartialState:
    """accelerate's process state; without a GPU, launched processes talk over gloo on the CPU
    (``accelerate launch --multi_gpu --num_processes N`` on a CPU-only machine)."""
    return PartialState(cpu=not torch.cuda.is_available())

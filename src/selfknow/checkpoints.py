"""Checkpoints that let a killed training resume where it was instead of from its first step.

Model passes that feed a training or an estimator (feature passes, calibration tuning's activation cache) are
saved in parts as they go (:func:`computed_in_parts`), so a kill costs at most one part of them.

Every selfknow training is a ``transformers.Trainer`` run on a model whose base weights are frozen, so a
checkpoint holds only what changes: the trainable parameters, the optimizer and scheduler, the RNG states
and the trainer's position (Trainer's own files), plus whatever a callback keeps (the best epoch so far).
A checkpoint is written every ``checkpoint_seconds()`` of training and counts only once its ``complete``
marker is there, written last, so a kill while one is being written falls back on the one before it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from selfknow.distributed import process_state
from selfknow.progress import parts_progress
from selfknow.writing import save_tensors

CHECKPOINTS = "checkpoints"  # in a run folder: checkpoints/ (one training) or checkpoints/<name>/ (one of several)
SECONDS_VARIABLE = "SELFKNOW_CHECKPOINT_SECONDS"
DEFAULT_SECONDS = 600.0
COMPLETE = "complete"
TRAINABLE = "trainable.safetensors"


def checkpoint_seconds() -> float:
    """Training time between checkpoints: ``SELFKNOW_CHECKPOINT_SECONDS`` or ten minutes."""
    value = os.environ.get(SECONDS_VARIABLE)
    return float(value) if value else DEFAULT_SECONDS


class TimedCheckpoints(TrainerCallback):
    """Ask Trainer for a checkpoint once ``seconds`` of training have passed since the last one (a time, not a
    step count, because what a kill may cost is time, whatever the model and batch size)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.last = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.last >= self.seconds and state.global_step < state.max_steps:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.last = time.monotonic()


class CheckpointedTrainer(Trainer):
    """A Trainer whose checkpoints hold the trainable parameters only (the frozen base never changes; saving it
    would write a 7B model's weights every time), completed by callbacks' ``save_state(folder)``."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.args.should_save:
            return
        folder = Path(output_dir or self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        trainable = {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
        save_file(trainable, folder / TRAINABLE)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        parameters = dict((model or self.model).named_parameters())
        with torch.no_grad():
            for name, value in load_file(Path(resume_from_checkpoint) / TRAINABLE).items():
                parameters[name].copy_(value)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        folder = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        for callback in self.callback_handler.callbacks:
            if hasattr(callback, "save_state"):
                callback.save_state(folder)
        (folder / COMPLETE).write_text("")
        for older in folder.parent.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
            if older != folder:
                shutil.rmtree(older, ignore_errors=True)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder``, if any."""
    done = [p for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if (p / COMPLETE).exists()]
    return max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


def train_resuming(trainer: CheckpointedTrainer, checkpoints: bool):
    """``trainer.train()``; with ``checkpoints``, from the newest complete checkpoint in its output folder when
    there is one, writing new ones every ``checkpoint_seconds()``."""
    last = latest_checkpoint(Path(trainer.args.output_dir)) if checkpoints else None
    if checkpoints:
        trainer.add_callback(TimedCheckpoints(checkpoint_seconds()))
    if last is not None:
        for callback in trainer.callback_handler.callbacks:
            if hasattr(callback, "load_state"):
                callback.load_state(last)
    return trainer.train(resume_from_checkpoint=str(last) if last is not None else None)


@contextmanager
def training_folder(checkpoints: Path | None) -> Iterator[str]:
    """Trainer's output folder: ``checkpoints`` (kept: :func:`removed_after_saving` clears it once the result
    is saved), or a scratch folder when the training keeps no checkpoints."""
    if checkpoints is None:
        with tempfile.TemporaryDirectory() as scratch:
            yield scratch
        return
    checkpoints.mkdir(parents=True, exist_ok=True)
    yield str(checkpoints)


@contextmanager
def removed_after_saving(checkpoints: Path | None) -> Iterator[Path | None]:
    """Around a training and the saving of its result: the checkpoints go only once both are done, so a kill
    in between still resumes from the last one."""
    yield checkpoints
    if checkpoints is not None:
        shutil.rmtree(checkpoints, ignore_errors=True)
        if checkpoints.parent.name == CHECKPOINTS:
            with suppress(OSError):  # the shared folder goes with its last training
                checkpoints.parent.rmdir()


def computed_in_parts(
    folder: Path | None,
    prefix: str,
    ranges: Sequence[range],
    key: Callable[[range], str],
    compute: Callable[[range], dict[str, torch.Tensor]],
    *,
    description: str = "computing",
    progress: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """``compute(part)`` for each part of rows, saved as ``folder/<prefix>-<key(part)>.safetensors`` once done and
    read back on a rerun instead of computed, so a killed pass redoes at most one part (without ``folder``,
    computed only). One progress bar counts the rows of all parts. Under ``accelerate launch`` the processes
    compute each part together and the main process writes."""
    state = process_state()
    parts = []
    with parts_progress(sum(len(part) for part in ranges), description, progress and state.is_main_process) as bar:
        for part in ranges:
            path = folder / f"{prefix}-{key(part)}.safetensors" if folder is not None else None
            if path is not None and path.exists():
                parts.append(load_file(path))
            else:
                parts.append(compute(part))
                if path is not None and state.is_main_process:
                    save_tensors(path, parts[-1])
                state.wait_for_everyone()
            bar.advance(len(part), 0)
    return parts


def part_ranges(count: int, size: int) -> list[range]:
    """``range(count)`` cut into consecutive parts of ``size`` (the last one shorter)."""
    return [range(start, min(start + size, count)) for start in range(0, count, size)]

"""Supervised fine-tuning of a LoRA adapter on token rows where only some tokens are taught, as a
``transformers.Trainer`` (so ``accelerate launch`` scales it out).

A row is (token ids, labels) with ``IGNORE_INDEX`` wherever the loss must not look: the prompt, a passage
the model reads, a wrong answer shown to it. The loss is the mean cross-entropy of the supervised next
tokens, and the LM head runs on those positions alone: at a 49k vocabulary the head is a fifth of the
model's FLOPs, and the supervised tokens are often a small part of each row (an instruction after a long
answer, reflection tokens after a passage). Used by the Self-RAG generator and by instruction
backtranslation's backward and forward models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from selfknow.checkpoints import CheckpointedTrainer, train_resuming, training_folder
from selfknow.confidence.tuning import output_logits, quiet, training_arguments

IGNORE_INDEX = -100
Row = tuple[list[int], list[int]]  # token ids and their labels (IGNORE_INDEX: not taught)


def prompt_target_row(prompt_ids: Sequence[int], target_ids: Sequence[int]) -> Row:
    """The row that teaches ``target_ids`` after ``prompt_ids``: loss on the target only."""
    return list(prompt_ids) + list(target_ids), [IGNORE_INDEX] * len(prompt_ids) + list(target_ids)


class Rows(torch.utils.data.Dataset):
    def __init__(self, rows: Sequence[Row]):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        ids, labels = self.rows[index]
        return {"input_ids": ids, "labels": labels}


def collate_rows(pad_id: int):
    """Right padding, so positions stay 0..n-1 without position ids."""

    def collate(items: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            ids[row, :n] = torch.tensor(item["input_ids"])
            labels[row, :n] = torch.tensor(item["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


class MaskedTrainer(CheckpointedTrainer):
    """Mean cross-entropy over the supervised next tokens, with logits only at those positions."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"][:, 1:]
        keep = labels != IGNORE_INDEX
        base = model.get_base_model()
        hidden = base.get_decoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        states = hidden.last_hidden_state[:, :-1][keep]
        loss = F.cross_entropy(output_logits(model, states).float(), labels[keep])
        return (loss, {"loss": loss}) if return_outputs else loss


def fit(
    peft_model,
    rows: Sequence[Row],
    *,
    pad_id: int,
    batch_size: int,
    epochs: float,
    lr: float,
    seed: int,
    progress: bool = False,
    trainer_class: type[MaskedTrainer] = MaskedTrainer,
    checkpoints: Path | None = None,
    gradient_checkpointing: bool = False,
    **trainer_attributes,
) -> dict:
    """Train ``peft_model``'s trainable parameters on ``rows`` (linear decay, 3% warm-up, batches of similar
    length); returns the run's numbers. ``trainer_attributes`` are set on the trainer before training. With a
    ``checkpoints`` folder, a killed training resumes from its last checkpoint there. ``gradient_checkpointing``
    keeps only each layer's input for the backward pass and recomputes the rest: activation memory falls to
    about one layer's worth for roughly a third more compute (transformers' own, non-reentrant variant)."""
    with training_folder(checkpoints) as scratch:
        steps = math.ceil(len(rows) / batch_size) * epochs
        args = training_arguments(
            scratch, batch_size, epochs, lr, seed, progress, peft_model,
            lr_scheduler_type="linear",
            warmup_steps=int(0.03 * steps),
            train_sampling_strategy="group_by_length",  # batches of similar length: little padding
            activation_checkpointing=gradient_checkpointing,
            activation_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        )  # fmt: skip
        trainer = trainer_class(
            model=peft_model, args=args, train_dataset=Rows(rows), data_collator=collate_rows(pad_id)
        )
        for name, value in trainer_attributes.items():
            setattr(trainer, name, value)
        quiet(trainer)
        result = train_resuming(trainer, checkpoints is not None)
    if gradient_checkpointing:
        peft_model.get_base_model().activation_checkpointing_disable()  # the model goes on to generate
    peft_model.eval()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "examples": len(rows),
        "train_tokens": sum(len(ids) for ids, _ in rows),
        "supervised_tokens": sum(sum(t != IGNORE_INDEX for t in labels) for _, labels in rows),
        "train_seconds": result.metrics.get("train_runtime"),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
    }

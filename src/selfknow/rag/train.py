"""Generator training for Self-RAG: next-token loss on the output and its reflection tokens (paper Eq. 2),
through LoRA plus trainable rows for the new tokens, as a ``transformers.Trainer`` (so ``accelerate
launch`` scales it out).

The loss reads logits only where a label is supervised: the LM head runs on those positions alone, not on
the prompt and passage text that make up most of every sequence (the head is a fifth of the model's FLOPs
at a 49k vocabulary).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from peft import get_peft_model
from transformers import Trainer

from selfknow.confidence.tuning import output_logits, quiet, training_arguments
from selfknow.rag.labels import Example, encode
from selfknow.rag.reflection import add_reflection_tokens, reflection_lora_config
from selfknow.rag.sequences import IGNORE_INDEX


@dataclass
class GeneratorConfig:
    epochs: float = 1.0
    lr: float = 5e-4
    batch_size: int = 8
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    token_lr_scale: float = 20.0  # the reflection-token rows' learning rate, as a multiple of lr
    max_tokens: int = 320  # longer examples are left out (and counted)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class _Encoded(torch.utils.data.Dataset):
    def __init__(self, rows: list[tuple[list[int], list[int]]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        ids, labels = self.rows[index]
        return {"input_ids": ids, "labels": labels}


def _collate(pad_id: int):
    def collate(items: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):  # right padding: positions stay 0..n-1 without position ids
            n = len(item["input_ids"])
            ids[row, :n] = torch.tensor(item["input_ids"])
            labels[row, :n] = torch.tensor(item["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


class GeneratorTrainer(Trainer):
    token_lr_scale: float = 1.0

    def create_optimizer(self, model=None):
        """AdamW with the reflection tokens' rows at ``token_lr_scale`` times the LoRA learning rate: they start
        as the mean embedding, far from any useful place, and at the LoRA rate a rarely supervised token such
        as ``[No Retrieval]`` barely moves in a few hundred steps."""
        if self.optimizer is None:
            trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            rows = [p for n, p in trainable if "trainable_tokens" in n]
            rest = [p for n, p in trainable if "trainable_tokens" not in n]
            lr = self.args.learning_rate
            groups = [{"params": rest}, {"params": rows, "lr": lr * self.token_lr_scale}]
            self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, weight_decay=0.0)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Mean cross-entropy over supervised next tokens; logits only at those positions."""
        labels = inputs["labels"][:, 1:]
        keep = labels != IGNORE_INDEX
        base = model.get_base_model()
        hidden = base.get_decoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        states = hidden.last_hidden_state[:, :-1][keep]
        loss = F.cross_entropy(output_logits(model, states).float(), labels[keep])
        return (loss, {"loss": loss}) if return_outputs else loss


def train_generator(model, tokenizer, examples: Sequence[Example], config: GeneratorConfig, *, progress: bool = False):
    """Add the reflection tokens, wrap the model in a fresh LoRA adapter and train it on ``examples``;
    returns (peft_model, numbers)."""
    ids = add_reflection_tokens(model, tokenizer)
    rows = [encode(tokenizer, e) for e in examples]
    too_long = sum(len(r[0]) > config.max_tokens for r in rows)
    rows = [r for r in rows if len(r[0]) <= config.max_tokens]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        peft_model = get_peft_model(
            model, reflection_lora_config(model, ids, r=config.r, alpha=config.alpha, dropout=config.dropout)
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with tempfile.TemporaryDirectory() as scratch:
        steps = math.ceil(len(rows) / config.batch_size) * config.epochs
        args = training_arguments(
            scratch, config.batch_size, config.epochs, config.lr, config.seed, progress,
            lr_scheduler_type="linear",
            warmup_steps=int(0.03 * steps),  # 3%, as the paper
            train_sampling_strategy="group_by_length",  # batches of similar length: little padding
        )  # fmt: skip
        trainer = GeneratorTrainer(
            model=peft_model, args=args, train_dataset=_Encoded(rows), data_collator=_collate(pad)
        )
        trainer.token_lr_scale = config.token_lr_scale
        quiet(trainer)
        result = trainer.train()
    peft_model.eval()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    numbers = {
        "examples": len(rows),
        "refused_too_long": too_long,
        "train_tokens": sum(len(r[0]) for r in rows),
        "supervised_tokens": sum(sum(t != IGNORE_INDEX for t in r[1]) for r in rows),
        "train_seconds": result.metrics.get("train_runtime"),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "config": config.to_dict(),
    }
    return peft_model, numbers

"""Generator training for Self-RAG: next-token loss on the output and its reflection tokens (paper Eq. 2),
through LoRA plus trainable rows for the new tokens, on the shared masked trainer (:mod:`selfknow.sft`:
logits only where a label is taught, not on the prompt and passage text that make up most of every sequence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from peft import get_peft_model

from selfknow.rag.labels import Example, encode
from selfknow.rag.reflection import add_reflection_tokens, reflection_lora_config
from selfknow.sft import MaskedTrainer, fit


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


class GeneratorTrainer(MaskedTrainer):
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


def train_generator(
    model,
    tokenizer,
    examples: Sequence[Example],
    config: GeneratorConfig,
    *,
    progress: bool = False,
    checkpoints: Path | None = None,
    gradient_checkpointing: bool = False,
):
    """Add the reflection tokens, wrap the model in a fresh LoRA adapter and train it on ``examples``
    (resuming from ``checkpoints`` when a killed run left one; ``gradient_checkpointing``: see
    :func:`selfknow.sft.fit`); returns (peft_model, numbers)."""
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
    numbers = fit(
        peft_model, rows, pad_id=pad, batch_size=config.batch_size, epochs=config.epochs, lr=config.lr,
        seed=config.seed, progress=progress, trainer_class=GeneratorTrainer, checkpoints=checkpoints,
        token_lr_scale=config.token_lr_scale, gradient_checkpointing=gradient_checkpointing,
    )  # fmt: skip
    return peft_model, {**numbers, "refused_too_long": too_long, "config": config.to_dict()}

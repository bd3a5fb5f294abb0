"""The backward model M_yx and the forward models M_0, M_1, M_2: LoRA adapters on the base model, each trained
from the base on its own rows with the loss on the target text only (:mod:`selfknow.sft`).

Backward rows teach the instruction after the backward prompt holding the answer; forward rows teach the
answer after the instruction and its source tag. Long answers are cut to ``max_response_tokens`` (the
backward model sees their opening, which names the subject; the forward model learns their first part and,
when cut, no end-of-sequence token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from selfknow.backtranslate.prompts import ASSISTANT_TAG, backward_prompt, forward_prompt
from selfknow.sft import Row, fit, prompt_target_row

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class LoraSettings:
    """The seed model card's LoRA (r 8, alpha 32, dropout 0.05 on the attention projections) and a LoRA-sized
    learning rate (the paper's 1e-5 is for full fine-tuning of 7B models)."""

    r: int = 8
    alpha: int = 32
    dropout: float = 0.05
    targets: tuple[str, ...] = TARGETS
    epochs: float = 3.0
    lr: float = 5e-4
    batch_size: int = 8
    seed: int = 0

    def to_dict(self) -> dict:
        """As saved in a run's config.json (lists, not tuples, so a saved config compares equal)."""
        return {**asdict(self), "targets": list(self.targets)}


@dataclass(frozen=True)
class Example:
    """One forward training pair with its source tags (seed: S_a; augmented: S_w)."""

    instruction: str
    output: str
    tags: tuple[str, ...] = field(default=(ASSISTANT_TAG,))


def truncate(tokenizer, text: str, max_tokens: int) -> tuple[str, bool]:
    """The text cut to its first ``max_tokens`` tokens, and whether it was cut."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) <= max_tokens:
        return text, False
    return tokenizer.decode(ids[:max_tokens]), True


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=not tokenizer.chat_template).input_ids


def backward_rows(tokenizer, pairs: Sequence[tuple[str, str]], max_response_tokens: int) -> list[Row]:
    """(instruction, output) pairs as backward rows: the output in the prompt, the instruction taught."""
    rows = []
    for instruction, output in pairs:
        response, _ = truncate(tokenizer, output, max_response_tokens)
        target = tokenizer(instruction.strip() + tokenizer.eos_token, add_special_tokens=False).input_ids
        rows.append(prompt_target_row(_encode(tokenizer, backward_prompt(tokenizer, response)), target))
    return rows


def forward_rows(tokenizer, examples: Sequence[Example], max_response_tokens: int) -> list[Row]:
    """Forward rows: the tagged instruction in the prompt, the output taught (with EOS unless it was cut)."""
    rows = []
    for example in examples:
        output, cut = truncate(tokenizer, example.output.strip(), max_response_tokens)
        target = tokenizer(output + ("" if cut else tokenizer.eos_token), add_special_tokens=False).input_ids
        prompt = forward_prompt(tokenizer, example.instruction, example.tags)
        rows.append(prompt_target_row(_encode(tokenizer, prompt), target))
    return rows


def train_lora(
    model,
    tokenizer,
    rows: Sequence[Row],
    settings: LoraSettings,
    *,
    progress: bool = False,
    checkpoints: Path | None = None,
    gradient_checkpointing: bool = False,
):
    """A fresh LoRA adapter on ``model`` trained on ``rows`` (resuming from ``checkpoints`` when a killed run
    left one; ``gradient_checkpointing``: see :func:`selfknow.sft.fit`); returns (peft_model, numbers).
    ``peft_model.unload()`` gives the untouched base model back for the next adapter."""
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        peft_model = get_peft_model(model, config)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    numbers = fit(
        peft_model, rows, pad_id=pad, batch_size=settings.batch_size, epochs=settings.epochs, lr=settings.lr,
        seed=settings.seed, progress=progress, checkpoints=checkpoints, gradient_checkpointing=gradient_checkpointing,
    )  # fmt: skip
    return peft_model, {**numbers, "settings": settings.to_dict()}


def with_adapter(model, directory) -> PeftModel:
    """``model`` with the saved adapter in ``directory`` on (``.unload()`` takes it off again)."""
    return PeftModel.from_pretrained(model, str(directory)).eval()

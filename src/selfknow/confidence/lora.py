"""Estimators that train a LoRA adapter: calibration tuning (LoRA + the query) and LoRA + probe head.

The answer always comes from the base model (adapter off); only the confidence uses the adapter, so
tuning cannot change what the model answers. Adapters are saved in plain PEFT format
(``PeftModel.from_pretrained(base, "<estimator dir>/adapter")`` loads one), heads as safetensors.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from selfknow.confidence.base import Context, Estimator, labels, register
from selfknow.confidence.query import render_query
from selfknow.confidence.tuning import (
    CachedQueries,
    CalibrationModel,
    TuningConfig,
    cache_queries_in_parts,
    make_head,
    num_layers,
    query_options,
    score_queries,
    train_adapter,
)
from selfknow.data.records import Record
from selfknow.errors import SelfknowError
from selfknow.writing import place_folder

_TUNING_FIELDS = {f.name for f in fields(TuningConfig)}


class _Tuned(Estimator):
    work = "1 query pass with the adapter on"

    uses_model = True
    head_kind: ClassVar[str] = "query"

    def __init__(self, **config):
        super().__init__(**config)
        self._adapter_dir: Path | None = None
        self._peft_model = None
        self._head: torch.nn.Module | None = None

    def tuning(self, context: Context) -> TuningConfig:
        chosen = {k: v for k, v in self.config.items() if k in _TUNING_FIELDS}
        return TuningConfig(**{"seed": context.seed, **chosen, "head": self.head_kind})

    def fit(self, train: Sequence[Record], validation: Sequence[Record], context: Context) -> Estimator:
        self.check_own_answers([*train, *validation], context)
        tuning = self.tuning(context)
        tokenizer = context.tokenizer
        queries_train = [render_query(r, tokenizer) for r in train]
        queries_val = [render_query(r, tokenizer) for r in validation]
        options = query_options(tokenizer, queries_train)
        with torch.random.fork_rng(devices=[]):  # the adapter's and head's initial weights follow the seed
            torch.manual_seed(tuning.seed)
            peft_model = self._peft_model = context.attach_adapter(self.name, tuning.lora(num_layers(context.model)))
            hidden_size = context.model.config.get_text_config().hidden_size
            self._head = make_head(hidden_size) if self.head_kind == "probe" else None
        folder = context.checkpoints(self.name)
        cache = [
            cache_queries_in_parts(peft_model, tokenizer, q, labels(rs), tuning, folder, progress=context.progress)
            for q, rs in ((queries_train, train), (queries_val, validation))
        ]
        result = train_adapter(
            peft_model,
            self.name,
            options,
            CachedQueries(cache[0]),
            CachedQueries(cache[1]),
            tuning,
            head=self._head,
            progress=context.progress,
            checkpoints=context.checkpoints(self.name),
        )
        self.config.update(tuning.to_dict(), options=list(options), model=context.model_spec, training=result)
        if self._head is not None:
            self.arrays = {f"head.{k}": v.detach().cpu().clone() for k, v in self._head.state_dict().items()}
        return self

    def _calibration(self, context: Context) -> CalibrationModel:
        if self.config.get("model") and self.config["model"] != context.model_spec:
            raise SelfknowError(
                f"estimator '{self.name}' was trained on model '{self.config['model']}', not '{context.model_spec}'"
            )
        peft_model = self._peft_model = context.attach_adapter(self.name, directory=self._adapter_dir)
        if self.head_kind == "probe" and self._head is None:
            self._head = make_head(context.model.config.get_text_config().hidden_size)
            self._head.load_state_dict({k.removeprefix("head."): v for k, v in self.arrays.items()})
        return CalibrationModel(peft_model, 0, tuple(self.config["options"]), self._head)

    def score(self, records: Sequence[Record], context: Context) -> np.ndarray:
        self.check_own_answers(records, context)
        queries = [render_query(r, context.tokenizer) for r in records]
        logits = score_queries(self._calibration(context), context.tokenizer, queries, progress=context.progress)
        return logits.softmax(-1)[:, 1].numpy()

    def save(self, directory: str | Path) -> None:
        super().save(directory)
        target = Path(directory) / "adapter"
        if self._peft_model is None:  # loaded from disk and never run: copy the saved adapter
            if self._adapter_dir is not None and self._adapter_dir.resolve() != target.resolve():
                shutil.copytree(self._adapter_dir, target, dirs_exist_ok=True)
            return
        with tempfile.TemporaryDirectory() as scratch:
            self._peft_model.save_pretrained(scratch, selected_adapters=[self.name])
            saved = Path(scratch) / self.name if (Path(scratch) / self.name).exists() else Path(scratch)
            place_folder(saved, target)

    def restore(self, directory: Path) -> None:
        self._adapter_dir = directory / "adapter"
        if not (self._adapter_dir / "adapter_config.json").exists():
            raise SelfknowError(f"{directory}: the adapter folder is missing")


@register("ct")
class CalibrationTuning(_Tuned):
    """LoRA + uncertainty query, trained with the calibration loss (the paper's "LoRA + Prompt")."""

    head_kind = "query"


@register("lora-probe")
class LoraProbe(_Tuned):
    """LoRA + an MLP head on the query's last hidden state (the paper's "LoRA")."""

    head_kind = "probe"

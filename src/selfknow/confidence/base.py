"""The estimator family: everything that turns graded records into P(correct) shares one interface.

``fit`` learns from graded training records (choosing hyper-parameters on validation records),
``score`` gives each record a probability that its answer is correct, and ``save``/``load`` keep an
estimator in a directory (JSON for settings, safetensors for arrays, PEFT format for adapters; never
pickle). Estimators that need the language model get it from a shared :class:`Context`, which loads it
once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file

from selfknow.data.records import Record
from selfknow.errors import DataError, SelfknowError
from selfknow.reading import read_json
from selfknow.writing import save_tensors, write_json

ESTIMATORS: dict[str, type[Estimator]] = {}


def register(name: str) -> Callable[[type[Estimator]], type[Estimator]]:
    def decorate(cls: type[Estimator]) -> type[Estimator]:
        cls.name = name
        ESTIMATORS[name] = cls
        return cls

    return decorate


def labels(records: Sequence[Record]) -> np.ndarray:
    """The grades as 0/1; records never graded are an error (grade them first)."""
    ungraded = [r.id for r in records if r.correct is None]
    if ungraded:
        raise DataError(f"{len(ungraded)} record(s) have no grade, e.g. {ungraded[0]!r}; run `selfknow grade` first")
    if not records:
        raise DataError("no records (an empty split?)")
    return np.array([1.0 if r.correct else 0.0 for r in records])


class Context:
    """What estimators share in one process: the model (loaded on first use), a seed, a cache folder, and a
    folder for training checkpoints (a killed training resumes from them)."""

    def __init__(
        self,
        model_spec: str = "smollm2",
        *,
        model: Any = None,
        tokenizer: Any = None,
        cache_dir: str | Path | None = None,
        checkpoint_dir: str | Path | None = None,
        seed: int = 0,
        dtype: str = "auto",
        device: str = "auto",
        progress: bool = True,
        trust_remote_code: bool = False,
        other_models_answers: bool = False,
    ):
        self.model_spec, self.seed, self.dtype, self.device, self.progress = model_spec, seed, dtype, device, progress
        # Records answered by another model (an endpoint) scored with this one on purpose: cross-model confidence.
        self.other_models_answers = other_models_answers
        self.trust_remote_code = trust_remote_code
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        if model is not None:
            self.__dict__["model_and_tokenizer"] = (model, tokenizer)

    @cached_property
    def model_and_tokenizer(self):
        from selfknow.models import load_model

        return load_model(
            self.model_spec, dtype=self.dtype, device=self.device, trust_remote_code=self.trust_remote_code
        )

    def checkpoints(self, name: str) -> Path | None:
        """Where estimator ``name`` keeps its training checkpoints, if this context keeps any."""
        return self.checkpoint_dir / name if self.checkpoint_dir is not None else None

    @property
    def model(self):
        return self.model_and_tokenizer[0]

    @property
    def tokenizer(self):
        return self.model_and_tokenizer[1]

    @property
    def lm(self):
        """The model to run: the PEFT wrapper once an adapter is attached (adapters live inside the
        base model's layers, so running the bare base model would silently use the active one)."""
        return self.__dict__.get("peft_model") or self.model

    def attach_adapter(self, name: str, config=None, directory: str | Path | None = None):
        """Add a fresh LoRA adapter (``config``) or load a saved one (``directory``) under ``name`` and
        make it the active one; one PEFT wrapper holds every adapter of the process."""
        from peft import PeftModel, get_peft_model

        if directory is not None and not (Path(directory) / "adapter_model.safetensors").exists():
            # PEFT would fall back to a pickled adapter_model.bin, which can run code when loaded
            raise SelfknowError(f"{directory}: no adapter_model.safetensors (adapters load from safetensors only)")
        peft_model = self.__dict__.get("peft_model")
        if peft_model is None:
            if directory is not None:
                peft_model = PeftModel.from_pretrained(self.model, str(directory), adapter_name=name)
            else:
                peft_model = get_peft_model(self.model, config, adapter_name=name)
            self.__dict__["peft_model"] = peft_model
        elif name not in peft_model.peft_config:
            if directory is not None:
                peft_model.load_adapter(str(directory), adapter_name=name)
            else:
                peft_model.add_adapter(name, config)
        peft_model.set_adapter(name)
        return peft_model


class Estimator:
    """Base class. Subclasses set ``uses_model`` and implement ``fit``/``score``; settings live in
    ``self.config`` (JSON-able), learned arrays in ``self.arrays`` (tensors), both saved by default."""

    name: ClassVar[str] = ""
    uses_model: ClassVar[bool] = False
    work: ClassVar[str] = "none"  # the model work scoring one answered question takes (the reports' cost column)

    def __init__(self, **config: Any):
        self.config: dict[str, Any] = config
        self.arrays: dict[str, torch.Tensor] = {}

    def fit(self, train: Sequence[Record], validation: Sequence[Record], context: Context) -> Estimator:
        """Learn from graded records; the default (for zero-shot estimators) learns nothing."""
        return self

    def score(self, records: Sequence[Record], context: Context) -> np.ndarray:
        raise NotImplementedError

    def check_own_answers(self, records: Sequence[Record], context: Context) -> None:
        """An estimator that reads the model's weights scores the answers that model gave; answers from an
        endpoint (another model, or the same one served elsewhere) need ``context.other_models_answers``."""
        foreign = next((r for r in records if r.scores.get("engine") == "openai"), None)
        if foreign is not None and self.uses_model and not context.other_models_answers:
            raise SelfknowError(
                f"'{self.name}' reads the answering model's weights, but record {foreign.id!r} was answered through "
                "an endpoint (--engine openai); the sampling estimators need only the saved samples, and verbal the "
                "reply `selfknow answer --verbal` keeps"
            )

    def work_per_question(self, records: Sequence[Record]) -> str:
        """:attr:`work`, with numbers read from the records where the work depends on them."""
        return self.work

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / "estimator.json", {"estimator": self.name, "config": self.config})
        if self.arrays:
            save_tensors(directory / "arrays.safetensors", self.arrays)

    @classmethod
    def load(cls, directory: str | Path) -> Estimator:
        directory = Path(directory)
        meta_path = directory / "estimator.json"
        if not meta_path.exists():
            raise SelfknowError(f"{directory} holds no saved estimator (no estimator.json)")
        meta = read_json(meta_path, "estimator description")
        if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
            raise SelfknowError(f"{meta_path}: not an estimator description (a JSON object with a config)")
        if meta.get("estimator") not in ESTIMATORS:
            raise SelfknowError(f"{directory}: unknown estimator {meta.get('estimator')!r}")
        estimator = ESTIMATORS[meta["estimator"]](**meta.get("config", {}))
        arrays = directory / "arrays.safetensors"
        if arrays.exists():
            estimator.arrays = load_file(arrays)
        estimator.restore(directory)
        return estimator

    def restore(self, directory: Path) -> None:
        """Hook for estimators with more than config and arrays (e.g. an adapter folder)."""


def check_probabilities(scores: np.ndarray, name: str) -> np.ndarray:
    """Estimators must return finite probabilities; a NaN is a bug or bad input, never averaged away."""
    scores = np.asarray(scores, dtype=float)
    if not np.all(np.isfinite(scores)) or np.any((scores < 0) | (scores > 1)):
        bad = int(np.flatnonzero(~np.isfinite(scores) | (scores < 0) | (scores > 1))[0])
        raise SelfknowError(f"estimator '{name}' gave a confidence that is not a probability: {scores[bad]!r}")
    return scores

"""Bidirectional entailment with an NLI model, the equivalence of Kuhn et al.'s semantic entropy: two answers
to a question are one answer when the model reads "question + a" as entailing "question + b" and back.

The model is any sequence-classification checkpoint whose labels name an entailment class (for example
``microsoft/deberta-large-mnli``, the one LM-Polygraph and UQLM use). None ships on PyPI (searched: the
packages that mention NLI download their model from the hub), so the user names one: a local folder, or a
hub id they ask to download.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from selfknow.equivalence import Pair, same_by_match
from selfknow.errors import ModelError
from selfknow.models import match_threads, resolve_device, resolve_dtype


def entailment_index(config: Any, spec: str) -> int:
    """The class the model calls entailment, read from its ``id2label``."""
    found = [int(i) for i, label in config.id2label.items() if "entail" in str(label).lower()]
    if len(found) != 1:
        raise ModelError(
            f"NLI model '{spec}': its labels {dict(config.id2label)} name no single entailment class "
            "(an MNLI-style classifier is needed)"
        )
    return found[0]


class NLIJudge:
    """Judges pairs of answers by bidirectional entailment; the model is loaded on the first batch."""

    def __init__(self, spec: str, *, dtype: str = "auto", device: str = "auto", batch_size: int = 32):
        self.spec, self.dtype, self.device, self.batch_size = spec, dtype, device, batch_size
        self._loaded: tuple[Any, Any, int] | None = None

    def _load(self) -> tuple[Any, Any, int]:
        if self._loaded is None:
            target = resolve_device(self.device)
            if target.type == "cpu":
                match_threads()
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.spec)
                model = AutoModelForSequenceClassification.from_pretrained(
                    self.spec, dtype=resolve_dtype(self.dtype, target), device_map={"": str(target)}, use_kernels=False
                )
            except (OSError, ValueError) as err:
                raise ModelError(f"could not load NLI model '{self.spec}': {str(err).splitlines()[0]}") from None
            self._loaded = (model.eval(), tokenizer, entailment_index(model.config, self.spec))
        return self._loaded

    @torch.inference_mode()
    def entails(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[bool]:
        """Whether each premise entails its hypothesis (entailment is the model's most likely class)."""
        model, tokenizer, entail = self._load()
        verdicts: list[bool] = []
        for start in range(0, len(premises), self.batch_size):
            batch = tokenizer(
                list(premises[start : start + self.batch_size]),
                list(hypotheses[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                return_tensors="pt",
            ).to(model.device)
            verdicts.extend((model(**batch).logits.argmax(-1) == entail).tolist())
        return verdicts

    def __call__(self, pairs: Sequence[Pair]) -> list[bool]:
        """Multiple-choice answers are letters, equivalent when they name one choice; the rest ask the model."""
        texts = [(f"{r.question} {a}", f"{r.question} {b}") for r, a, b in pairs if r.format != "choice"]
        forward = iter(self.entails([a for a, _ in texts], [b for _, b in texts]) if texts else [])
        backward = iter(self.entails([b for _, b in texts], [a for a, _ in texts]) if texts else [])
        return [
            same_by_match(r, a, b) if r.format == "choice" else next(forward) and next(backward) for r, a, b in pairs
        ]

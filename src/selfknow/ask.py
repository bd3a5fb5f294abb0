"""Answer a question and say how likely the answer is to be right, from a saved run.

One model is loaded once: the answer comes from the base model (adapters off), the confidence from
the run's best estimator as chosen on validation (a calibration-tuned adapter, a probe, ...), with its
post-hoc scaling. Answers are exactly the base model's: tuning never changes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from selfknow.answer import AnswerConfig, answer_records
from selfknow.api import fewshot_pool
from selfknow.confidence.scaling import scaler_from_dict
from selfknow.data.records import Record
from selfknow.errors import SelfknowError
from selfknow.models import adapters_off
from selfknow.pipeline import Run
from selfknow.prompts import Prompter, PromptStyle

UNGRADED = "(not graded)"  # a question asked live has no gold answer


@dataclass(frozen=True)
class Answer:
    question: str
    answer: str
    confidence: float  # P(the answer is correct)
    estimator: str


class Asker:
    """Loads a run's model and chosen estimator once; :meth:`ask` answers questions with confidence."""

    def __init__(self, run_dir: str | Path, estimator: str | None = None, *, progress: bool = False):
        self.run = Run(run_dir, progress=progress)
        metrics = self.run.dir / "evaluation" / "metrics.json"
        if estimator is None:
            if not metrics.exists():
                raise SelfknowError(f"{run_dir}: no evaluation yet to pick the best estimator; run `selfknow tune`")
            estimator = json.loads(metrics.read_text())["best"]
        self.name = estimator
        base_name, _, scaling = estimator.partition("+")
        self.estimator, scalers = self.run.load_estimator(base_name)
        if scaling and scaling not in scalers:
            raise SelfknowError(f"unknown scaling '{scaling}' for '{base_name}'; have {', '.join(scalers)}")
        self.scaler = scaler_from_dict(scalers[scaling]) if scaling else None
        config = self.run.config
        pool = fewshot_pool(config.dataset, format=config.format, seed=config.seed) if config.kshot else []
        self.prompter = Prompter(
            self.run.context.tokenizer, PromptStyle(chat=config.chat, kshot=config.kshot, seed=config.seed), pool
        )

    def ask(self, questions: str | Sequence[str]) -> list[Answer]:
        questions = [questions] if isinstance(questions, str) else list(questions)
        if not questions or any(not q.strip() for q in questions):
            raise SelfknowError("ask needs a non-empty question")
        context = self.run.context
        records = [
            Record(id=f"ask/{i}", dataset="ask", split="test", question=q.strip(), answer=UNGRADED)
            for i, q in enumerate(questions)
        ]
        with adapters_off(context.lm) as base:
            answered, _ = answer_records(
                base,
                context.tokenizer,
                records,
                prompter=self.prompter,
                config=AnswerConfig(max_new_tokens=self.run.config.max_new_tokens),
                progress=False,
            )
        confidence = self.estimator.score(answered, context)
        if self.scaler is not None:
            confidence = self.scaler.apply(confidence)
        return [
            Answer(r.question, r.output or "", float(p), self.name) for r, p in zip(answered, confidence, strict=True)
        ]

"""Answer a question and say how likely the answer is to be right, from a saved run or a bare model.

One model is loaded once: the answer comes from the base model (adapters off), the confidence from
the run's best estimator as chosen on validation (a calibration-tuned adapter, a probe, ...), with its
post-hoc scaling. Answers are exactly the base model's: tuning never changes them. Given a target risk,
the asker abstains below a threshold chosen on the run's graded validation answers
(:mod:`selfknow.abstention`). A bare model has no graded answers, so it can only offer the zero-shot
query's uncalibrated confidence and cannot abstain with a guarantee.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfknow.abstention import AbstentionThreshold
from selfknow.answer import AnswerConfig, answer_records
from selfknow.api import fewshot_pool
from selfknow.confidence import ESTIMATORS, Context, Estimator
from selfknow.confidence.scaling import Scaler, scaler_from_dict
from selfknow.data.records import Record
from selfknow.errors import SelfknowError
from selfknow.models import adapters_off
from selfknow.pipeline import Run
from selfknow.prompts import Prompter, PromptStyle
from selfknow.reading import read_json

UNGRADED = "(not graded)"  # a question asked live has no gold answer
BARE_MODEL_ESTIMATOR = "query"  # the only estimator that needs no graded answers


@dataclass(frozen=True)
class Sampling:
    """Sampled answers a caller asks for besides the greedy one: ``n`` of them, seeded."""

    n: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Sampled:
    text: str
    tokens: tuple[str, ...]  # the text of each token, as decoded on its own
    token_logprobs: tuple[float, ...]
    truncated: bool = False


@dataclass(frozen=True)
class Answer:
    question: str
    answer: str
    confidence: float  # P(the answer is correct); NaN when the question was asked for samples
    estimator: str
    abstained: bool = False  # confidence below the abstention threshold
    prompt_tokens: int = 0
    completion_tokens: int = 0
    truncated: bool = False  # stopped by the token limit rather than by the model
    tokens: tuple[str, ...] = ()  # the answer's tokens, and the log-probability of each
    token_logprobs: tuple[float, ...] = ()
    samples: tuple[Sampled, ...] = ()  # with a Sampling: the sampled answers (no confidence of their own)


class Asker:
    """Loads a model and an estimator once; :meth:`ask` answers questions with confidence.

    ``Asker(run_dir)`` uses a run made by ``selfknow tune``; :meth:`from_model` serves a bare model.
    Calls are serialised by a lock, so one asker can back a threaded server.
    """

    def __init__(
        self,
        run_dir: str | Path,
        estimator: str | None = None,
        *,
        risk: float | None = None,
        delta: float = 0.1,
        progress: bool = False,
    ):
        run = Run(run_dir, progress=progress)
        if run.config.answers_from is not None:
            raise SelfknowError(
                f"{run_dir} scores the answers of {run.config.answers_from}; asking answers with the run's own "
                f"model ({run.config.model}), so it needs a run that scores that model's answers"
            )
        metrics = run.dir / "evaluation" / "metrics.json"
        if estimator is None:
            if not metrics.exists():
                raise SelfknowError(f"{run_dir}: no evaluation yet to pick the best estimator; run `selfknow tune`")
            estimator = read_json(metrics, "evaluation")["best"]
        base_name, _, scaling = estimator.partition("+")
        fitted, scalers = run.load_estimator(base_name)
        if scaling and scaling not in scalers:
            raise SelfknowError(f"unknown scaling '{scaling}' for '{base_name}'; have {', '.join(scalers)}")
        config = run.config
        run.context.cache_dir = None  # live questions are never asked twice: caching their features only fills the disk
        pool = fewshot_pool(config.dataset, format=config.format, seed=config.seed) if config.kshot else []
        self._setup(
            run.context,
            fitted,
            estimator,
            scaler_from_dict(scalers[scaling]) if scaling else None,
            PromptStyle(chat=config.chat, kshot=config.kshot, seed=config.seed),
            pool,
            config.max_new_tokens,
            run.abstention(estimator, risk, delta) if risk is not None else None,
        )
        self.model_name = config.model

    @classmethod
    def from_model(
        cls,
        model: str,
        *,
        chat: bool | None = None,
        max_new_tokens: int = 32,
        device: str = "auto",
        trust_remote_code: bool = False,
    ) -> Asker:
        """An asker on a model with no run: zero-shot query confidence, uncalibrated, no abstention."""
        asker = cls.__new__(cls)
        context = Context(model, device=device, progress=False, trust_remote_code=trust_remote_code)
        estimator = ESTIMATORS[BARE_MODEL_ESTIMATOR]()
        asker._setup(context, estimator, estimator.name, None, PromptStyle(chat=chat), [], max_new_tokens, None)
        asker.model_name = model
        return asker

    def _setup(
        self,
        context: Context,
        estimator: Estimator,
        name: str,
        scaler: Scaler | None,
        style: PromptStyle,
        pool: list[Record],
        max_new_tokens: int,
        threshold: AbstentionThreshold | None,
    ) -> None:
        self.context, self.estimator, self.name, self.scaler = context, estimator, name, scaler
        self.prompter = Prompter(context.tokenizer, style, pool)
        self.max_new_tokens, self.threshold = max_new_tokens, threshold
        self._lock = threading.Lock()

    @property
    def tokenizer(self):
        return self.context.tokenizer

    def ask(
        self, questions: str | Sequence[str], max_new_tokens: int | None = None, sampling: Sampling | None = None
    ) -> list[Answer]:
        """Each question's greedy answer and its confidence; with ``sampling``, also that many sampled answers.
        A question's samples depend on its text and the seed only, not on what it was batched with."""
        questions = [questions] if isinstance(questions, str) else list(questions)
        if not questions or any(not isinstance(q, str) or not q.strip() for q in questions):
            raise SelfknowError("ask needs a non-empty question")
        limit = max_new_tokens or self.max_new_tokens
        unique = {q.strip(): f"ask/{hashlib.sha256(q.strip().encode()).hexdigest()[:16]}" for q in questions}
        records = [Record(id=i, dataset="ask", split="test", question=q, answer=UNGRADED) for q, i in unique.items()]
        config = AnswerConfig(max_new_tokens=limit, token_ids=True)
        if sampling is not None:
            config = AnswerConfig(
                max_new_tokens=limit, token_ids=True, samples=sampling.n, sample_temperature=sampling.temperature,
                sample_top_p=sampling.top_p, seed=sampling.seed,
            )  # fmt: skip
        with self._lock:
            context = self.context
            with adapters_off(context.lm) as base:
                answered, _ = answer_records(
                    base,
                    context.tokenizer,
                    records,
                    prompter=self.prompter,
                    config=config,
                    progress=False,
                )
            # sampled answers carry no confidence, so a sampling request skips the estimator's pass (NaN)
            confidence = self.estimator.score(answered, context) if sampling is None else np.full(len(answered), np.nan)
        if self.scaler is not None and sampling is None:
            confidence = self.scaler.apply(confidence)
        abstain = np.zeros(len(answered), bool)
        if self.threshold is not None and sampling is None:
            abstain = ~self.threshold.answers(confidence)
        replies = {}
        for record, p, no in zip(answered, confidence, abstain, strict=True):
            used = len(record.scores.get("token_logprobs", []))
            prompt = len(self.tokenizer(record.prompt or "", add_special_tokens=False).input_ids)
            samples = tuple(
                Sampled(
                    s["text"], self._tokens(s["token_ids"]), tuple(s["token_logprobs"]), len(s["token_ids"]) >= limit
                )
                for s in record.scores.get("samples", [])
            )
            replies[record.question] = Answer(
                record.question, record.output or "", float(p), self.name, bool(no), prompt, used, used >= limit,
                self._tokens(record.scores.get("token_ids", [])), tuple(record.scores.get("token_logprobs", [])),
                samples,
            )  # fmt: skip
        return [replies[q.strip()] for q in questions]

    def _tokens(self, ids: Sequence[int]) -> tuple[str, ...]:
        return tuple(self.tokenizer.decode([i]) for i in ids)

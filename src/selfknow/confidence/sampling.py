"""Sampling-based estimators: confidence from how the model answers when asked again, read from the saved
samples alone (``selfknow answer --samples K`` stores them), so they are computed and compared without the
model.

The samples of a record are clustered with the main answer first (:func:`selfknow.equivalence.cluster_all`,
rule ``equivalence``, default ``match``); a sample is in the main answer's cluster exactly when it is
equivalent to the main answer. With ``equivalence=judge`` an LLM decides (the reference's two-answers
prompt): the model ``judge`` (a model spec; default the run's own model) or the model of that name at
``judge_url`` (an OpenAI-compatible endpoint). With ``equivalence=nli`` the NLI model ``nli_model`` decides
by bidirectional entailment (:mod:`selfknow.nli`). Verdicts of either are kept in the run's cache.

- ``sampling-counting``: the share of the k samples equivalent to the main answer: the reference's
  "Sampling (counting)", which is self-consistency with the main answer.
- ``sampling-likelihood``: the reference's "Sampling (likelihood)" as it computes it (spec §10):
  ``Σ_equivalent lik_j / Σ_j lik_j`` with ``lik_j = exp(mean_t max_v log p̃_t(v))``, p̃_t the warped
  (temperature, top-p) distribution sample j was drawn from at step t. The quirk: ``lik_j`` is the
  probability of each step's most likely token, not of the token drawn, so it says how peaked the nucleus
  was along the sample's path rather than how likely the sample is. Kept as published, for comparison.
- ``sampling-likelihood-corrected``: the same with ``lik_j`` the sample's own length-normalized probability
  under the model, ``exp(mean_t log p_t(token drawn))``.
- ``semantic-entropy``: the entropy of the samples' clusters, ``H = -Σ_c (n_c/k) log(n_c/k)`` (discrete
  semantic entropy, Farquhar et al. 2024), given as ``1 - H / log k``: 1 when every sample says one thing,
  0 when no two agree. It is uncertainty about the question, whatever the main answer says.
- ``semantic-entropy-weighted``: the clusters weighted by their samples' length-normalized probabilities
  (``p_c ∝ Σ_{j∈c} exp(mean_t log p_t)``, Farquhar et al.'s default), as ``1 - H / log k``.

An empty sample has likelihood 0. Where every sample of a record has likelihood 0 (all empty), the
likelihood estimators fall back to counting and the weighted entropy to the discrete one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np

from selfknow.confidence.base import Context, Estimator, check_probabilities, register
from selfknow.confidence.baselines import mean_likelihood
from selfknow.data.records import Record
from selfknow.equivalence import Clusters, Pair, PairJudge, check_rule, cluster_all, kept_verdicts
from selfknow.errors import DataError, SelfknowError
from selfknow.judge import Judge, ask_judge, equivalence_messages, says_yes
from selfknow.models import adapters_off, load_model
from selfknow.nli import NLIJudge

__all__ = [
    "SamplingCounting",
    "SamplingLikelihood",
    "SamplingLikelihoodCorrected",
    "SemanticEntropy",
    "SemanticEntropyWeighted",
    "samples_of",
]


def samples_of(record: Record, estimator: str) -> list[dict[str, Any]]:
    """The record's samples; a record answered without them is an error that says how to get them."""
    if record.output is None:
        raise DataError(f"'{estimator}' needs answered records; {record.id!r} has no output (run `selfknow answer`)")
    samples = record.scores.get("samples")
    if not samples:
        raise DataError(
            f"'{estimator}' needs sampled answers; record {record.id!r} has none "
            "(answer with `selfknow answer --samples K`)"
        )
    return samples


def entropy_confidence(weights: np.ndarray, k: int) -> float:
    """``1 - H / log k`` of the cluster distribution given by (unnormalized) weights."""
    p = weights[weights > 0] / weights.sum()
    return float(np.clip(1.0 + (p * np.log(p)).sum() / np.log(k), 0.0, 1.0))


class SamplingEstimator(Estimator):
    """Zero-shot estimators over a record's clusters; subclasses turn one record's clusters into a confidence."""

    def __init__(
        self,
        equivalence: str = "match",
        judge: str | None = None,
        judge_url: str | None = None,
        nli_model: str | None = None,
    ):
        check_rule(equivalence)
        if (judge or judge_url) and equivalence != "judge":
            raise SelfknowError(f"'{self.name}': judge and judge_url are settings of equivalence=judge")
        if judge_url and not judge:
            raise SelfknowError(f"'{self.name}': judge_url needs judge, the name of the model served there")
        if bool(nli_model) != (equivalence == "nli"):
            raise SelfknowError(
                f"'{self.name}': equivalence=nli goes with nli_model, an NLI classifier's folder or hub id (e.g. "
                "microsoft/deberta-large-mnli; none ships on PyPI)"
            )
        settings = {"judge": judge, "judge_url": judge_url, "nli_model": nli_model}
        super().__init__(equivalence=equivalence, **{key: value for key, value in settings.items() if value})

    def score(self, records: Sequence[Record], context: Context) -> np.ndarray:
        drawn = [samples_of(record, self.name) for record in records]
        items = [(r, [r.output, *(s["text"] for s in samples)]) for r, samples in zip(records, drawn, strict=True)]
        clusters = cluster_all(items, self.config["equivalence"], self._asked(context))
        scores = [self.confidence(samples, c) for samples, c in zip(drawn, clusters, strict=True)]
        return check_probabilities(np.array(scores), self.name)

    def _asked(self, context: Context) -> PairJudge | None:
        """The model a rule asks: the NLI model, or the two-answers judge (the named model, local or at
        judge_url, or else the context's own), its verdicts kept in the context's cache folder if it has one."""
        rule = self.config["equivalence"]
        if rule == "nli":
            ask: PairJudge = NLIJudge(self.config["nli_model"], dtype=context.dtype, device=context.device)
            source = f"nli:{self.config['nli_model']}"
        elif rule == "judge":
            judge = Judge(self.config.get("judge") or context.model_spec, url=self.config.get("judge_url"))
            named = cache(lambda: load_model(judge.model, dtype=context.dtype, device=context.device))

            @contextmanager
            def local_judge() -> Iterator[tuple[Any, Any] | None]:
                """None for an endpoint; another local model, loaded once for every step; or the run's own
                model as the base model, even after a tuned estimator attached its adapter."""
                if judge.url or self.config.get("judge"):
                    yield None if judge.url else named()
                    return
                with adapters_off(context.lm) as base:
                    yield base, context.tokenizer

            def ask(pairs: Sequence[Pair]) -> list[bool]:
                replies: dict[int, str] = {}
                queries = [(record, equivalence_messages(record, a, b)) for record, a, b in pairs]
                with local_judge() as loaded:
                    ask_judge(queries, judge, replies.update, loaded=loaded, progress=context.progress)
                return [says_yes(replies[i]) for i in range(len(pairs))]

            source = f"{judge.name}|{judge.url}"
        else:
            return None
        if context.cache_dir is None:
            return ask
        key = hashlib.sha256(source.encode()).hexdigest()[:12]
        return kept_verdicts(ask, context.cache_dir / "equivalence" / f"{rule}-{key}.jsonl")

    def confidence(self, samples: list[dict[str, Any]], clusters: Clusters) -> float:
        raise NotImplementedError

    def work_per_question(self, records: Sequence[Record]) -> str:
        drawn = [r.scores.get("samples") or [] for r in records]
        k = np.mean([len(samples) for samples in drawn])
        tokens = np.mean([sum(len(s.get("token_logprobs") or []) for s in samples) for samples in drawn])
        work = f"{k:g} samples, {tokens:.0f} sampled tokens (drawn when answering, from the answer's prefill)"
        if self.config["equivalence"] != "match":
            rule = self.config["equivalence"]
            work += f", and up to {k * (k + 1) / 2:g} {rule} calls (pairs the clustering needs, each asked once)"
        return work

    @staticmethod
    def agreeing(clusters: Clusters) -> np.ndarray:
        """1 for each sample in the main answer's cluster (the first), else 0."""
        return np.array([label == 0 for label in clusters.labels[1:]], dtype=float)


@register("sampling-counting")
class SamplingCounting(SamplingEstimator):
    def confidence(self, samples, clusters):
        return float(self.agreeing(clusters).mean())


class _LikelihoodShare(SamplingEstimator):
    field = ""

    def confidence(self, samples, clusters):
        if any(self.field not in s for s in samples):
            raise DataError(
                f"'{self.name}' needs each sample's {self.field.replace('_', ' ')}, which these samples lack "
                + (
                    "(only the local engine records the nucleus's log-probs)"
                    if self.field == "warped_max_logprobs"
                    else "(the endpoint returned no log-probs)"
                )
            )
        weights = np.array([mean_likelihood(s[self.field]) for s in samples])
        agreeing = self.agreeing(clusters)
        return float((weights * agreeing).sum() / weights.sum()) if weights.sum() > 0 else float(agreeing.mean())


@register("sampling-likelihood")
class SamplingLikelihood(_LikelihoodShare):
    field = "warped_max_logprobs"


@register("sampling-likelihood-corrected")
class SamplingLikelihoodCorrected(_LikelihoodShare):
    field = "token_logprobs"


class _Entropy(SamplingEstimator):
    weighted = False

    def confidence(self, samples, clusters):
        if len(samples) < 2:
            raise DataError(f"'{self.name}' needs at least 2 samples a record, got {len(samples)}")
        labels = np.array(clusters.labels[1:])
        weights = np.ones(len(samples))
        if self.weighted:
            if any("token_logprobs" not in s for s in samples):
                raise DataError(f"'{self.name}' needs each sample's token log-probs, which these samples lack")
            likelihoods = np.array([mean_likelihood(s["token_logprobs"]) for s in samples])
            weights = likelihoods if likelihoods.sum() > 0 else weights
        per_cluster = np.bincount(labels, weights=weights)
        return entropy_confidence(per_cluster, len(samples))


@register("semantic-entropy")
class SemanticEntropy(_Entropy):
    pass


@register("semantic-entropy-weighted")
class SemanticEntropyWeighted(_Entropy):
    weighted = True

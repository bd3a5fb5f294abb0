"""Self-RAG inference-side scores, read from next-token probabilities (Asai et al. 2023, §3.3 and App. A.3).

A candidate answer is generated once per retrieved passage; each candidate is scored by how relevant,
supported and useful the model itself judged it, through the probabilities it gave its reflection
tokens, plus (optionally) its geometric-mean token probability. Probabilities come as vectors over the
vocabulary, one per generated step (row ``t`` is the distribution token ``t`` was drawn from), as torch
tensors or numpy arrays. A group whose probabilities sum to zero scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from selfknow.rag.reflection import (
    IRRELEVANT,
    ISSUP_TOKENS,
    ISUSE_TOKENS,
    NO_RETRIEVAL,
    REFLECTION_TOKENS,
    RELEVANT,
    RETRIEVAL,
    reflection_token_ids,
)

UTILITY_WEIGHTS = (-1.0, -0.5, 0.0, 0.5, 1.0)
EOS_TEXTS = ("</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<eos>", "<end_of_turn>")


def _ratio(numerator: float, total: float) -> float:
    return float(numerator / total) if total > 0 else 0.0


def retrieve_probability(p_ret: float, p_noret: float) -> float:
    """p([Retrieval]) / (p([Retrieval]) + p([No Retrieval])), in probability space (paper §3.3).

    The reference short-form script divides log-probabilities instead, which is not this quantity.
    """
    return _ratio(p_ret, p_ret + p_noret)


def should_retrieve(p_ret: float, p_noret: float, delta: float = 0.2) -> bool:
    """Retrieve iff :func:`retrieve_probability` > ``delta`` (0.2 by default; larger means less retrieval)."""
    return retrieve_probability(p_ret, p_noret) > delta


def relevance_score(p_relevant: float, p_irrelevant: float) -> float:
    """s_rel = p([Relevant]) / (p([Relevant]) + p([Irrelevant]))."""
    return _ratio(p_relevant, p_relevant + p_irrelevant)


def support_score(p_full: float, p_partial: float, p_none: float) -> float:
    """s_sup = p(Full)/S + 0.5 p(Partial)/S with S = p(Full) + p(Partial) + p(No support)."""
    return _ratio(p_full + 0.5 * p_partial, p_full + p_partial + p_none)


def utility_score(p_utility: Sequence[float]) -> float:
    """s_use = sum_i w_i p([Utility:i]) / S over i = 1..5, w = (-1, -0.5, 0, 0.5, 1), S = sum_i p([Utility:i])."""
    if len(p_utility) != len(UTILITY_WEIGHTS):
        raise ValueError(f"utility_score takes the 5 probabilities of [Utility:1..5], got {len(p_utility)}")
    return _ratio(sum(w * p for w, p in zip(UTILITY_WEIGHTS, p_utility, strict=True)), sum(p_utility))


@dataclass(frozen=True)
class ReflectionIds:
    """The vocabulary ids the scores read."""

    retrieval: int
    no_retrieval: int
    relevant: int
    irrelevant: int
    support: tuple[int, int, int]  # full, partial, none
    utility: tuple[int, int, int, int, int]  # [Utility:1] .. [Utility:5]

    @classmethod
    def from_tokenizer(cls, tokenizer) -> ReflectionIds:
        ids = dict(zip(REFLECTION_TOKENS, reflection_token_ids(tokenizer), strict=True))
        return cls(
            retrieval=ids[RETRIEVAL],
            no_retrieval=ids[NO_RETRIEVAL],
            relevant=ids[RELEVANT],
            irrelevant=ids[IRRELEVANT],
            support=tuple(ids[t] for t in ISSUP_TOKENS),
            utility=tuple(ids[t] for t in ISUSE_TOKENS),
        )


@dataclass(frozen=True)
class Critique:
    """One candidate's scores: mean log-prob of its tokens, the three reflection scores, and the IsSup token
    it generated (None when it generated none)."""

    seq_logprob_mean: float
    relevance: float
    support: float
    utility: float
    issup: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _first_step(tokens: Sequence[int], group: Sequence[int]) -> int | None:
    return next((step for step, token in enumerate(tokens) if token in group), None)


def critique_generation(
    token_ids: Sequence[int], logprobs: Sequence[float], reflection, columns: Sequence[int], ids: ReflectionIds
) -> Critique:
    """Score one generated candidate from its tokens, their log-probabilities, and ``reflection[t, j]`` =
    p(``columns[j]``) at step t (only the reflection tokens' columns of each step's distribution are needed).

    - s_rel is read at step 0 (right after the passage);
    - s_sup at the first step whose generated token is an IsSup token, 0 when none was generated;
    - s_use at the first step whose generated token is a utility token, 0 when none was generated;
    - the sequence score is mean_t log p(token_t), the length-normalised cumulative log-prob (0 when empty).
    """
    tokens = [int(t) for t in token_ids]
    if not tokens:
        return Critique(0.0, 0.0, 0.0, 0.0)
    probs = (
        reflection.detach().double().cpu().numpy()
        if isinstance(reflection, torch.Tensor)
        else np.asarray(reflection, dtype=np.float64)
    )
    if len(logprobs) != len(tokens) or len(probs) != len(tokens):
        raise ValueError(
            f"{len(tokens)} generated tokens but {len(logprobs)} log-probs and {len(probs)} probability rows"
        )
    where = {int(c): j for j, c in enumerate(columns)}

    def read(step: int, group: Sequence[int]) -> list[float]:
        return [float(probs[step, where[i]]) for i in group]

    s_rel = relevance_score(*read(0, [ids.relevant, ids.irrelevant]))
    sup_step = _first_step(tokens, ids.support)
    s_sup = 0.0 if sup_step is None else support_score(*read(sup_step, ids.support))
    use_step = _first_step(tokens, ids.utility)
    s_use = 0.0 if use_step is None else utility_score(read(use_step, ids.utility))
    issup = None if sup_step is None else ISSUP_TOKENS[ids.support.index(tokens[sup_step])]
    return Critique(float(np.mean(logprobs)), s_rel, s_sup, s_use, issup)


def critique_candidate(candidate, columns: Sequence[int], ids: ReflectionIds) -> Critique:
    """:func:`critique_generation` of a :class:`selfknow.rag.generate.Candidate`."""
    return critique_generation(candidate.tokens, candidate.logprobs, candidate.reflection, columns, ids)


def final_score(
    seq_logprob_mean: float,
    s_rel: float,
    s_sup: float,
    s_use: float,
    w_rel: float = 1.0,
    w_sup: float = 1.0,
    w_use: float = 0.5,
    use_seqscore: bool = True,
) -> float:
    """exp(seq_logprob_mean) + w_rel s_rel + w_sup s_sup + w_use s_use; the first term only with ``use_seqscore``.

    exp of the mean log-prob is the candidate's geometric-mean token probability. Default weights are the
    paper's (§4.3); the reference short-form script's command line uses w_use = 1.0.
    """
    critique = w_rel * s_rel + w_sup * s_sup + w_use * s_use
    return math.exp(seq_logprob_mean) + critique if use_seqscore else critique


def strip_reflection(text: str) -> str:
    """The answer text alone: reflection tokens, end-of-sequence texts and newlines removed, surrounding
    whitespace trimmed, and a leading '#' or ':' (left over from the prompt format) dropped."""
    for token in (*REFLECTION_TOKENS, *EOS_TEXTS):
        text = text.replace(token, "")
    return text.replace("\n", "").strip().lstrip("#:").strip()


def aggregate_closed_set(candidates: Sequence[tuple[str, float]]) -> str:
    """The closed-set answer (paper App. B.2): scores summed per distinct stripped answer, then the argmax.

    Ties go to the answer seen first.
    """
    if not candidates:
        raise ValueError("aggregate_closed_set needs at least one candidate")
    totals: dict[str, float] = {}
    for text, score in candidates:
        answer = strip_reflection(text)
        totals[answer] = totals.get(answer, 0.0) + score
    return max(totals, key=totals.__getitem__)

"""Sampling estimators against values computed by hand on records with known clusters, and the equivalence
rule they cluster by."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selfknow.confidence.base import ESTIMATORS, Context, Estimator
from selfknow.data.records import Record
from selfknow.equivalence import cluster, same_by_match
from selfknow.errors import DataError, SelfknowError

CONTEXT = Context(model=object(), tokenizer=object(), progress=False)  # sampling estimators never touch it


def record(output: str, samples: list[tuple[str, list[float], list[float]]], **fields) -> Record:
    """A record answered ``output`` with samples given as (text, token log-probs, warped max log-probs)."""
    base = {"id": "q", "dataset": "d", "split": "test", "question": "What is the capital of France?"}
    base["answer"] = "Paris"
    return Record(
        **{**base, **fields},
        output=output,
        scores={"samples": [{"text": t, "token_logprobs": lp, "warped_max_logprobs": w} for t, lp, w in samples]},
    )


# Samples' clusters, with the main answer "Paris" first: {Paris, It is Paris.} {Lyon, lyon} {Marseille}.
PARIS = record(
    "Paris",
    [
        ("Paris", [math.log(0.5)], [math.log(0.9)]),
        ("It is Paris.", [math.log(0.2), math.log(0.8)], [math.log(0.5), math.log(0.5)]),
        ("Lyon", [math.log(0.25)], [math.log(0.6)]),
        ("lyon", [math.log(0.1)], [math.log(0.3)]),
        ("Marseille", [], []),  # an empty token list: likelihood 0
    ],
)


def score(name: str, records: list[Record]) -> np.ndarray:
    return ESTIMATORS[name]().score(records, CONTEXT)


def test_clusters_follow_the_graders_rule_with_the_main_answer_first():
    clusters = cluster(PARIS, [PARIS.output, *(s["text"] for s in PARIS.scores["samples"])])
    assert clusters.rule == "match"
    assert clusters.labels == (0, 0, 0, 1, 1, 2)
    assert clusters.sizes == [3, 2, 1]


def test_counting_and_both_likelihoods_equal_the_hand_computed_shares():
    assert score("sampling-counting", [PARIS])[0] == pytest.approx(2 / 5)
    paper = [0.9, math.sqrt(0.5 * 0.5), 0.6, 0.3, 0.0]  # exp(mean warped max log-prob) per sample
    assert score("sampling-likelihood", [PARIS])[0] == pytest.approx(sum(paper[:2]) / sum(paper))
    own = [0.5, math.sqrt(0.2 * 0.8), 0.25, 0.1, 0.0]  # exp(mean log-prob of the tokens drawn)
    assert score("sampling-likelihood-corrected", [PARIS])[0] == pytest.approx(sum(own[:2]) / sum(own))


def test_semantic_entropy_equals_the_hand_computed_entropy():
    discrete = -(0.4 * math.log(0.4) * 2 + 0.2 * math.log(0.2))
    assert score("semantic-entropy", [PARIS])[0] == pytest.approx(1 - discrete / math.log(5))
    own = [0.5, math.sqrt(0.2 * 0.8), 0.25, 0.1, 0.0]
    p = np.array([own[0] + own[1], own[2] + own[3]]) / sum(own)  # Marseille's cluster weighs 0
    weighted = -(p * np.log(p)).sum()
    assert score("semantic-entropy-weighted", [PARIS])[0] == pytest.approx(1 - weighted / math.log(5))


def test_agreement_and_disagreement_reach_the_ends_of_the_scale():
    sure = record("Paris", [("Paris", [-0.1], [-0.1])] * 4)
    lost = record("Paris", [(city, [-1.0], [-1.0]) for city in ("Rome", "Oslo", "Bern", "Lima")])
    for name in ("sampling-counting", "sampling-likelihood", "sampling-likelihood-corrected"):
        assert score(name, [sure, lost]).tolist() == pytest.approx([1.0, 0.0])
    for name in ("semantic-entropy", "semantic-entropy-weighted"):
        assert score(name, [sure, lost]).tolist() == pytest.approx([1.0, 0.0])


def test_all_empty_samples_fall_back_to_counting():
    empty = record("", [("", [], [])] * 3)
    assert score("sampling-likelihood", [empty])[0] == 1.0  # three empty samples say what the empty answer says
    assert score("semantic-entropy-weighted", [empty])[0] == 1.0


def test_multiple_choice_samples_cluster_by_letter():
    choice = record(
        "b",
        [("b", [-0.2], [-0.2]), ("(b)", [-0.2], [-0.2]), ("a", [-2.0], [-2.0])],
        answer="Paris",
        format="choice",
        choices=["Lyon", "Paris", "Rome"],
        answer_index=1,
    )
    assert score("sampling-counting", [choice])[0] == pytest.approx(2 / 3)


def test_numbers_match_their_words_and_a_wrong_number_does_not():
    sums = record("4", [], question="What is 2 + 2?", answer="4")
    assert same_by_match(sums, "4", "four")
    assert same_by_match(sums, "The sum is 4.", "4")
    assert not same_by_match(sums, "4", "14")


def test_records_without_samples_say_how_to_get_them():
    plain = Record(id="q", dataset="d", split="test", question="Q?", answer="A", output="A")
    with pytest.raises(DataError, match="--samples"):
        score("sampling-counting", [plain])
    with pytest.raises(DataError, match="at least 2 samples"):
        score("semantic-entropy", [record("Paris", [("Paris", [-0.1], [-0.1])])])
    with pytest.raises(SelfknowError, match="unknown equivalence rule"):
        ESTIMATORS["sampling-counting"](equivalence="telepathy").score([PARIS], CONTEXT)


def test_the_equivalence_rule_is_saved_with_the_estimator(tmp_path):
    ESTIMATORS["semantic-entropy"](equivalence="match").save(tmp_path / "se")
    loaded = Estimator.load(tmp_path / "se")
    assert loaded.config == {"equivalence": "match"}
    assert loaded.score([PARIS], CONTEXT) == pytest.approx(score("semantic-entropy", [PARIS]))

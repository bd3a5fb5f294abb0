"""The equivalence rules that ask a model: the judge (the reference's two-answers prompt, through an endpoint or a
local model) and NLI (bidirectional entailment), asked in batches across records, never the same pair twice,
with verdicts kept so scoring again asks nothing."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from selfknow.confidence.base import ESTIMATORS, Context
from selfknow.confidence.baselines import MINILM
from selfknow.equivalence import cluster_all, kept_verdicts
from selfknow.errors import ModelError, SelfknowError
from selfknow.models import load_model
from selfknow.nli import NLIJudge
from tests.conftest import chat_endpoint
from tests.test_sampling import PARIS, record

CITIES = ("paris", "lyon", "marseille")


def city(answer: str) -> str | None:
    return next((c for c in CITIES if c in answer.lower()), None)


def scripted(asked: list[list[tuple[str, str, str]]]):
    """A judge that calls two answers equivalent when they name the same city, noting every batch."""

    def judge(pairs):
        asked.append([(r.id, a, b) for r, a, b in pairs])
        return [city(a) is not None and city(a) == city(b) for _, a, b in pairs]

    return judge


def answers(r):
    return [r.output, *(s["text"] for s in r.scores["samples"])]


def test_the_judge_clusters_in_batches_and_never_asks_a_pair_twice():
    other = record("Lyon", [("Lyon", [-0.1], [-0.1]), ("The city of Lyon", [-0.2], [-0.2])], id="q2")
    asked: list[list[tuple[str, str, str]]] = []
    clusters = cluster_all([(PARIS, answers(PARIS)), (other, answers(other))], "judge", scripted(asked))
    assert [c.rule for c in clusters] == ["judge", "judge"]
    assert clusters[0].labels == (0, 0, 0, 1, 1, 2) and clusters[1].labels == (0, 0, 0)
    pairs = [pair for batch in asked for pair in batch]
    assert len(pairs) == len(set(pairs))
    # Texts that normalize alike ("Paris"/"Paris", "Lyon"/"lyon") are never asked about.
    assert ("q", "Paris", "Paris") not in pairs and ("q", "Lyon", "lyon") not in pairs
    # One batch per step, the two records' first steps in one batch; the last answer asks both clusters.
    assert asked[0] == [("q", "Paris", "It is Paris."), ("q2", "Lyon", "The city of Lyon")]
    assert asked[-1] == [("q", "Paris", "Marseille"), ("q", "Lyon", "Marseille")]
    assert len(asked) == 4


def test_kept_verdicts_are_not_asked_again_and_survive_a_line_cut_short(tmp_path):
    path = tmp_path / "verdicts.jsonl"
    asked: list = []
    cluster_all([(PARIS, answers(PARIS))], "judge", kept_verdicts(scripted(asked), path))
    first = sum(len(batch) for batch in asked)
    asked.clear()
    again = cluster_all([(PARIS, answers(PARIS))], "judge", kept_verdicts(scripted(asked), path))
    assert asked == [] and again[0].labels == (0, 0, 0, 1, 1, 2)
    lines = path.read_text().splitlines()
    assert len(lines) == first
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])  # a kill mid-write
    cluster_all([(PARIS, answers(PARIS))], "judge", kept_verdicts(scripted(asked), path))
    assert sum(len(batch) for batch in asked) == 1  # only the cut verdict is asked again
    assert all(json.loads(line) for line in path.read_text().splitlines()[-1:])


def two_answers_verdict(prompt: str) -> str:
    a, b = re.findall(r"Student [AB] submitted the answer: (.*)", prompt)
    return "Yes" if city(a) and city(a) == city(b) else "No"


def test_semantic_entropy_with_an_endpoint_judge_equals_the_hand_computed_value(tmp_path):
    context = Context(model=object(), tokenizer=object(), cache_dir=tmp_path / "cache", progress=False)
    with chat_endpoint(two_answers_verdict) as (url, received):
        options = {"equivalence": "judge", "judge": "gpt-x", "judge_url": url}
        confidence = ESTIMATORS["semantic-entropy"](**options).score([PARIS], context)[0]
        asked = len(received)
        again = ESTIMATORS["sampling-counting"](**options).score([PARIS], context)[0]
    # Samples' clusters {Paris, It is Paris.} {Lyon, lyon} {Marseille}: shares 2/5, 2/5, 1/5.
    entropy = -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2))
    assert confidence == pytest.approx(1 - entropy / math.log(5))
    assert again == pytest.approx(2 / 5)
    assert asked == 5 and len(received) == 5  # the second estimator read the kept verdicts
    assert "Did the two students provide equivalent answers?" in received[0]
    assert list((tmp_path / "cache" / "equivalence").glob("judge-*.jsonl"))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_runs_own_model_can_judge_locally(tiny_qwen_dir, tmp_path, dtype):
    model, tokenizer = load_model(str(tiny_qwen_dir), dtype=dtype)
    context = Context(str(tiny_qwen_dir), model=model, tokenizer=tokenizer, cache_dir=tmp_path, progress=False)
    scores = ESTIMATORS["semantic-entropy-weighted"](equivalence="judge").score([PARIS], context)
    assert 0.0 <= scores[0] <= 1.0  # a random model's verdicts: a probability, from one loaded model
    (kept,) = (tmp_path / "equivalence").glob("judge-*.jsonl")
    asked = [json.loads(line) for line in kept.read_text().splitlines()]
    assert ("Paris", "It is Paris.") in [(row["a"], row["b"]) for row in asked]  # the model was asked


def test_judge_settings_belong_to_the_judge_rule():
    with pytest.raises(SelfknowError, match="settings of equivalence=judge"):
        ESTIMATORS["semantic-entropy"](judge="gpt-x")
    with pytest.raises(SelfknowError, match="judge_url needs judge"):
        ESTIMATORS["semantic-entropy"](equivalence="judge", judge_url="http://localhost:1/v1")
    with pytest.raises(SelfknowError, match="use one of judge, match, nli"):
        ESTIMATORS["semantic-entropy"](equivalence="telepathy")


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def test_nli_needs_entailment_both_ways(monkeypatch):
    """A scripted NLI model where the premise entails what it has every word of: "Q It is Paris." entails
    "Q Paris" but not back, so the two are different answers, though the grader's rule puts them together."""
    monkeypatch.setattr(
        NLIJudge, "entails", lambda self, ps, hs: [words(h) <= words(p) for p, h in zip(ps, hs, strict=True)]
    )
    clusters = cluster_all([(PARIS, answers(PARIS))], "nli", NLIJudge("scripted"))
    assert clusters[0].rule == "nli"
    assert clusters[0].labels == (0, 0, 1, 2, 2, 3)


def tiny_nli(folder, labels: dict[int, str], favourite: int):
    """A tiny random BERT classifier on MiniLM's real tokenizer, its bias set so one class always wins."""
    tokenizer = AutoTokenizer.from_pretrained(MINILM.path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, id2label=labels, label2id={v: k for k, v in labels.items()},
    )  # fmt: skip
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.nn.functional.one_hot(torch.tensor(favourite), len(labels)) * 5.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


MNLI = {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_real_nli_classifier_clusters_the_samples(tmp_path, dtype):
    context = Context(model=object(), tokenizer=object(), dtype=dtype, cache_dir=tmp_path / "cache", progress=False)
    agrees = tiny_nli(tmp_path / "entails", MNLI, favourite=2)
    assert ESTIMATORS["semantic-entropy"](equivalence="nli", nli_model=agrees).score([PARIS], context)[0] == 1.0
    assert ESTIMATORS["sampling-counting"](equivalence="nli", nli_model=agrees).score([PARIS], context)[0] == 1.0
    differs = tiny_nli(tmp_path / "contradicts", MNLI, favourite=0)
    # "Paris" is its own sample: equal texts are one answer without asking, the rest are all different.
    assert ESTIMATORS["sampling-counting"](equivalence="nli", nli_model=differs).score([PARIS], context)[0] == 0.2
    assert len(list((tmp_path / "cache" / "equivalence").glob("nli-*.jsonl"))) == 2


def test_an_nli_model_without_an_entailment_class_is_one_clear_error(tmp_path):
    sentiment = tiny_nli(tmp_path / "sentiment", {0: "NEGATIVE", 1: "POSITIVE"}, favourite=1)
    with pytest.raises(ModelError, match="name no single entailment class"):
        NLIJudge(sentiment)([(PARIS, "Paris", "Lyon")])
    with pytest.raises(SelfknowError, match="equivalence=nli goes with nli_model"):
        ESTIMATORS["semantic-entropy"](equivalence="nli")


def test_a_named_local_judge_is_loaded_once_for_every_step(tiny_llama_dir, monkeypatch):
    import selfknow.confidence.sampling as sampling

    loads = []
    loaded = load_model(str(tiny_llama_dir))
    monkeypatch.setattr(sampling, "load_model", lambda spec, **kwargs: loads.append(spec) or loaded)
    context = Context(model=object(), tokenizer=object(), progress=False)
    other = record("Lyon", [("Lyon", [-0.1], [-0.1]), ("Marseille", [-0.2], [-0.2]), ("Nice", [-0.3], [-0.3])])
    estimator = ESTIMATORS["semantic-entropy"](equivalence="judge", judge=str(tiny_llama_dir))
    assert 0.0 <= estimator.score([PARIS, other], context)[0] <= 1.0
    assert loads == [str(tiny_llama_dir)]  # several steps of clustering, one load

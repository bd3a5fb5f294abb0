"""Instruction backtranslation on tiny models: loss masks, score parsing and expected scores, the engine's seeded
sampling and cue reading, resuming self-augmentation after a kill, the labelled curation set, and a full CLI run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from selfknow.backtranslate.augment import Candidate, augment, write_candidates
from selfknow.backtranslate.curate import Rating, curated_ids, expected_score, score_cue, write_ratings
from selfknow.backtranslate.data import Pair, Segment
from selfknow.backtranslate.evaluation import first_question, first_sentence, labelled_pairs
from selfknow.backtranslate.prompts import (
    RUBRIC,
    SCALE,
    SCORE_FIRST_ASK,
    backward_prompt,
    chat_prompt,
    parse_score,
    rating_parts,
)
from selfknow.backtranslate.run import BacktranslateConfig, BacktranslateRun
from selfknow.backtranslate.tuning import Example, backward_rows, forward_rows
from selfknow.cli import app
from selfknow.data.records import Record
from selfknow.engine import AnswerConfig, Answerer
from selfknow.errors import DataError, SelfknowError
from selfknow.models import load_model
from selfknow.sft import IGNORE_INDEX


def _taught(tokenizer, row) -> str:
    ids, labels = row
    return tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])


def test_backward_rows_teach_only_the_instruction(tokenizer):
    (row,) = backward_rows(tokenizer, [("How do I sort a list?", "Use sorted(items) or items.sort().")], 384)
    assert _taught(tokenizer, row) == "How do I sort a list?" + tokenizer.eos_token
    assert "Use sorted(items)" in tokenizer.decode(row[0])


def test_forward_rows_teach_the_answer_and_drop_eos_when_cut(tokenizer):
    full, cut = forward_rows(
        tokenizer,
        [Example("Say hi.", "Hello there."), Example("Count.", " ".join(["one"] * 50))],
        max_response_tokens=8,
    )
    assert _taught(tokenizer, full) == "Hello there." + tokenizer.eos_token
    assert "Say hi. Answer in the style of an AI Assistant." in tokenizer.decode(full[0])
    assert not _taught(tokenizer, cut).endswith(tokenizer.eos_token) and len(_taught(tokenizer, cut).split()) <= 8


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("The answer is clear.\nScore: 4", 4),
        ("score: 5", 5),
        ("Score: 7", None),  # out of range
        ("Score: 0", None),
        ("Score: 4 because it is good", None),  # not the last thing on the line
        ("Score: 3\nThe answer is complete and clear.", 3),  # alone on the first line: score first
        ("Score: 3\nOn reflection it misses a step.\nScore: 2", 2),  # the last line wins
        ("Score: 3 overall\nThanks!", None),  # a first line with more than the score
        ("Score: 9\nThanks!", None),
        ("I would rate it five.", None),
        ("", None),
    ],
)
def test_parse_score_reads_a_last_line_or_lone_first_line_score_in_range(reply, score):
    assert parse_score(reply) == score


def test_expected_score_is_the_mean_of_the_digit_distribution():
    logprobs = [math.log(p) for p in (0.1, 0.1, 0.2, 0.2, 0.2)]  # 0.8 of the mass on the digits
    value, mass = expected_score(logprobs)
    assert mass == pytest.approx(0.8)
    assert value == pytest.approx((0.1 * 1 + 0.1 * 2 + 0.2 * 3 + 0.2 * 4 + 0.2 * 5) / 0.8)
    with pytest.raises(DataError, match="no usable distribution"):
        expected_score([float("nan")] * 5)
    with pytest.raises(DataError, match="5 digit"):
        expected_score([0.0] * 4)


def test_curated_subsets_follow_the_paper_thresholds():
    ratings = [Rating("a", 5, 4.6, 1.0, ""), Rating("b", 4, 4.4, 1.0, ""), Rating("c", None, 3.6, 1.0, "")]
    assert curated_ids(ratings, "parsed", 5) == ["a"] and curated_ids(ratings, "parsed", 4) == ["a", "b"]
    assert curated_ids(ratings, "expected", 5) == ["a"] and curated_ids(ratings, "expected", 4) == ["a", "b", "c"]
    many = [Rating(f"r{i:03d}", None, 1 + i / 100, 1.0, "") for i in range(200)]
    top = curated_ids(many, "rank", 5)  # the paper's A_5 share (8.3%) of the best expected scores
    assert len(top) == 17 and top == [f"r{i:03d}" for i in range(183, 200)]
    assert len(curated_ids(many, "rank", 4)) == 78
    assert curated_ids(many[:6], "rank", 5) == ["r005"]  # 8.3% of 6 rounds to none: the best is kept
    with pytest.raises(DataError):
        curated_ids(ratings, "mean", 5)


def test_rating_prompt_shares_the_rubric_prefix(tokenizer):
    head_a, rest_a = rating_parts(tokenizer, "Q1?", "A1.")
    head_b, rest_b = rating_parts(tokenizer, "Another question?", "Another answer.")
    assert head_a == head_b and head_a.endswith(RUBRIC) and rest_a.startswith("Q1?\nA1.")


def test_score_first_prompt_names_the_parts_and_asks_before_and_after_the_pair(tokenizer):
    head, rest = rating_parts(tokenizer, " Q1? ", "A1. {braces} kept", "score-first")
    assert head == rating_parts(tokenizer, "Q2?", "A2.", "score-first")[0]
    assert "in the last line" not in head and head.endswith(SCORE_FIRST_ASK + "\n\n")
    pair = "Instruction: Q1?\n\nAnswer: A1. {braces} kept\n\n"
    assert head + rest == chat_prompt(tokenizer, SCALE + SCORE_FIRST_ASK + "\n\n" + pair + SCORE_FIRST_ASK)
    with pytest.raises(DataError, match="rating prompt must be one of paper, score-first"):
        rating_parts(tokenizer, "Q?", "A.", "shortest")
    with pytest.raises(SelfknowError, match="rating_prompt"):
        BacktranslateConfig(rating_prompt="shortest")


def _rows(tokenizer, texts):
    records = [
        Record(id=f"r{i}", dataset="t", split="x", question="q", answer="a", prompt=t) for i, t in enumerate(texts)
    ]
    return [(r, r.prompt, tokenizer(r.prompt, add_special_tokens=False).input_ids) for r in records]


def test_sampling_is_seeded_per_record_and_independent_of_batching(tiny_llama_dir):
    model, tokenizer = load_model(str(tiny_llama_dir))
    tokenizer.padding_side = "left"
    items = _rows(tokenizer, [backward_prompt(tokenizer, "Some text " * (i + 1)) for i in range(6)])

    def run(rows, **settings):
        out = {}
        Answerer(model, tokenizer, AnswerConfig(max_new_tokens=6, stop=(), **settings)).run(
            rows, lambda done, _: out.update((r.id, r.output) for r in done)
        )
        return out

    sampled = run(items, temperature=0.7, top_p=0.9, seed=1)
    assert sampled == run(items[::-1], temperature=0.7, top_p=0.9, seed=1, batch_size=2)
    assert sampled != run(items, temperature=0.7, top_p=0.9, seed=2)
    assert run(items) != sampled  # greedy differs from sampling


@pytest.mark.parametrize("prompt", ["paper", "score-first"])
def test_cue_reading_equals_a_forward_pass_over_prompt_and_cue(tiny_model_dir, prompt):
    model, tokenizer = load_model(str(tiny_model_dir))
    prompts = [rating_parts(tokenizer, f"Question {i}?", "Answer. " * (i + 1), prompt) for i in range(3)]
    items = _rows(tokenizer, [a + b for a, b in prompts])
    cue, digits = score_cue(tokenizer, items[0][1])
    found, greedy = {}, {}
    Answerer(model, tokenizer, AnswerConfig(max_new_tokens=4, stop=(), cue=cue, cue_read=digits)).run(
        items, lambda done, _: found.update((r.id, (r.scores["cue_logprobs"], r.output)) for r in done)
    )
    Answerer(model, tokenizer, AnswerConfig(max_new_tokens=4, stop=())).run(
        items, lambda done, _: greedy.update((r.id, r.output) for r in done)
    )
    for record, _, ids in items:
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids + list(cue)])).logits[0, -1].log_softmax(-1)
        assert found[record.id][0] == pytest.approx(logits[list(digits)].tolist(), abs=1e-4)
        assert found[record.id][1] == greedy[record.id]  # the cache was cut back: the reply is unchanged


def test_augment_resumes_after_a_kill(tiny_llama_dir, tmp_path, monkeypatch):
    model, tokenizer = load_model(str(tiny_llama_dir))
    tokenizer.padding_side = "left"
    segments = [Segment(f"s{i}", f"T{i}", "Some documentation text. " * (5 + 3 * i), "user") for i in range(8)]
    journal = tmp_path / "augment.jsonl"
    settings = {"max_response_tokens": 64, "max_new_tokens": 5, "seed": 3, "progress": False}
    import selfknow.answer as answer_module

    calls = {"n": 0}
    original = answer_module.Journal.append

    def append_then_die(self, records):
        original(self, records)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # killed after the first batch is on disk

    monkeypatch.setattr(answer_module.Journal, "append", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        augment(model, tokenizer, segments, journal, **settings)
    lines = (tmp_path / "augment.jsonl.partial-0").read_text().splitlines()
    partial = [row for row in map(json.loads, lines) if "id" in row]  # the records, not the batch ends
    assert 0 < len(partial) < len(segments)
    monkeypatch.setattr(answer_module.Journal, "append", original)
    candidates, stats = augment(model, tokenizer, segments, journal, **settings)
    assert [c.id for c in candidates] == [s.id for s in segments]
    assert stats.records == len(segments) - len(partial)  # only the rest was generated
    kept = {row["id"]: row["output"].strip() for row in partial}
    assert all(c.instruction == kept[c.id] for c in candidates if c.id in kept)


def test_labelled_set_has_a_fifth_positives_and_three_kinds_of_negatives():
    held = [Pair(f"p{i}", f"Question {i}?", f"Answer number {i}. " * 10, "user") for i in range(12)]
    rows = labelled_pairs(held, 50, ["Copyright notice."], seed=0)
    good = [r for r in rows if r[3]]
    assert len(rows) == 50 and len(good) == 10
    kinds = {r[4] for r in rows if not r[3]}
    assert kinds == {"shuffled", "truncated", "boilerplate"}
    by_instruction = {p.instruction: p.output for p in held}
    assert all(r[2] != by_instruction[r[1]] for r in rows if r[4] == "shuffled")
    assert len({r[0] for r in rows}) == 50


def test_first_sentence_and_first_question_baselines():
    assert first_sentence("Use sorted(). It returns a list.") == "Use sorted()."
    assert first_sentence("One line\nanother") == "One line"
    reply = "The most likely question to which the text would be a great answer is:\n\nHow do I sort a list? Then"
    assert first_question(reply) == "How do I sort a list?"
    assert first_question("No question here.") == "No question here."


def test_config_refuses_unknown_sources():
    with pytest.raises(SelfknowError, match="unknown seed source"):
        BacktranslateConfig(seed_sources=["wikipedia"])
    with pytest.raises(SelfknowError, match="reading"):
        BacktranslateConfig(reading="mean")
    with pytest.raises(SelfknowError, match="uncurated"):
        BacktranslateConfig(uncurated="half")


@pytest.mark.parametrize(("uncurated", "size"), [("matched", 8), ("all", 100)])
def test_uncurated_control_is_a_seeded_sample_as_large_as_the_curated_set(tmp_path, uncurated, size):
    run = BacktranslateRun(tmp_path, BacktranslateConfig(reading="rank", uncurated=uncurated), progress=False)
    candidates = [Candidate(f"s{i}", f"Question {i}?", f"Answer {i}.", "factbook") for i in range(100)]
    write_candidates(tmp_path / "augmented.jsonl", candidates)
    ratings = [Rating(c.id, None, 1 + (i % 40) / 10, 0.5, "") for i, c in enumerate(candidates)]
    write_ratings(tmp_path / "ratings-2.jsonl", ratings)
    chosen = [c.id for c in run.uncurated()]
    assert len(chosen) == len(set(chosen)) == size == (len(run.curated(2)) if uncurated == "matched" else 100)
    assert chosen == [c.id for c in run.uncurated()]  # seeded: the same sample on a rerun
    if uncurated == "matched":
        assert set(chosen) != {c.id for c in run.curated(2)}  # chosen without the ratings


def test_an_empty_curated_set_stops_training_and_names_the_way_on(tmp_path):
    run = BacktranslateRun(tmp_path, BacktranslateConfig(reading="expected"), progress=False)
    candidates = [Candidate(f"s{i}", f"Question {i}?", f"Answer {i}.", "factbook") for i in range(20)]
    write_candidates(tmp_path / "augmented.jsonl", candidates)
    write_ratings(
        tmp_path / "ratings-1.jsonl", [Rating(c.id, None, 3 + i / 20, 1.0, "") for i, c in enumerate(candidates)]
    )
    with pytest.raises(SelfknowError) as caught:
        run.curated_for_training(1)
    message = str(caught.value)
    assert "ratings-1.jsonl" in message and "highest expected score 3.95" in message and "--reading rank" in message
    assert (tmp_path / "ratings-1.jsonl").exists() and run.curated(1) == []
    write_ratings(tmp_path / "ratings-2.jsonl", [Rating("s3", None, 4.6, 1.0, "")])
    assert [c.id for c in run.curated_for_training(2)] == ["s3"]


def _user_data(tmp_path):
    seed = tmp_path / "seed.jsonl"
    seed.write_text(
        "".join(
            json.dumps({"instruction": f"How do I use feature {i}?", "output": f"Call feature_{i}() with care. " * 6})
            + "\n"
            for i in range(14)
        )
    )
    pool = tmp_path / "pool.jsonl"
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
        "nu",
        "xi",
        "omicron",
        "pi",
        "rho",
        "sigma",
    ]
    texts = []
    for i in range(6):
        sentences = [
            f"Section {i} explains {words[(i + j) % len(words)]} number {j} in plain words." for j in range(14)
        ]
        texts.append(json.dumps({"title": f"Topic {i}", "text": " ".join(sentences)}) + "\n")
    pool.write_text("".join(texts))
    return seed, pool


def test_backtranslate_cli_runs_every_stage_and_resumes(tiny_llama_dir, tmp_path):
    seed, pool = _user_data(tmp_path)
    run = tmp_path / "bt"
    args = ["backtranslate", str(run), "-m", str(tiny_llama_dir), "--seed-source", f"user:{seed}",
            "--pool-source", f"user:{pool}", "--held-out", "5", "--backward-epochs", "1", "--forward-epochs", "1",
            "--labelled", "25", "--bootstrap", "20", "--reading", "rank",
            "--rating-prompt", "score-first", "--rating-tokens", "6"]  # fmt: skip
    cli = CliRunner()
    result = cli.invoke(app, [*args, "--gradient-checkpointing"])  # a way of training, not a setting of the run
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["rating_prompt"] == "score-first" and config["rating_tokens"] == 6
    for journal in ("ratings-1.jsonl", "eval-rating-0.jsonl"):  # the curation pass and the evaluation's
        rows = [json.loads(line) for line in (run / "answers" / journal).read_text().splitlines()]
        rated = [row for row in rows if "id" in row]
        assert rated and all(row["prompt"].count(SCORE_FIRST_ASK) == 2 for row in rated), journal
    data = json.loads((run / "data.json").read_text())
    assert data["held-out pairs"] == 5 and data["seed pairs"] == {"user": 9} and data["pool segments"] == {"user": 6}
    for name in ("backward", "forward-0", "forward-1", "forward-2", "forward-uncurated"):
        assert (run / "adapters" / name / "adapter_config.json").exists(), name
    assert len((run / "augmented.jsonl").read_text().splitlines()) <= 6
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert set(metrics["backward"]) == {
        "backward model",
        "base model, zero-shot",
        "base model, zero-shot, its first question only",
        "first sentence of the answer",
    }
    for scores in metrics["backward"].values():
        assert 0 <= scores["rouge_l"]["value"] <= 1 and 0 <= scores["top1_retrieval"]["value"] <= 1
    assert metrics["curation"]["kinds"] == {"held-out pair": 5, "shuffled": 7, "truncated": 7, "boilerplate": 6}
    assert {"M_0", "M_1", "controls (AUROC)"} <= set(metrics["curation"])
    assert 1 <= metrics["curation"]["M_0"]["expected"]["auroc"]["value"] + 1 <= 2
    forward = {name: row["rouge_l"]["value"] for name, row in metrics["forward"].items()}
    curated = metrics["forward"]["seed + curated (M_2)"]
    assert "win rate vs seed only (judge)" in curated  # paired differences: the mean difference of the same pairs
    gain = forward["seed + curated (M_2)"] - forward["seed only (M_0)"]
    assert curated["rouge_l minus seed only"]["value"] == pytest.approx(gain, abs=1e-9)
    difference = metrics["curated minus uncurated (ROUGE-L, paired)"]
    assert difference["value"] == pytest.approx(forward["seed + curated (M_2)"] - forward["seed + uncurated"], abs=1e-9)
    assert difference["low"] <= difference["value"] <= difference["high"]
    agreement = metrics["data table"]["iteration 2"]["agreement with iteration 1"]
    assert 0 <= agreement["A_5 (rank) pairs in common"] <= metrics["data table"]["iteration 2"]["A_5 (rank)"]
    assert set(metrics["timings"]) >= {"backward", "augment", "curate-1", "curate-2", "train"}
    assert "## Self-curation on the labelled set" in (run / "evaluation" / "report.md").read_text()

    before = {p: p.stat().st_mtime for p in run.rglob("*") if p.is_file() and "evaluation" not in str(p)}
    again = cli.invoke(app, [*args, "--stages", "data,backward,augment,curate,train"])
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime for p in before} == before  # every stage was done: nothing recomputed
    with pytest.raises(SelfknowError, match="other settings"):
        BacktranslateRun(run, BacktranslateConfig(model=str(tiny_llama_dir)))


def test_answer_once_reads_a_finished_file_instead_of_recomputing(tiny_llama_dir, tmp_path, monkeypatch):
    import selfknow.answer as answer_module

    model, tokenizer = load_model(str(tiny_llama_dir))
    records = [r for r, _, _ in _rows(tokenizer, ["First prompt:", "Second prompt:"])]
    output = tmp_path / "answers.jsonl"
    config = AnswerConfig(max_new_tokens=3, stop=())
    first, _ = answer_module.answer_once(model, tokenizer, records, output=output, config=config, progress=False)

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a finished answer file")

    monkeypatch.setattr(answer_module, "answer_records", fail)
    again, stats = answer_module.answer_once(model, tokenizer, records, output=output, config=config)
    assert [r.output for r in again] == [r.output for r in first] and stats.records == 0
    with pytest.raises(AssertionError, match="recomputed"):  # other records: the file does not answer them
        answer_module.answer_once(model, tokenizer, records[:1], output=output, config=config)

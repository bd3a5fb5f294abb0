"""The whole Self-RAG workflow on a tiny model through the CLI: index → train → evaluate → ask, and resume."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from selfknow.cli import app
from selfknow.data.records import Record
from selfknow.errors import DataError, SelfknowError
from selfknow.rag.corpus import Passage
from selfknow.rag.labels import encode, examples_for, is_relevant, support
from selfknow.rag.questions import rag_questions
from selfknow.rag.reflection import FULLY_SUPPORTED, NO_SUPPORT, PARTIALLY_SUPPORTED, add_reflection_tokens
from selfknow.rag.run import RagConfig, RagRun
from selfknow.rag.sequences import IGNORE_INDEX


def _index_args(run, model) -> list[str]:
    args = ["rag", "index", str(run), "-m", str(model), "--source", "mendeleev", "--retrievers", "bm25"]
    args += ["--method", "bm25", "--tasks", "elements:symbol,elements:atomic_number", "--k", "2"]
    args += ["--limit-train", "24", "--limit-validation", "12", "--limit-test", "10", "--epochs", "1"]
    return args + ["--estimators", "dataset-accuracy", "--confidence", "dataset-accuracy", "--bootstrap", "50"]


def test_rag_cli_runs_every_stage_resumes_and_answers(tiny_llama_dir, tmp_path, monkeypatch):
    import selfknow.rag.train as train_module

    checkpointing = []
    fit = train_module.fit
    monkeypatch.setattr(
        train_module, "fit", lambda *a, **k: checkpointing.append(k["gradient_checkpointing"]) or fit(*a, **k)
    )
    run = tmp_path / "rag"
    cli = CliRunner()
    train = ["rag", "train", str(run), "--gradient-checkpointing"]
    for args in (_index_args(run, tiny_llama_dir), train, ["rag", "evaluate", str(run)]):
        result = cli.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert checkpointing == [True]
    for path in ("index/index.json", "questions.jsonl", "retrieved.json", "calibration/scores/test.jsonl"):
        assert (run / path).exists(), path
    assert (run / "adapter" / "adapter_model.safetensors").stat().st_size < 5_000_000  # no full embedding saved
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(len(r["candidates"]) <= 2 for r in rows)
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    modes = metrics["modes"]
    assert modes["always top-1"]["retrieval_rate"] == 1.0 and modes["closed-book"]["retrieval_rate"] == 0.0
    for row in modes.values():
        assert row["accuracy"]["low"] <= row["accuracy"]["value"] <= row["accuracy"]["high"]
    assert {0.0, 0.05, 0.95} <= {p["threshold"] for p in metrics["delta_curve"]}
    assert set(metrics["retriever recall (test questions)"]) == {"bm25"}
    assert (run / "evaluation" / "retrieval_curves.png").stat().st_size > 0
    assert "| always top-k (critique-ranked) |" in (run / "evaluation" / "report.md").read_text()

    before = {p: p.stat().st_mtime for p in run.rglob("*") if p.is_file() and "evaluation" not in str(p)}
    assert cli.invoke(app, ["rag", "evaluate", str(run)]).exit_code == 0  # resuming redoes only the evaluation
    assert {p: p.stat().st_mtime for p in before} == before

    result = cli.invoke(app, ["rag", "ask", str(run), "What is the chemical symbol of iron?", "--mode", "always"])
    assert result.exit_code == 0, result.output
    assert "retrieved: yes" in result.output and "IsRel" in result.output

    with pytest.raises(SelfknowError, match="other settings"):
        RagRun(run, RagConfig(model=str(tiny_llama_dir)))


def _record(answer: str, aliases: tuple[str, ...] = (), entity: str = "Iron") -> Record:
    return Record(
        id="elements/symbol/iron", dataset="elements", split="train", question="What is the chemical symbol of iron?",
        answer=answer, aliases=list(aliases), task="symbol", entity=entity,
    )  # fmt: skip


def test_rule_labels_for_relevance_and_support():
    record = _record("Fe")
    about = Passage("mendeleev/iron/0", "Iron", "Iron (symbol Fe) has atomic number 26.", "mendeleev")
    elsewhere = Passage("mendeleev/gold/0", "Gold", "Gold (symbol Au) has atomic number 79.", "mendeleev")
    assert is_relevant(record, about) and not is_relevant(record, elsewhere)
    assert support(record, about) == FULLY_SUPPORTED and support(record, elsewhere) == NO_SUPPORT
    assert support(record, about, answer_correct=False) == NO_SUPPORT  # a wrong answer is never supported
    city = _record("Port Louis", entity="Mauritius")
    near = Passage("factbook/mp/0", "Mauritius", "The harbour of Port-Louis ... the port city.", "factbook")
    assert support(city, Passage("x", "Mauritius", "Its largest city is Louis.", "factbook")) == PARTIALLY_SUPPORTED
    assert support(city, near) == FULLY_SUPPORTED  # punctuation is normalised away


def test_examples_for_an_unknown_question_mask_the_wrong_answer(tokenizer, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tok = tokenizer.__class__.from_pretrained(tiny_llama_dir)
    add_reflection_tokens(model, tok)
    record = _record("Fe")
    passages = [
        Passage("mendeleev/iron/0", "Iron", "Iron (symbol Fe) has atomic number 26.", "mendeleev"),
        Passage("mendeleev/gold/0", "Gold", "Gold (symbol Au) has atomic number 79.", "mendeleev"),
    ]
    wrong = Record(**{**record.__dict__, "output": "Ir", "correct": False})
    examples = examples_for(record, passages, wrong, tok.eos_token)
    outputs = [e.output for e in examples]
    assert any("[Relevant]Fe[Fully supported][Utility:5]" in o for o in outputs)
    assert any("[Irrelevant]Fe[Utility:5]" in o for o in outputs)
    assert [e.retrieve_label for e in examples] == [True] + [False] * (len(examples) - 1)  # once per question
    ids, labels = encode(tok, examples[1])
    first = next(i for i, t in enumerate(ids) if t == tok.convert_tokens_to_ids("[Retrieval]"))
    assert labels[first] == IGNORE_INDEX and encode(tok, examples[0])[1][first] != IGNORE_INDEX
    judged = next(e for e in examples if e.masked)
    assert "[Relevant]Ir[No support / Contradictory][Utility:1]" in judged.output
    ids, labels = encode(tok, judged)
    supervised = tok.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])
    assert "Ir" not in supervised.replace("[Retrieval]", "") and "[No support / Contradictory]" in supervised
    known = examples_for(record, passages, Record(**{**record.__dict__, "output": "Fe", "correct": True}), "</s>")
    assert [e.output for e in known] == ["[No Retrieval]Fe[Utility:5]</s>"]


def test_questions_keep_only_answers_the_corpus_holds():
    passages = [Passage("mendeleev/iron/0", "Iron", "Iron (symbol Fe) has atomic number 26.", "mendeleev")]
    kept = rag_questions(passages, ["elements:symbol", "elements:atomic_number"])
    assert {r.id for r in kept} == {"elements/symbol/iron", "elements/atomic_number/iron"}
    with pytest.raises(Exception, match="dataset:task"):
        rag_questions(passages, ["symbol"])


def test_a_rarely_supervised_reflection_token_is_learnt(tiny_llama_dir):
    """[No Retrieval] starts at the mean embedding; its rows train at a higher rate than LoRA, so a few
    steps make it the answer where it is the label (at the LoRA rate alone it stayed near 1e-5)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfknow.rag.labels import Example
    from selfknow.rag.sequences import format_prompt
    from selfknow.rag.train import GeneratorConfig, train_generator

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompt = format_prompt("What is the chemical symbol of iron?")
    examples = [Example("q", prompt, "[No Retrieval]Fe[Utility:5]" + tok.eos_token)] * 8
    peft_model, numbers = train_generator(model, tok, examples, GeneratorConfig(epochs=3, batch_size=4))
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        probs = peft_model(input_ids=ids).logits[0, -1].softmax(-1)
    assert probs.argmax().item() == tok.convert_tokens_to_ids("[No Retrieval]")
    assert numbers["examples"] == 8 and numbers["supervised_tokens"] == 8 * 4


def test_a_training_question_without_a_closed_book_answer_is_a_clear_error():
    from selfknow.rag.labels import build_examples

    record = _record("Fe")
    with pytest.raises(DataError, match="no graded closed-book answer"):
        build_examples([record], {record.id: []}, {}, "</s>")


def test_closed_book_answers_are_made_in_the_runs_dtype(tiny_llama_dir, tmp_path):
    config = RagConfig(
        model=str(tiny_llama_dir), sources=["mendeleev"], retrievers=["bm25"], method="bm25",
        tasks=["elements:symbol"], k=2, limits={"train": 12, "validation": 6, "test": 6},
        estimators=["dataset-accuracy"], confidence="dataset-accuracy", dtype="bfloat16", bootstrap=20,
    )  # fmt: skip
    run = RagRun(tmp_path / "rag", config, progress=False)
    run.run(["index", "questions", "closed_book"])
    calibration = run.calibration
    assert calibration.config.dtype == "bfloat16"
    assert calibration.context.model.dtype == torch.bfloat16
    assert len(run.base_answers("test")) == 6

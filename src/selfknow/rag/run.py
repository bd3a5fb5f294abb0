"""A Self-RAG run directory: index → questions → closed-book answers and confidence → labels → generator →
answers → evaluation. Each stage writes its files as it finishes; a rerun resumes at the first missing one
(and the answering stage inside itself, question by question)::

    <run>/config.json
    <run>/index/                      passages.jsonl, bm25/, embeddings.npy, index.json
    <run>/questions.jsonl             records (entity-disjoint splits) + retrieved.json (top-k passage ids)
    <run>/calibration/                a calibration run (selfknow.pipeline.Run): the base model's closed-book
                                      answers, graded, with calibrated P(correct)
    <run>/train_examples.jsonl        rule-labelled Self-RAG training sequences
    <run>/adapter/                    LoRA + reflection-token rows (PEFT format) and the tokenizer
    <run>/results.jsonl               per test question: retrieve probability, closed-book answer, candidates
    <run>/results-validation.jsonl    the same for validation questions, where δ and τ are chosen
    <run>/evaluation/                 metrics.json, report.md, retrieval_curves.png
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from selfknow.checkpoints import CHECKPOINTS, removed_after_saving
from selfknow.data.records import Record, read_records, write_records
from selfknow.errors import SelfknowError
from selfknow.grade import golds
from selfknow.models import DEFAULT_MODEL, load_model, resolve_spec
from selfknow.pipeline import SPLITS, Run, RunConfig
from selfknow.rag.corpus import Passage, build_corpus
from selfknow.rag.evaluation import choose_thresholds, evaluate_results, outcome_arrays, reflection_agreement
from selfknow.rag.infer import answer_questions, read_results
from selfknow.rag.labels import build_examples, read_examples, write_examples
from selfknow.rag.questions import DEFAULT_TASKS, rag_questions
from selfknow.rag.reflection import load_reflection_adapter, save_reflection_adapter
from selfknow.rag.report import write_rag_report
from selfknow.rag.retrieval import METHODS, Index, recall_at_k
from selfknow.rag.train import GeneratorConfig, train_generator
from selfknow.reading import read_json
from selfknow.stages import read_settings, run_stages, save_evaluation, settled_config
from selfknow.writing import place_folder, write_json

STAGES = ("index", "questions", "closed_book", "labels", "train", "answer", "evaluate")


@dataclass
class RagConfig:
    model: str = DEFAULT_MODEL
    sources: list[str] = field(default_factory=lambda: ["factbook", "mendeleev"])
    retrievers: list[str] = field(default_factory=lambda: ["bm25", "dense"])
    method: str = "hybrid"  # the retriever Self-RAG reads from
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    k: int = 5
    limits: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(SPLITS))
    estimators: list[str] = field(default_factory=lambda: ["dataset-accuracy", "probe-mlp"])
    confidence: str = "probe-mlp+platt"  # the calibrated P(correct) that gates retrieval
    generator: dict[str, Any] = field(default_factory=lambda: GeneratorConfig().to_dict())
    dtype: str = "auto"  # auto: float32 on the CPU, bfloat16 (or float16) on a GPU
    max_new_tokens: int = 24
    delta: float = 0.2
    tau: float = 0.5
    seed: int = 0
    bootstrap: int = 1000

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SelfknowError(f"unknown retriever '{self.method}'; one of {', '.join(METHODS)}")
        needs = {"hybrid": {"bm25", "dense"}}.get(self.method, {self.method})
        if not needs <= set(self.retrievers):
            raise SelfknowError(f"retriever '{self.method}' needs an index of {', '.join(sorted(needs))}")
        if self.confidence.split("+")[0] not in self.estimators:
            raise SelfknowError(
                f"the gating confidence '{self.confidence}' needs estimator '{self.confidence.split('+')[0]}'"
            )

    @classmethod
    def from_file(cls, path: Path) -> RagConfig:
        return cls(**read_settings(path, cls.__dataclass_fields__, "Self-RAG run"))


class RagRun:
    def __init__(
        self,
        directory: str | Path,
        config: RagConfig | None = None,
        *,
        progress: bool = True,
        gradient_checkpointing: bool = False,
    ):
        """``gradient_checkpointing`` trades compute for training memory (:func:`selfknow.sft.fit`); it is not
        a setting of the run, since the trained adapter is the same either way."""
        self.dir, self.progress, self.gradient_checkpointing = Path(directory), progress, gradient_checkpointing
        self.config = settled_config(self.dir, config, RagConfig.from_file, "a Self-RAG run")
        self._index: Index | None = None

    def run(self, stages=STAGES) -> dict[str, Any] | None:
        return run_stages(self, stages, STAGES)

    def _timed(self, stage: str, seconds: float) -> None:
        path = self.dir / "timings.json"
        timings = read_json(path, "timings") if path.exists() else {}
        timings[stage] = round(seconds, 1)
        write_json(path, timings)

    # ------------------------------------------------------------------------------------------ data

    def index(self) -> None:
        if (self.dir / "index" / "index.json").exists():
            return
        start = time.perf_counter()
        Index.build(build_corpus(self.config.sources), self.dir / "index", kinds=self.config.retrievers)
        self._timed("index", time.perf_counter() - start)

    @property
    def search_index(self) -> Index:
        if self._index is None:
            self._index = Index.load(self.dir / "index")
        return self._index

    def questions(self) -> None:
        path = self.dir / "questions.jsonl"
        if path.exists() and (self.dir / "retrieved.json").exists():
            return
        records = rag_questions(self.search_index.passages, self.config.tasks, self.config.seed)
        records = _limited(records, self.config.limits, self.config.seed)
        hits = self.search_index.search([r.question for r in records], self.config.k, self.config.method)
        passages = self.search_index.passages
        retrieved = {r.id: [passages[row].id for row, _ in found] for r, found in zip(records, hits, strict=True)}
        write_records(path, records)
        write_json(self.dir / "retrieved.json", retrieved, indent=None)

    def records(self, split: str | None = None) -> list[Record]:
        path = self.dir / "questions.jsonl"
        if not path.exists():
            raise SelfknowError(f"{self.dir}: no questions yet; run the questions stage")
        records = read_records(path)
        return records if split is None else [r for r in records if r.split == split]

    def retrieved(self) -> dict[str, list[Passage]]:
        by_id = {p.id: p for p in self.search_index.passages}
        ids = read_json(self.dir / "retrieved.json", "retrieved passages")
        return {question: [by_id[p] for p in passages] for question, passages in ids.items()}

    # ----------------------------------------------------------------------------- closed book + labels

    @property
    def calibration(self) -> Run:
        config = RunConfig(
            model=self.config.model,
            dataset=f"jsonl:{(self.dir / 'questions.jsonl').resolve()}",
            estimators=list(self.config.estimators),
            seed=self.config.seed,
            bootstrap=self.config.bootstrap,
            dtype=self.config.dtype,
        )
        directory = self.dir / "calibration"
        return Run(directory, None if (directory / "config.json").exists() else config, progress=self.progress)

    def closed_book(self) -> None:
        """The base model's closed-book answers to every question, graded, and its calibrated P(correct)."""
        calibration = self.calibration
        fresh = not calibration.scores("test").exists()
        start = time.perf_counter()
        calibration.run(("answer", "grade", "fit", "score"))  # each of its stages skips what is done
        if fresh:
            self._timed("closed_book", time.perf_counter() - start)

    def labels(self) -> None:
        path = self.dir / "train_examples.jsonl"
        if path.exists():
            return
        closed = {r.id: r for r in self.calibration.records("train")}
        eos = AutoTokenizer.from_pretrained(resolve_spec(self.config.model)).eos_token
        examples = build_examples(self.records("train"), self.retrieved(), closed, eos, self.config.seed)
        write_examples(path, examples)

    # ------------------------------------------------------------------------------ generator + answers

    def train(self) -> dict[str, Any]:
        report = self.dir / "training.json"
        if report.exists():
            return read_json(report, "training numbers")
        examples = read_examples(self.dir / "train_examples.jsonl")
        model, tokenizer = load_model(self.config.model, dtype=self.config.dtype)
        config = GeneratorConfig(**{**self.config.generator, "seed": self.config.seed})
        with removed_after_saving(self.dir / CHECKPOINTS) as checkpoints:
            peft_model, numbers = train_generator(
                model, tokenizer, examples, config, progress=self.progress, checkpoints=checkpoints,
                gradient_checkpointing=self.gradient_checkpointing,
            )  # fmt: skip
            with tempfile.TemporaryDirectory(dir=self.dir) as scratch:
                save_reflection_adapter(peft_model, tokenizer, scratch)
                place_folder(scratch, self.dir / "adapter")
            write_json(report, numbers)
        self._timed("train", numbers["train_seconds"] or 0.0)
        return numbers

    def generator(self):
        """The trained Self-RAG model and its tokenizer (reflection tokens included)."""
        if not (self.dir / "adapter").exists():
            raise SelfknowError(f"{self.dir}: no trained generator yet; run the train stage")
        model, _ = load_model(self.config.model, dtype=self.config.dtype)
        peft_model, tokenizer = load_reflection_adapter(model, self.dir / "adapter")
        tokenizer.padding_side = "left"
        return peft_model.eval(), tokenizer

    def results_path(self, split: str) -> Path:
        return self.dir / ("results.jsonl" if split == "test" else f"results-{split}.jsonl")

    def answer(self) -> None:
        """Self-RAG's outputs on the test questions, then on the validation questions (where δ and τ are
        chosen)."""
        model = tokenizer = None
        for split in ("test", "validation"):
            out, records = self.results_path(split), self.records(split)
            if out.exists():  # written whole once every question is answered
                continue
            if model is None:
                model, tokenizer = self.generator()
            start = time.perf_counter()
            answer_questions(
                model, tokenizer, records, self.retrieved(), out,
                max_new_tokens=self.config.max_new_tokens, progress=self.progress,
            )  # fmt: skip
            self._timed(f"answer_{split}", time.perf_counter() - start)

    # ------------------------------------------------------------------------------------- evaluation

    def base_answers(self, split: str) -> dict[str, dict]:
        """The base model's closed-book answers of a split: graded, with the gating confidence."""
        scored = read_records(self.calibration.scores(split))
        return {r.id: {"correct": bool(r.correct), "confidence": r.confidences[self.config.confidence]} for r in scored}

    def evaluate(self) -> dict[str, Any]:
        rows = read_results(self.results_path("test"))
        base = self.base_answers("test")
        chosen = None
        if self.results_path("validation").exists():
            chosen = choose_thresholds(
                outcome_arrays(read_results(self.results_path("validation")), self.base_answers("validation"))
            )
        test = self.records("test")
        records = {r.id: r for r in test}
        passages = {p.id: p for p in self.search_index.passages}
        summary = evaluate_results(
            rows, base, delta=self.config.delta, tau=self.config.tau, chosen=chosen, bootstrap=self.config.bootstrap,
            seed=self.config.seed, agreement=reflection_agreement(rows, records, passages),
        )  # fmt: skip
        built = set(self.search_index.info.get("kinds", []))
        methods = [m for m in METHODS if m != "hybrid" and m in built] + (
            ["hybrid"] if {"bm25", "dense"} <= built else []
        )
        summary["retriever recall (test questions)"] = {
            m: recall_at_k(self.search_index, [r.question for r in test], [golds(r) for r in test], (1, 5), m)
            for m in methods
        }
        summary["config"] = asdict(self.config)
        save_evaluation(self.dir, summary, write_rag_report)
        return summary


def _limited(records: list[Record], limits: dict[str, int | None], seed: int) -> list[Record]:
    """At most ``limits[split]`` questions per split: whole entities, chosen by a seeded hash, so the
    splits stay entity-disjoint and a question's entity keeps all its questions."""
    out = []
    for split in SPLITS:
        rows = [r for r in records if r.split == split]
        limit = limits.get(split)
        if limit is not None:
            rows.sort(key=lambda r: (hashlib.sha256(f"{seed}|{r.entity}".encode()).hexdigest(), r.id))
            rows = rows[:limit]
        out += rows
    return out

"""The calibration pipeline in a run directory: answer → grade → fit → score → evaluate.

Each stage writes its files before the next starts and is skipped when they are there, so a killed
run resumes stage by stage (and answering resumes inside its stage)::

    <run>/config.json                    what the run is (model, data, estimators, seed)
    <run>/answers/<split>.jsonl          answered and graded records
    <run>/features/                      cached base-model features shared by estimators
    <run>/estimators/<name>/             fitted estimators (+ scalers.json: temperature and Platt, cost.json:
                                         the time scoring the test split took)
    <run>/scores/<split>.jsonl           records with every estimator's confidence
    <run>/evaluation/                    metrics.json, report.md and plots for the test split
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from selfknow import __version__
from selfknow.abstention import AbstentionThreshold, choose_threshold, selective_risk
from selfknow.answer import AnswerConfig
from selfknow.api import answer_dataset, grade_file
from selfknow.checkpoints import CHECKPOINTS, removed_after_saving
from selfknow.confidence import ESTIMATORS, Context, Estimator, labels
from selfknow.confidence.sampling import SamplingEstimator
from selfknow.confidence.scaling import fit_scaler, scaler_from_dict
from selfknow.data.records import Record, read_records, write_records
from selfknow.data.registry import load_dataset, seeded_subset
from selfknow.distributed import process_state
from selfknow.errors import SelfknowError
from selfknow.metrics import evaluate_scores
from selfknow.models import DEFAULT_MODEL, adapters_off
from selfknow.reading import read_json
from selfknow.report import family_table, write_report
from selfknow.stages import read_settings, run_stages
from selfknow.writing import write_json, write_text

SPLITS = ("train", "validation", "test")
STAGES = ("answer", "grade", "fit", "score", "evaluate")
SCALINGS = ("ts", "platt")
CONTROLS = ("constant", "dataset-accuracy")
DEFAULT_ESTIMATORS = {
    "oe": [
        "constant",
        "dataset-accuracy",
        "likelihood",
        "query",
        "query-chat",
        "verbal",
        "encoder",
        "probe",
        "probe-mlp",
        "ct",
        "lora-probe",
    ],
    "choice": [
        "constant",
        "dataset-accuracy",
        "choice-logits",
        "query",
        "query-chat",
        "verbal",
        "encoder",
        "probe",
        "probe-mlp",
        "ct",
        "lora-probe",
    ],
}
IDENTITY = (
    "model",
    "dataset",
    "format",
    "kshot",
    "chat",
    "seed",
    "dtype",
    "hold_out",
    "samples",
    "answers_from",
    "answers_url",
)  # what a run directory is bound to
SAMPLES = 10  # the calibration-tuning reference's k, for runs with sampling estimators


@dataclass
class RunConfig:
    """Everything that defines a run; saved as ``config.json`` and checked when a run is resumed."""

    model: str = DEFAULT_MODEL
    dataset: str = "builtin"
    format: str = "oe"
    limits: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(SPLITS))
    kshot: int = 0
    chat: bool | None = None
    seed: int = 0
    max_new_tokens: int = 32
    estimators: list[str] = field(default_factory=list)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-estimator settings
    bootstrap: int = 1000
    dtype: str = "auto"  # auto: float32 on the CPU, bfloat16 (or float16) on a GPU
    device: str = "auto"  # where this invocation runs; not part of what the run is
    # Question families ("dataset" or "dataset/task") no estimator or scaler is fitted on: their validation
    # questions choose the served estimator; their test and train questions are the out-of-family test.
    hold_out: list[str] = field(default_factory=list)
    # Sampled answers per validation and test question (sampling estimators are zero-shot: nobody reads
    # training samples). With samples the default estimators include the sampling ones; asking for a sampling
    # estimator sets SAMPLES.
    samples: int = 0
    # Cross-model confidence: the answers scored are another model's (a model spec, or a model's name at the
    # OpenAI-compatible answers_url); ``model`` is then only the one the estimators read.
    answers_from: str | None = None
    answers_url: str | None = None

    def __post_init__(self) -> None:
        sampling = [name for name, cls in ESTIMATORS.items() if issubclass(cls, SamplingEstimator)]
        self.estimators = self.estimators or list(DEFAULT_ESTIMATORS[self.format]) + (sampling if self.samples else [])
        unknown = [name for name in self.estimators if name not in ESTIMATORS]
        if unknown:
            raise SelfknowError(f"unknown estimator(s) {', '.join(unknown)}; known: {', '.join(sorted(ESTIMATORS))}")
        if self.samples < 0:
            raise SelfknowError(f"samples must be 0 or more, got {self.samples}")
        if not self.samples and any(name in sampling for name in self.estimators):
            self.samples = SAMPLES
        if self.answers_url and not self.answers_from:
            raise SelfknowError("answers_url needs answers_from: the name of the model served there")

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        return cls(**read_settings(path, cls.__dataclass_fields__, "run"))


def family(record: Record) -> str:
    """A question's family: its dataset and task ("countries/capital", "mmlu/anatomy")."""
    return f"{record.dataset}/{record.task}" if record.task else record.dataset


def held_out(record: Record, families: Sequence[str]) -> bool:
    name = family(record)
    return any(name == f or name.startswith(f + "/") for f in families)


def _git_hash() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {
        "selfknow": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "git": _git_hash(),
    }


class Run:
    """A run directory. A new directory takes ``config``; an existing one keeps its own and refuses a
    config that differs in what the run is bound to (model, data, format, prompting, seed)."""

    def __init__(self, directory: str | Path, config: RunConfig | None = None, *, progress: bool = True):
        self.dir, self.progress = Path(directory), progress
        saved = self.dir / "config.json"
        if saved.exists():
            existing = RunConfig.from_file(saved)
            if config is not None:
                clash = [k for k in IDENTITY if getattr(config, k) != getattr(existing, k)]
                if clash:
                    raise SelfknowError(
                        f"{self.dir} is a run of {existing.model} on {existing.dataset}; it differs in "
                        f"{', '.join(f'{k} ({getattr(existing, k)!r} vs {getattr(config, k)!r})' for k in clash)}"
                    )
                existing.estimators = list(dict.fromkeys(existing.estimators + config.estimators))
                existing.options = {**existing.options, **config.options}
                existing.device = config.device
            self.config = existing
        elif config is None:
            raise SelfknowError(f"{self.dir} is not a run directory (no config.json)")
        else:
            self.config = config
        self.dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(asdict(self.config), indent=2) + "\n"
        if self.writer and (not saved.exists() or saved.read_text() != text):
            write_text(saved, text)

    @property
    def writer(self) -> bool:
        """Whether this process writes the run's files: under ``accelerate launch`` every process computes
        (answering, features and training are shared out among them) and the main process writes."""
        return process_state().is_main_process

    def _synced(self) -> None:
        """Wait until the main process has written, so every process reads the same files."""
        process_state().wait_for_everyone()

    @cached_property
    def context(self) -> Context:
        return Context(
            self.config.model,
            cache_dir=self.dir / "features",
            checkpoint_dir=self.dir / CHECKPOINTS,
            seed=self.config.seed,
            dtype=self.config.dtype,
            device=self.config.device,
            progress=self.progress,
            other_models_answers=self.config.answers_from is not None,
        )

    def answers(self, split: str) -> Path:
        return self.dir / "answers" / f"{split}.jsonl"

    def scores(self, split: str) -> Path:
        return self.dir / "scores" / f"{split}.jsonl"

    def estimator_dir(self, name: str) -> Path:
        return self.dir / "estimators" / name

    def run(self, stages: Sequence[str] = STAGES) -> dict[str, Any] | None:
        return run_stages(self, stages, STAGES)

    @contextmanager
    def _base_model(self) -> Iterator[tuple[Any, Any]]:
        """The model with every adapter off, and its tokenizer: answers come from the base model even after
        estimators fitted or loaded in this process attached theirs."""
        with adapters_off(self.context.lm) as base:
            yield base, self.context.tokenizer

    @cached_property
    def _every_question(self) -> list[Record]:
        """Every split of the run's dataset, loaded once, after checking each held-out family is in it."""
        everything = load_dataset(self.config.dataset, format=self.config.format, seed=self.config.seed)
        self._check_families(everything)
        return everything

    def questions(self, split: str) -> list[Record]:
        """The questions the run answers for ``split``, a seeded subset of ``limits[split]`` of them.

        Held-out families are never fitted on, so their train questions are not answered for training: they
        join the test split as out-of-family test questions, which narrows that estimate's interval.
        """
        config = self.config
        if not config.hold_out:
            return load_dataset(
                config.dataset, split=split, format=config.format, seed=config.seed, limit=config.limits.get(split)
            )
        everything = self._every_question
        if split == "train":
            chosen = [r for r in everything if r.split == "train" and not held_out(r, config.hold_out)]
        elif split == "test":
            moved = [r for r in everything if r.split == "train" and held_out(r, config.hold_out)]
            chosen = [r for r in everything if r.split == "test"] + [replace(r, split="test") for r in moved]
        else:
            chosen = [r for r in everything if r.split == split]
        if not chosen:
            raise SelfknowError(f"{self.dir}: {config.dataset} has no {split} questions outside the held-out families")
        return seeded_subset(chosen, config.limits.get(split), config.seed)

    def answer(self) -> None:
        for split in SPLITS:
            if not self.answers(split).exists():
                samples = self.config.samples if split != "train" else 0
                self._answer(self.config.dataset, self.answers(split), samples, questions=self.questions(split))

    def _answer(self, dataset: str, output: Path, samples: int, **options: Any) -> None:
        """Answers by the run's base model, or by the model whose answers the run scores (``answers_from``,
        local or at ``answers_url``), loaded for this and let go after."""
        config = self.config
        settings = dict(
            output=output, format=config.format, kshot=config.kshot, chat=config.chat, seed=config.seed,
            config=AnswerConfig(max_new_tokens=config.max_new_tokens, samples=samples, seed=config.seed),
            progress=self.progress,
        )  # fmt: skip
        settings.update(options)
        if config.answers_from is not None:
            engine = "openai" if config.answers_url else "hf"
            answer_dataset(
                dataset, model=config.answers_from, engine=engine, base_url=config.answers_url,
                dtype=config.dtype, device=config.device, **settings,
            )  # fmt: skip
            return
        with self._base_model() as loaded:
            answer_dataset(dataset, model=config.model, loaded=loaded, **settings)

    def grade(self) -> None:
        for split in SPLITS:
            records = read_records(self.answers(split))
            if self.writer and any(r.correct is None for r in records):
                grade_file(self.answers(split), progress=self.progress)
        self._synced()

    def records(self, split: str) -> list[Record]:
        path = self.answers(split)
        if not path.exists():
            raise SelfknowError(f"{self.dir}: no {split} answers yet; run the answer stage first")
        records = read_records(path)
        labels(records)  # every record must be graded
        return records

    def fit(self) -> None:
        """Fit each estimator on train (selection on validation), then its temperature and Platt scalers on
        its validation scores, which are stored right away so the score stage does not redo them."""
        train, validation = self._in_family(self.records("train")), self.records("validation")
        fitting = np.array([not held_out(r, self.config.hold_out) for r in validation])
        learned = [name for name in self.config.estimators if name not in CONTROLS]
        if learned and len(set(labels(train))) < 2:
            verdict = "right" if labels(train)[0] else "wrong"
            raise SelfknowError(
                f"{self.dir}: all {len(train)} training answers are {verdict}, so {', '.join(learned)} cannot learn "
                "to tell right from wrong; use more questions, or only the controls (constant, dataset-accuracy)"
            )
        for name in self.config.estimators:
            directory = self.estimator_dir(name)
            if (directory / "scalers.json").exists():
                continue
            estimator = ESTIMATORS[name](**self.config.options.get(name, {}))
            with removed_after_saving(self.context.checkpoints(name) if self.writer else None):
                estimator.fit(train, [r for r, keep in zip(validation, fitting, strict=True) if keep], self.context)
                raw = estimator.score(validation, self.context)  # held-out families too: they choose the best
                y = labels(validation)
                scalers = {
                    method: fit_scaler("temperature" if method == "ts" else "platt", raw[fitting], y[fitting]).to_dict()
                    for method in SCALINGS
                }
                if self.writer:
                    estimator.save(directory)
                    self._store_scores("validation", name, raw, scalers)
                    write_json(directory / "scalers.json", scalers)
                self._synced()

    def _check_families(self, records: list[Record]) -> None:
        """Each held-out family must have questions among ``records``: a misspelt one would hold out nothing."""
        unknown = [f for f in self.config.hold_out if not any(held_out(r, [f]) for r in records)]
        if unknown:
            raise SelfknowError(
                f"{self.dir}: no question of the held-out famil{'ies' if len(unknown) > 1 else 'y'} "
                f"{', '.join(unknown)}; families here: {', '.join(sorted({family(r) for r in records}))}"
            )

    def _in_family(self, records: list[Record]) -> list[Record]:
        """``records`` without the held-out families (runs made before held-out train questions moved to test
        answered them for training)."""
        if not self.config.hold_out:
            return records
        kept = [r for r in records if not held_out(r, self.config.hold_out)]
        if not kept:
            raise SelfknowError(f"{self.dir}: every family is held out; nothing is left to fit on")
        return kept

    def _scored(self, split: str) -> list[Record]:
        path = self.scores(split)
        return read_records(path) if path.exists() else self.records(split)

    def _store_scores(self, split: str, name: str, raw: np.ndarray, scalers: dict[str, Any]) -> None:
        """Add an estimator's raw and scaled confidences to the split's scored records (atomic rewrite)."""
        records = self._scored(split)
        for variant, values in _variants(name, raw, scalers).items():
            for record, value in zip(records, values, strict=True):
                record.confidences[variant] = float(value)
        write_records(self.scores(split), records)

    def load_estimator(self, name: str) -> tuple[Estimator, dict[str, Any]]:
        directory = self.estimator_dir(name)
        if not (directory / "scalers.json").exists():
            raise SelfknowError(f"{self.dir}: estimator '{name}' is not fitted; run the fit stage")
        return Estimator.load(directory), read_json(directory / "scalers.json", "scalers")

    def score(self, splits: Sequence[str] = ("validation", "test")) -> None:
        for split in splits:
            for name in self.config.estimators:
                records = self._scored(split)
                if name in records[0].confidences:
                    continue
                estimator, scalers = self.load_estimator(name)
                start = time.perf_counter()
                raw = estimator.score(records, self.context)
                if self.writer:
                    self._store_scores(split, name, raw, scalers)
                    if split == "test":
                        cost = {"test_records": len(records), "seconds": time.perf_counter() - start}
                        write_json(self.estimator_dir(name) / "cost.json", cost)
                self._synced()

    def costs(self, records: Sequence[Record]) -> dict[str, str]:
        """What each estimator costs per question: the model work it takes, and the time scoring the test
        split took (sampling estimators: their samples were drawn when answering)."""
        out = {}
        for name in self.config.estimators:
            work = ESTIMATORS[name](**self.config.options.get(name, {})).work_per_question(records)
            timing = self.estimator_dir(name) / "cost.json"
            if timing.exists():
                cost = read_json(timing, "scoring cost")
                work += f"; scoring {1000 * cost['seconds'] / cost['test_records']:.1f} ms"
            out[name] = work
        return out

    def abstention(self, name: str, risk: float, delta: float = 0.1) -> AbstentionThreshold:
        """The threshold below which ``name`` (an estimator or a scaled variant such as ``ct+ts``) abstains,
        chosen on the graded validation answers so that the risk among answered questions is at most ``risk``
        with probability 1 − ``delta``."""
        if not self.scores("validation").exists():
            raise SelfknowError(f"{self.dir}: no validation scores yet; run the fit stage")
        validation = read_records(self.scores("validation"))
        if name not in validation[0].confidences:
            raise SelfknowError(
                f"{self.dir}: no validation scores for '{name}'; have {', '.join(validation[0].confidences)}"
            )
        confidence = [r.confidences[name] for r in validation]
        return choose_threshold(confidence, labels(validation), risk, delta)

    def abstention_report(self, risk: float, delta: float = 0.1) -> dict[str, Any]:
        """For every scored confidence: the threshold chosen on validation and the coverage and risk it gives
        on the test split (the check that the guarantee holds), written to evaluation/abstention.json."""
        test = read_records(self.scores("test"))
        correct = labels(test)
        rows = {}
        for name in test[0].confidences:
            chosen = self.abstention(name, risk, delta)
            test_risk, test_coverage = selective_risk([r.confidences[name] for r in test], correct, chosen.threshold)
            rows[name] = {**chosen.to_dict(), "test_coverage": test_coverage}
            rows[name]["test_risk"] = None if math.isnan(test_risk) else test_risk
        summary = {"target_risk": risk, "delta": delta, "test_records": len(test), "estimators": rows}
        out = self.dir / "evaluation" / "abstention.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, summary, default=float, allow_nan=False)
        return summary

    def evaluate(self) -> dict[str, Any] | None:
        if not self.writer:  # metrics need no model: the main process computes and writes them
            return None
        test, validation = read_records(self.scores("test")), read_records(self.scores("validation"))
        names = [n for n in test[0].confidences if n.split("+")[0] in self.config.estimators]
        title = f"{self.config.model} on {self.config.dataset} (test)"
        families = self.config.hold_out
        if not families:
            return self._report(test, self.dir / "evaluation", title, best_on_validation(validation, names))
        # Chosen on questions of families nothing was fitted on: what serves new kinds of question.
        best = best_on_validation([r for r in validation if held_out(r, families)] or validation, names)
        outside = [r for r in test if held_out(r, families)]
        inside = [r for r in test if not held_out(r, families)]
        if not outside or not inside:
            raise SelfknowError(f"{self.dir}: the test split needs questions both of held-out and of other families")
        away = self._report(outside, self.dir / "evaluation" / "out-of-family", f"{title}, held-out families", best)
        return self._report(
            inside, self.dir / "evaluation", f"{title}, families fitted on", best,
            sections=lambda results: [family_table(results, away["metrics"], best)],
            selected_on="validation questions of the held-out families",
            out_of_family={n: {k: away["metrics"][n][k] for k in OUT_OF_FAMILY} for n in names},
        )  # fmt: skip

    def _report(
        self,
        records: Sequence[Record],
        out: Path,
        title: str,
        best: str,
        sections: Callable[[dict[str, Any]], list[str]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Metrics with bootstrap intervals for every confidence the records carry, the report (with
        ``sections(metrics)`` added) and plots."""
        names = list(records[0].confidences)
        correct, groups = labels(records), np.array([r.dataset for r in records])
        tasks = np.array([family(r) for r in records])
        scores = {n: np.array([r.confidences[n] for r in records]) for n in names}
        results = {
            n: evaluate_scores(s, correct, groups, n_boot=self.config.bootstrap, seed=self.config.seed, tasks=tasks)
            for n, s in scores.items()
        }
        summary = {
            "config": asdict(self.config),
            "versions": versions(),
            "records": len(records),
            "best": best,
            **extra,
            "costs": self.costs(records),
            "metrics": results,
        }
        reversed_by_platt = self.reversed_by_platt()
        if reversed_by_platt:
            summary["reversed_by_platt"] = reversed_by_platt
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", summary, default=float)
        write_report(
            out, results, scores, correct, groups, title=title, plotted=_plotted(names, best),
            sections=[*(sections(results) if sections else ()), *_reversal_section(reversed_by_platt)],
            costs=summary["costs"],
        )  # fmt: skip
        return summary

    def reversed_by_platt(self) -> dict[str, float]:
        """Estimators whose Platt scaler has a negative slope, by that slope: on the validation questions
        their raw score ranked answers backwards, so ``name+platt`` ranks them the other way round."""
        out = {}
        for name in self.config.estimators:
            path = self.estimator_dir(name) / "scalers.json"
            if path.exists():
                platt = scaler_from_dict(read_json(path, "scalers")["platt"])
                if platt.a < 0:
                    out[name] = platt.a
        return out

    def transfer(
        self,
        dataset: str,
        *,
        name: str,
        format: str | None = None,
        kshot: int | None = None,
        limit: int | None = None,
        split: str = "test",
    ) -> dict[str, Any] | None:
        """The run's estimators (and their validation-fitted scalers), unchanged, on another dataset's
        answers: how far what was learned carries. Estimators that cannot score that format are listed."""
        config, out = self.config, self.dir / "transfer" / name
        answers, scored = out / "answers.jsonl", out / "scores.jsonl"
        if not answers.exists():
            self._answer(
                dataset, answers, config.samples, split=split, format=format or config.format,
                kshot=config.kshot if kshot is None else kshot, limit=limit,
            )  # fmt: skip
        if self.writer and any(r.correct is None for r in read_records(answers)):
            grade_file(answers, progress=self.progress)
        self._synced()
        records = read_records(scored if scored.exists() else answers)
        skipped: dict[str, str] = {}
        for estimator_name in config.estimators:
            if estimator_name in records[0].confidences:
                continue
            estimator, scalers = self.load_estimator(estimator_name)
            try:
                raw = np.clip(estimator.score(records, self.context), 0.0, 1.0)
            except SelfknowError as err:
                skipped[estimator_name] = str(err)
                continue
            for variant, values in _variants(estimator_name, raw, scalers).items():
                for record, value in zip(records, values, strict=True):
                    record.confidences[variant] = float(value)
            if self.writer:
                write_records(scored, records)
        if not self.writer:
            return None
        best = (
            read_json(self.dir / "evaluation" / "metrics.json", "evaluation")["best"]
            if (self.dir / "evaluation" / "metrics.json").exists()
            else next(iter(records[0].confidences))
        )
        return self._report(
            records,
            out / "evaluation",
            f"{config.model}: trained on {config.dataset}, tested on {dataset}",
            best,
            skipped=skipped,
        )


OUT_OF_FAMILY = ("accuracy", "auroc", "ece", "brier")  # repeated beside the in-family metrics


def _variants(name: str, raw: np.ndarray, scalers: dict[str, Any]) -> dict[str, np.ndarray]:
    raw = np.clip(np.asarray(raw, dtype=float), 0.0, 1.0)
    return {name: raw} | {f"{name}+{m}": scaler_from_dict(s).apply(raw) for m, s in scalers.items()}


def _reversal_section(reversed_by_platt: Mapping[str, float]) -> list[str]:
    if not reversed_by_platt:
        return []
    lines = [
        f"- **{name}**: Platt slope {slope:.2f}; its raw score ranked answers backwards on the validation "
        f"questions, so {name}+platt ranks them the other way round (its AUROC is about 1 minus the raw one)."
        for name, slope in reversed_by_platt.items()
    ]
    return ["## Reversed by Platt scaling", "\n".join(lines)]


def _plotted(names: Sequence[str], best: str) -> list[str]:
    """Plots stay readable with a few lines: the best estimator, the zero-shot query and the controls."""
    keep = {best, "query", "dataset-accuracy", "ct", "ct+ts", "probe"}
    return [n for n in names if n in keep]


def best_on_validation(records: Sequence[Record], names: Sequence[str]) -> str:
    """The estimator (scaling included) with the lowest validation Brier score, controls excluded:
    chosen without looking at the test split."""
    y = labels(records)
    candidates = [n for n in names if n.split("+")[0] not in CONTROLS]
    if not candidates:
        raise SelfknowError("no estimator besides the controls to choose from")
    brier = {n: float(np.mean((np.array([r.confidences[n] for r in records]) - y) ** 2)) for n in candidates}
    return min(brier, key=brier.get)

"""A backtranslation run directory: data → backward model → self-augmentation → self-curation (two iterations)
→ forward models → evaluation. Each stage writes its files as it finishes and skips what is done, so a rerun
resumes (self-augmentation and rating also resume inside the stage, pair by pair).

Layout::

    <run>/config.json                 the settings (a rerun must match them)
    <run>/seed.jsonl, heldout.jsonl   seed pairs for training, and the pairs held out before anything else
    <run>/pool.jsonl, data.json       unlabelled segments after the filters; counts, filter reasons, licences
    <run>/adapters/<name>/            PEFT adapters: backward, forward-0 (seed only), forward-1, forward-2
                                      (seed + curated), forward-uncurated (seed + uncurated candidates)
    <run>/augmented.jsonl             one candidate instruction per segment
    <run>/ratings-<t>.jsonl           candidates rated by forward-<t-1>, parsed and expected readings
    <run>/answers/                    resumable generation journals of every stage
    <run>/training.json, timings.json numbers and seconds per stage
    <run>/evaluation/                 metrics.json, report.md
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from selfknow.backtranslate.augment import Candidate, augment, read_candidates, write_candidates
from selfknow.backtranslate.curate import READINGS, Rating, curated_ids, rate, read_ratings, write_ratings
from selfknow.backtranslate.data import (
    LICENCES,
    Pair,
    Segment,
    debian_faq_pairs,
    debian_package_root,
    factbook_segments,
    filtered,
    hold_out,
    hub_pairs,
    python_doc_segments,
    python_faq_pairs,
    read_pairs,
    read_segments,
    user_pairs,
    user_segments,
    write_pairs,
    write_segments,
)
from selfknow.backtranslate.prompts import ASSISTANT_TAG, RATING_PROMPTS, WEB_TAG
from selfknow.backtranslate.tuning import Example, LoraSettings, backward_rows, forward_rows, train_lora
from selfknow.checkpoints import CHECKPOINTS, removed_after_saving
from selfknow.data.splits import rng_for
from selfknow.errors import DataError, SelfknowError
from selfknow.models import DEFAULT_MODEL, load_model
from selfknow.reading import read_json
from selfknow.stages import read_settings, run_stages, settled_config
from selfknow.writing import place_folder, write_json

STAGES = ("data", "backward", "augment", "curate", "train", "evaluate")
SEED_SOURCES = ("python-faq", "debian-faq")
POOL_SOURCES = ("python-docs", "factbook")
UNCURATED = ("matched", "all")


@dataclass
class BacktranslateConfig:
    model: str = DEFAULT_MODEL
    seed_sources: list[str] = field(default_factory=lambda: list(SEED_SOURCES))  # or user:<jsonl>, hub:<dataset>
    pool_sources: list[str] = field(default_factory=lambda: list(POOL_SOURCES))  # or user:<folder or jsonl>
    held_out: int = 60
    pool_limit: int | None = None  # segments kept (a seeded sample), for small runs
    max_response_tokens: int = 384
    dtype: str = "auto"  # auto: float32 on the CPU, bfloat16 (or float16) on a GPU
    backward: dict[str, Any] = field(default_factory=lambda: LoraSettings(epochs=3.0).to_dict())
    forward: dict[str, Any] = field(default_factory=lambda: LoraSettings(epochs=2.0).to_dict())
    temperature: float = 0.7
    top_p: float = 0.9
    instruction_tokens: int = 64
    rating_tokens: int = 64
    rating_prompt: str = "paper"  # or score-first (RATING_PROMPTS)
    reading: str = "expected"  # the curation reading that selects pairs: expected, parsed or rank
    k: int = 5  # A_5 or A_4
    iterations: int = 2
    uncurated: str = "matched"  # the control's candidates: a random sample as large as A^(T), or "all"
    answer_tokens: int = 192  # forward models' answers in the evaluation
    labelled: int = 250  # pairs in the curation test set (20% real positives)
    seed: int = 0
    bootstrap: int = 1000

    def __post_init__(self) -> None:
        for source in self.seed_sources:
            if source not in SEED_SOURCES and not source.startswith(("user:", "hub:")):
                raise SelfknowError(f"unknown seed source '{source}'; {', '.join(SEED_SOURCES)}, user:<file>, hub:<id>")
        for source in self.pool_sources:
            if source not in POOL_SOURCES and not source.startswith("user:"):
                raise SelfknowError(f"unknown pool source '{source}'; {', '.join(POOL_SOURCES)} or user:<path>")
        if self.rating_prompt not in RATING_PROMPTS:
            raise SelfknowError(f"rating_prompt must be one of {', '.join(RATING_PROMPTS)}")
        if self.reading not in READINGS or self.k not in (4, 5):
            raise SelfknowError(f"reading must be one of {', '.join(READINGS)}, and k 4 or 5")
        if self.uncurated not in UNCURATED:
            raise SelfknowError(f"uncurated must be one of {', '.join(UNCURATED)}")
        if self.iterations < 1:
            raise SelfknowError("iterations must be at least 1")
        if self.held_out < 2:
            raise SelfknowError("held_out must be at least 2: the evaluation is made on the held-out pairs")

    @classmethod
    def from_file(cls, path: Path) -> BacktranslateConfig:
        return cls(**read_settings(path, cls.__dataclass_fields__, "backtranslation run"))


def seed_pairs(source: str) -> list[Pair]:
    if source == "python-faq":
        return python_faq_pairs(debian_package_root("python3.11-doc"))
    if source == "debian-faq":
        return debian_faq_pairs(debian_package_root("debian-faq"))
    if source.startswith("user:"):
        return user_pairs(source.removeprefix("user:"))
    return hub_pairs(source.removeprefix("hub:"))


def pool_segments(source: str) -> list[Segment]:
    if source == "python-docs":
        return python_doc_segments(debian_package_root("python3.11-doc"))
    if source == "factbook":
        return factbook_segments()
    return user_segments(source.removeprefix("user:"))


class BacktranslateRun:
    def __init__(
        self,
        directory: str | Path,
        config: BacktranslateConfig | None = None,
        *,
        progress: bool = True,
        gradient_checkpointing: bool = False,
    ):
        """``gradient_checkpointing`` trades compute for training memory (:func:`selfknow.sft.fit`); it is not
        a setting of the run, since the trained adapters are the same either way."""
        self.dir, self.progress, self.gradient_checkpointing = Path(directory), progress, gradient_checkpointing
        self.config = settled_config(self.dir, config, BacktranslateConfig.from_file, "a backtranslation run")
        self._model = None

    def run(self, stages=STAGES) -> dict[str, Any] | None:
        return run_stages(self, stages, STAGES)

    def _record(self, name: str, key: str, value: Any) -> None:
        path = self.dir / name
        numbers = read_json(path, "run numbers") if path.exists() else {}
        numbers[key] = value
        write_json(path, numbers, default=float)

    def _timed(self, stage: str, start: float) -> None:
        self._record("timings.json", stage, round(time.perf_counter() - start, 1))

    def base(self):
        """The base model and tokenizer, loaded once per run object (adapters go on and come off it)."""
        if self._model is None:
            self._model = load_model(self.config.model, dtype=self.config.dtype)
            self._model[1].padding_side = "left"
        return self._model

    # ------------------------------------------------------------------------------------------------ data

    def data(self) -> None:
        if (self.dir / "data.json").exists():
            return
        pairs = [p for source in self.config.seed_sources for p in seed_pairs(source)]
        if len(pairs) <= self.config.held_out:
            raise DataError(f"{len(pairs)} seed pairs cannot spare {self.config.held_out} for the held-out set")
        train, held = hold_out(pairs, self.config.held_out, self.config.seed)
        segments = [s for source in self.config.pool_sources for s in pool_segments(source)]
        kept, dropped = filtered(segments)
        if self.config.pool_limit is not None:
            kept = sorted(kept, key=lambda s: rng_for(self.config.seed, "pool", s.id).random())[
                : self.config.pool_limit
            ]
        if not kept:
            raise DataError("no unlabelled segments are left after the filters")
        write_pairs(self.dir / "seed.jsonl", train)
        write_pairs(self.dir / "heldout.jsonl", held)
        write_segments(self.dir / "pool.jsonl", kept)
        sources = {p.source for p in pairs} | {s.source for s in kept}
        summary = {
            "seed pairs": dict(Counter(p.source for p in train)),
            "held-out pairs": len(held),
            "segments before filters": dict(Counter(s.source for s in segments)),
            "segments dropped": dict(dropped),
            "pool segments": dict(Counter(s.source for s in kept)),
            "licences": {s: LICENCES[s] for s in sorted(sources) if s in LICENCES},
        }
        write_json(self.dir / "data.json", summary)

    def seed(self) -> list[Pair]:
        return read_pairs(self.dir / "seed.jsonl")

    def heldout(self) -> list[Pair]:
        return read_pairs(self.dir / "heldout.jsonl")

    def pool(self) -> list[Segment]:
        return read_segments(self.dir / "pool.jsonl")

    # ------------------------------------------------------------------------------------------- adapters

    def adapter(self, name: str) -> Path:
        return self.dir / "adapters" / name

    def _train(self, name: str, rows, settings: dict[str, Any]) -> None:
        """Train and save adapter ``name`` from the base model, unless it exists."""
        if (self.adapter(name) / "adapter_config.json").exists():
            return
        model, tokenizer = self.base()
        lora = LoraSettings(**{**settings, "targets": tuple(settings["targets"]), "seed": self.config.seed})
        with removed_after_saving(self.dir / CHECKPOINTS / name) as checkpoints:
            peft_model, numbers = train_lora(
                model, tokenizer, rows, lora, progress=self.progress, checkpoints=checkpoints,
                gradient_checkpointing=self.gradient_checkpointing,
            )  # fmt: skip
            self._record("training.json", name, numbers)  # before the adapter, whose presence marks the stage done
            with tempfile.TemporaryDirectory(dir=self.dir) as scratch:
                peft_model.save_pretrained(scratch)
                place_folder(scratch, self.adapter(name))
        self._model = (peft_model.unload(), tokenizer)

    def with_adapter(self, name: str):
        """The base model with adapter ``name`` on, and the tokenizer; ``.unload()`` the model when done."""
        from peft import PeftModel

        if not (self.adapter(name) / "adapter_config.json").exists():
            raise SelfknowError(f"{self.dir}: adapter '{name}' is not trained yet")
        model, tokenizer = self.base()
        return PeftModel.from_pretrained(model, str(self.adapter(name))).eval(), tokenizer

    def _release(self, peft_model) -> None:
        self._model = (peft_model.unload(), self._model[1])

    # ------------------------------------------------------------------------------ backward + augmentation

    def backward(self) -> None:
        if (self.adapter("backward") / "adapter_config.json").exists():
            return
        start = time.perf_counter()
        _, tokenizer = self.base()
        pairs = [(p.instruction, p.output) for p in self.seed()]
        self._train("backward", backward_rows(tokenizer, pairs, self.config.max_response_tokens), self.config.backward)
        self._timed("backward", start)

    def augment(self) -> None:
        path = self.dir / "augmented.jsonl"
        if path.exists():
            return
        start = time.perf_counter()
        model, tokenizer = self.with_adapter("backward")
        candidates, stats = augment(
            model, tokenizer, self.pool(), self.dir / "answers" / "augment.jsonl",
            max_response_tokens=self.config.max_response_tokens, max_new_tokens=self.config.instruction_tokens,
            temperature=self.config.temperature, top_p=self.config.top_p, seed=self.config.seed,
            progress=self.progress,
        )  # fmt: skip
        self._release(model)
        empty = sum(not c.instruction for c in candidates)
        write_candidates(path, [c for c in candidates if c.instruction])
        self._record("training.json", "augment", {"candidates": len(candidates), "empty instructions": empty,
                                                  **_stats(stats)})  # fmt: skip
        self._timed("augment", start)

    def candidates(self) -> list[Candidate]:
        return read_candidates(self.dir / "augmented.jsonl")

    # ------------------------------------------------------------------------------------ curation + models

    def forward_examples(self, extra: list[Candidate]) -> list[Example]:
        seed = [Example(p.instruction, p.output, (ASSISTANT_TAG,)) for p in self.seed()]
        return seed + [Example(c.instruction, c.output, (WEB_TAG,)) for c in extra]

    def _train_forward(self, name: str, extra: list[Candidate]) -> None:
        _, tokenizer = self.base()
        rows = forward_rows(tokenizer, self.forward_examples(extra), self.config.max_response_tokens)
        self._train(name, rows, self.config.forward)

    def curated(self, iteration: int) -> list[Candidate]:
        """A_k^(iteration): the candidates that forward-<iteration-1> rated at least k."""
        keep = set(curated_ids(self.ratings(iteration), self.config.reading, self.config.k))
        return [c for c in self.candidates() if c.id in keep]

    def curated_for_training(self, iteration: int) -> list[Candidate]:
        """A_k^(iteration) to train the next model on. An empty set is an error, not a model trained on the seed
        alone again (a small model's expected scores seldom reach the paper's 4.5); the ratings are kept."""
        curated = self.curated(iteration)
        if not curated:
            ratings = self.ratings(iteration)
            best = max(r.expected for r in ratings)
            parsed = sum(r.parsed is not None for r in ratings)
            raise SelfknowError(
                f"{self.dir / f'ratings-{iteration}.jsonl'}: the '{self.config.reading}' reading keeps none of "
                f"{len(ratings)} candidates in A_{self.config.k} (highest expected score {best:.2f}, {parsed} "
                f'parsed scores); the ratings are kept: set "reading": "rank" in {self.dir / "config.json"} '
                "and rerun with --reading rank"
            )
        return curated

    def ratings(self, iteration: int) -> list[Rating]:
        return read_ratings(self.dir / f"ratings-{iteration}.jsonl")

    def curate(self) -> None:
        """For t = 1..iterations: train forward-<t-1> (seed only, then seed + A^(t-1)) and rate every candidate
        with it."""
        for t in range(1, self.config.iterations + 1):
            path = self.dir / f"ratings-{t}.jsonl"
            if path.exists():
                continue
            start = time.perf_counter()
            self._train_forward(f"forward-{t - 1}", self.curated_for_training(t - 1) if t > 1 else [])
            model, tokenizer = self.with_adapter(f"forward-{t - 1}")
            pairs = [(c.id, c.instruction, c.output) for c in self.candidates()]
            ratings, stats = rate(
                model, tokenizer, pairs, self.dir / "answers" / f"ratings-{t}.jsonl",
                max_new_tokens=self.config.rating_tokens, prompt=self.config.rating_prompt, progress=self.progress,
            )  # fmt: skip
            self._release(model)
            write_ratings(path, ratings)
            self._record("training.json", f"rating-{t}", _stats(stats))
            self._timed(f"curate-{t}", start)

    def uncurated(self) -> list[Candidate]:
        """The control's candidates, chosen without ratings: a seeded random sample as large as A^(T), so that
        it differs from the curated model in how its pairs were chosen and not in how many (the paper's
        curated/uncurated comparison at equal size), or every candidate."""
        candidates = self.candidates()
        if self.config.uncurated == "all":
            return candidates
        size = len(self.curated(self.config.iterations))
        return sorted(candidates, key=lambda c: rng_for(self.config.seed, "uncurated", c.id).random())[:size]

    def train(self) -> None:
        """The final model (seed + A^(T)) and the control trained on seed + uncurated candidates."""
        final = self.config.iterations
        names = (f"forward-{final}", "forward-uncurated")
        if all((self.adapter(n) / "adapter_config.json").exists() for n in names):
            return
        start = time.perf_counter()
        self._train_forward(f"forward-{final}", self.curated_for_training(final))
        self._train_forward("forward-uncurated", self.uncurated())
        self._timed("train", start)

    def evaluate(self) -> dict[str, Any]:
        from selfknow.backtranslate.evaluation import evaluate_run

        start = time.perf_counter()
        summary = evaluate_run(self)
        self._timed("evaluate", start)
        return summary


def _stats(stats) -> dict[str, Any]:
    numbers = asdict(stats)
    numbers.pop("per_prefix", None)
    return numbers

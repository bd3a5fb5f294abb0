"""An ELK run directory: quirky data → quirky model → features → probes and anomaly detection.

Stages write their outputs as they finish, so a rerun resumes at the first missing one:

- ``data``: ``data/examples.jsonl``, the quirky dataset with its splits (no statement in two splits);
- ``train``: ``adapter/`` (PEFT format), ``training.json`` with the model's agreement with each
  character's labels in each context on the held-out test split;
- ``extract``: ``features/{validation,test}.safetensors``, the quirky model's hidden states at the last
  prompt token (every layer), at each answer token appended (contrast pairs) and its log-odds, saved in
  parts as the pass goes (the base pass that training starts from is too, so a kill redoes one part);
- ``evaluate``: ``evaluation/metrics.json``, ``report.md`` and ``auroc_by_layer.png``.

Probes are fit on the validation split's Alice-easy examples with Alice's labels and tested on the test
split's populations (AE, AH, BH), against both characters' labels (Mallen & Belrose's AE → BH).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from selfknow.batching import part_rows
from selfknow.checkpoints import CHECKPOINTS, computed_in_parts, part_ranges, removed_after_saving
from selfknow.confidence.base import Context
from selfknow.confidence.features import forward_queries
from selfknow.confidence.tuning import TuningConfig, num_layers
from selfknow.elk.evaluation import evaluate_probes
from selfknow.elk.quirky import QuirkyExample, balance, quirky_dataset, read_jsonl, select, write_jsonl
from selfknow.elk.report import write_elk_report
from selfknow.elk.training import agreement, encode, train_quirky
from selfknow.errors import SelfknowError
from selfknow.reading import read_json
from selfknow.stages import read_settings, run_stages, settled_config
from selfknow.writing import place_folder, save_tensors, write_json

STAGES = ("data", "train", "extract", "evaluate")
ADAPTER = "quirky"


@dataclass
class ElkConfig:
    model: str = "smollm2"
    dataset: str = "addition"  # or "populations"
    template: str = "grader_last"  # grader_first, mixture, ...
    statements: int | None = 8000  # base statements (each shown to Alice and to Bob); None: the dataset's all
    max_digits: int = 4  # addition: operands log-uniform below 10^(max_digits + 1)
    fractions: tuple[float, float, float] = (0.5, 0.25, 0.25)  # train (fine-tuning) / validation (probes) / test
    seed: int = 633
    training: dict[str, Any] = field(
        default_factory=lambda: {"top_layers": 12, "epochs": 3, "lr": [1e-3, 2e-4], "batch_size": 16, "dropout": 0.0}
    )  # a list is a sweep: each value is trained and validation NLL chooses
    methods: list[str] = field(default_factory=lambda: ["lr", "dim", "lda", "lr-pair", "ccs", "crc"])
    bootstrap: int = 1000
    dtype: str = "auto"  # auto: float32 on the CPU, bfloat16 (or float16) on a GPU

    @classmethod
    def from_file(cls, path: Path) -> ElkConfig:
        data = read_settings(path, cls.__dataclass_fields__, "ELK run")
        if "fractions" in data:
            data["fractions"] = tuple(data["fractions"])
        return cls(**data)


class ElkRun:
    def __init__(self, directory: str | Path, config: ElkConfig | None = None, *, progress: bool = True):
        self.dir, self.progress = Path(directory), progress
        self.config = settled_config(self.dir, config, ElkConfig.from_file, "an ELK run")

    @cached_property
    def context(self) -> Context:
        return Context(self.config.model, seed=self.config.seed, dtype=self.config.dtype, progress=self.progress)

    def run(self, stages: tuple[str, ...] | list[str] = STAGES) -> dict[str, Any] | None:
        return run_stages(self, stages, STAGES)

    @property
    def examples_path(self) -> Path:
        return self.dir / "data" / "examples.jsonl"

    def examples(self) -> list[QuirkyExample]:
        if not self.examples_path.exists():
            raise SelfknowError(f"{self.dir}: no data yet; run the data stage")
        return read_jsonl(self.examples_path)

    def data(self) -> None:
        if self.examples_path.exists():
            return
        config = self.config
        examples = quirky_dataset(
            config.dataset, config.template, config.statements, config.seed, config.fractions, config.max_digits
        )
        self.examples_path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(self.examples_path, examples)

    def candidates(self) -> list[dict[str, Any]]:
        """The training settings to try, in order: every combination of the values given as lists (a sweep
        chosen on validation NLL); one setting when none is."""
        values = [v if isinstance(v, list) else [v] for v in self.config.training.values()]
        return [dict(zip(self.config.training, combo, strict=True)) for combo in itertools.product(*values)]

    def tuning(self, settings: dict[str, Any]) -> TuningConfig:
        return TuningConfig(**{"seed": self.config.seed, **settings, "regularizer": "none"})

    def quirky_model(self):
        """The model with the trained quirky adapter on."""
        return self.context.attach_adapter(ADAPTER, directory=self.dir / "adapter")

    def train(self) -> dict[str, Any]:
        """Train each candidate setting, keep the one with the lowest validation NLL (a learning rate right for
        a 135M model collapses a 1.5B one to a constant answer), and record every candidate's numbers."""
        report = self.dir / "training.json"
        if report.exists():
            return read_json(report, "training numbers")
        examples = self.examples()
        train = balance(select(examples, split="train"), seed=42)
        validation = balance(select(examples, split="validation"), seed=42)
        with removed_after_saving(self.dir / CHECKPOINTS) as checkpoints:
            assert checkpoints is not None
            tried = [
                self._train_candidate(index, settings, train, validation, checkpoints)
                for index, settings in enumerate(self.candidates())
            ]
            best = min(range(len(tried)), key=lambda i: tried[i]["best_validation_nll"])
            with tempfile.TemporaryDirectory(dir=self.dir) as scratch:
                shutil.copytree(checkpoints / f"candidate-{best}" / "adapter", Path(scratch) / "adapter")
                place_folder(Path(scratch) / "adapter", self.dir / "adapter")
            self._extract("test", examples)  # the model's answers come with the test features: one pass for both
            ids, arrays = self.load_features("test")
            by_id = {e.id: e for e in examples}
            numbers = {
                **tried[best],
                "train_examples": len(train),
                "agreement_on_test": agreement(arrays["log_odds"], [by_id[i] for i in ids]),
                "candidates": tried,
            }
            write_json(report, numbers)
        return numbers

    def _train_candidate(
        self,
        index: int,
        settings: dict[str, Any],
        train: list[QuirkyExample],
        validation: list[QuirkyExample],
        checkpoints: Path,
    ) -> dict[str, Any]:
        """One candidate's adapter and numbers, kept in its own checkpoint folder so a kill during a later
        candidate does not train it again; the base pass's parts are shared by candidates that tune the same
        layers."""
        folder = checkpoints / f"candidate-{index}"
        done = folder / "numbers.json"
        if done.exists():
            return read_json(done, "a candidate's training numbers")
        name = f"{ADAPTER}-{index}"
        lora = self.tuning(settings).lora(num_layers(self.context.model))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)  # every candidate starts from the same initialisation
            peft_model = self.context.attach_adapter(name, lora)
        numbers = train_quirky(
            peft_model, name, self.context.tokenizer, train, validation, self.tuning(settings),
            progress=self.progress, cache=checkpoints, checkpoints=folder / "trainer",
        )  # fmt: skip
        with tempfile.TemporaryDirectory(dir=self.dir) as scratch:
            peft_model.save_pretrained(scratch, selected_adapters=[name])
            saved = Path(scratch) / name if (Path(scratch) / name).exists() else Path(scratch)
            place_folder(saved, folder / "adapter")
        numbers = {"settings": settings, **numbers}
        write_json(done, numbers)
        shutil.rmtree(folder / "trainer", ignore_errors=True)
        return numbers

    def features_path(self, split: str) -> Path:
        return self.dir / "features" / f"{split}.safetensors"

    def extract(self) -> None:
        examples = self.examples()
        for split in ("validation", "test"):
            self._extract(split, examples)

    def _extract(self, split: str, examples: list[QuirkyExample]) -> None:
        """The quirky model's features on one split: last-token states, contrast pairs and its log-odds.
        Saved in parts as the pass goes (keyed by the adapter's weights and the examples), so a killed
        extraction redoes one part; the parts go once the split's file is written."""
        path = self.features_path(split)
        if path.exists():
            return
        chosen = select(examples, split=split)
        encoded = encode(chosen, self.context.tokenizer)
        model = self.quirky_model()
        ranges = part_ranges(len(chosen), part_rows(model))
        adapter = hashlib.sha256((self.dir / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()

        def key(part: range) -> str:
            return hashlib.sha256(json.dumps([adapter, [chosen[i].id for i in part]]).encode()).hexdigest()[:16]

        def compute(part: range) -> dict[str, torch.Tensor]:
            features = forward_queries(
                model,
                self.context.tokenizer,
                [encoded.queries[i] for i in part],
                hidden=True,
                contrast=True,
                options=[encoded.options[i] for i in part],
                progress=self.progress,
            )
            return {
                "hidden": features.hidden[:, 1:],  # the embeddings carry no answer
                "contrast": features.contrast[:, 1:],
                "log_odds": features.option_logits[:, 1] - features.option_logits[:, 0],
            }

        with removed_after_saving(path.parent / f"{split}-parts") as folder:
            parts = computed_in_parts(
                folder, split, ranges, key, compute, description=f"{split} features", progress=self.progress
            )
            tensors = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
            save_tensors(path, tensors, metadata={"ids": json.dumps([e.id for e in chosen])})

    def load_features(self, split: str) -> tuple[list[str], dict[str, np.ndarray]]:
        path = self.features_path(split)
        if not path.exists():
            raise SelfknowError(f"{self.dir}: no {split} features yet; run the extract stage")
        with safe_open(str(path), "pt") as f:
            ids = json.loads(f.metadata()["ids"])
        return ids, {k: v.float().numpy() for k, v in load_file(path).items()}

    def evaluate(self) -> dict[str, Any]:
        examples = self.examples()
        splits = {split: self.load_features(split) for split in ("validation", "test")}
        summary = evaluate_probes(examples, splits, self.config.methods, self.config.bootstrap, self.config.seed)
        training = self.dir / "training.json"
        summary["config"] = asdict(self.config)
        if training.exists():
            summary["training"] = read_json(training, "training numbers")
        out = self.dir / "evaluation"
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "metrics.json", summary, default=float)
        write_elk_report(out, summary)
        return summary

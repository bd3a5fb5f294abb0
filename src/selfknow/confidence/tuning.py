"""Calibration tuning: LoRA trained so the uncertainty query's answer is a calibrated P(correct).

Loss per batch (Kapoor et al. 2024; spec §8)::

    loss = CE(option logits, grade) + w · Σ_answer positions D(base ‖ tuned) / batch size

where D is the Jensen-Shannon divergence by default (forward or reverse KL as options) between the
base model's and the tuned model's next-token distributions at the positions that predict the answer
tokens inside the query text. That keeps the tuned model's view of the answer close to the base
model's, so the query reads the model's own knowledge. The base distribution never changes, so it is
computed once, as its top-k probabilities plus the remaining mass, in the same pass that caches the
frozen lower layers' activations: the regularizer costs no second base-model pass.

With ``top_layers=k`` LoRA sits on the top k layers only; the activations entering layer N-k are
computed once (they cannot change) and training runs the top k layers alone. The loss is a
``transformers.Trainer.compute_loss`` override, so ``accelerate launch`` runs it on several processes.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.utils import gather_object
from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from selfknow.batching import make_batches, part_rows, pass_limits
from selfknow.checkpoints import (
    CheckpointedTrainer,
    computed_in_parts,
    part_ranges,
    train_resuming,
    training_folder,
)
from selfknow.confidence.query import QueryText, option_ids
from selfknow.distributed import process_state
from selfknow.engine import left_pad
from selfknow.models import adapters_off, input_device
from selfknow.progress import token_progress

REGULARIZERS = ("jsd", "forward_kl", "reverse_kl", "none")


@dataclass
class TuningConfig:
    """Settings of one tuning run (LoRA, optimisation, regularizer); saved with the adapter."""

    top_layers: int | None = 10  # LoRA on the top k layers, lower activations cached; None: every layer
    rank: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 16
    regularizer: str = "jsd"
    kl_weight: float = 1.0
    kl_topk: int = 16
    head: str = "query"  # "query": calibration tuning; "probe": LoRA + an MLP head on the last hidden state
    seed: int = 0

    def __post_init__(self) -> None:
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {self.regularizer!r}")

    def lora(self, num_layers: int) -> LoraConfig:
        start = 0 if self.top_layers is None else max(num_layers - self.top_layers, 0)
        layers = list(range(start, num_layers)) if start else None
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            layers_to_transform=layers,
            layers_pattern="layers" if layers else None,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def num_layers(model) -> int:
    return model.config.get_text_config().num_hidden_layers


def start_layer(model, config: TuningConfig) -> int:
    """The first tuned layer (a ``top_layers`` above the model's depth tunes every layer)."""
    return 0 if config.top_layers is None else max(num_layers(model) - config.top_layers, 0)


def output_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on some hidden states, with the final soft-capping models like Gemma 2 apply."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


class _Passthrough(nn.Module):
    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


@contextlib.contextmanager
def lower_layers_skipped(decoder: nn.Module, start: int) -> Iterator[None]:
    """Inside the block the decoder's first ``start`` layers pass their input through, so activations
    cached at layer ``start`` can be fed as ``inputs_embeds``. The layer list keeps its length, so
    per-layer settings (sliding or global attention) stay where they were."""
    layers = decoder.layers
    decoder.layers = nn.ModuleList([_Passthrough() for _ in range(start)] + list(layers[start:]))
    try:
        yield
    finally:
        decoder.layers = layers


class CalibrationModel(nn.Module):
    """What the Trainer trains: the PEFT model (adapters inside) plus an optional probe head.

    Forward takes either token ids (full model) or activations cached at ``start`` (top layers only),
    and returns the two option logits (or the head's logits) at the last position and the
    log-probabilities at the answer positions given as (row, column) pairs.
    """

    def __init__(self, peft_model, start: int, options: tuple[int, int], head: nn.Module | None = None):
        super().__init__()
        device = input_device(peft_model)
        self.peft_model, self.start, self.head = peft_model, start, None if head is None else head.to(device)
        self.register_buffer("options", torch.tensor(options, device=device), persistent=False)

    def forward(
        self, attention_mask, position_ids, answer_rows, answer_cols, input_ids=None, hidden=None, options=None, **_
    ):
        causal_lm = self.peft_model.get_base_model()
        decoder = causal_lm.get_decoder()
        if hidden is None:
            states = decoder(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state
        else:
            with lower_layers_skipped(decoder, self.start):
                states = decoder(
                    inputs_embeds=hidden, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
                ).last_hidden_state
        last = states[:, -1]
        if self.head is not None:  # the head keeps float32 weights whatever the model's dtype
            head = self.head(last.to(self.options.device, torch.float32))
        elif options is not None:  # each row's own pair of option tokens
            head = output_logits(causal_lm, last).gather(1, options.to(last.device))
        else:
            head = output_logits(causal_lm, last)[:, self.options.to(last.device)]
        answer = output_logits(causal_lm, states[answer_rows, answer_cols]).float().log_softmax(-1)
        return {"option_logits": head.float(), "answer_logprobs": answer}


def divergence(tuned_logprobs, base_ids, base_logprobs, kind: str) -> torch.Tensor:
    """Per-position divergence between the base distribution, known as its top-k probabilities plus
    the remaining mass, and the tuned distribution collapsed onto the same k + 1 outcomes."""
    q_top = base_logprobs.exp()
    q = torch.cat([q_top, (1 - q_top.sum(-1, keepdim=True)).clamp(min=0)], -1).clamp(min=1e-12)
    p_top = tuned_logprobs.gather(-1, base_ids).exp()
    p = torch.cat([p_top, (1 - p_top.sum(-1, keepdim=True)).clamp(min=0)], -1).clamp(min=1e-12)

    def kl(a, b):
        return (a * (a.log() - b.log())).sum(-1)

    if kind == "forward_kl":
        return kl(q, p)
    if kind == "reverse_kl":
        return kl(p, q)
    m = (p + q) / 2
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


class CachedQueries(torch.utils.data.Dataset):
    """Tensors per query: cached activations (or ids), the grade, and the base top-k at answer positions."""

    def __init__(self, items: list[dict[str, torch.Tensor]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.items[index]

    def lengths(self) -> list[int]:
        return [len(item["positions"]) for item in self.items]


class LengthGroupedBatches(LengthGroupedSampler):
    """Batches of queries of similar length (transformers' grouping), in an order drawn from the seed and the
    epoch. A batch pads to its longest query: random batches of 300 MMLU queries computed 1.83x their tokens,
    these 1.43x (``bench/tuning_throughput.py``). The grouping alone would run each epoch from the longest
    batch to the shortest; the drawn order does not, and a resumed training sees the batches an uninterrupted
    one saw."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        indices = get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)
        batches = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        return iter([i for b in torch.randperm(len(batches), generator=generator).tolist() for i in batches[b]])


def collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Left-pad to the longest row; answer positions shift by each row's padding."""
    width = max(len(item["positions"]) for item in items)
    mask = torch.zeros(len(items), width, dtype=torch.long)
    for row, item in enumerate(items):
        mask[row, width - len(item["positions"]) :] = 1
    batch: dict[str, torch.Tensor] = {"attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
    key = "hidden" if "hidden" in items[0] else "input_ids"
    first = items[0][key]
    padded = first.new_zeros(len(items), width, *first.shape[1:])
    for row, item in enumerate(items):
        padded[row, width - len(item[key]) :] = item[key]
    batch[key] = padded
    rows, cols = [], []
    for row, item in enumerate(items):
        offset = width - len(item["positions"])
        cols += (item["answer_positions"] + offset).tolist()
        rows += [row] * len(item["answer_positions"])
    batch["answer_rows"], batch["answer_cols"] = (
        torch.tensor(rows, dtype=torch.long),
        torch.tensor(cols, dtype=torch.long),
    )
    batch["labels"] = torch.stack([item["label"] for item in items])
    if "options" in items[0]:
        batch["options"] = torch.stack([item["options"] for item in items])
    batch["base_ids"] = torch.cat([item["base_ids"] for item in items])
    batch["base_logprobs"] = torch.cat([item["base_logprobs"] for item in items])
    return batch


@torch.inference_mode()
def cache_queries(
    model,
    tokenizer,
    queries: Sequence[QueryText],
    grades: Sequence[float],
    config: TuningConfig,
    *,
    options: Sequence[tuple[int, int]] | None = None,
    progress: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """One base-model pass over the queries: each process caches its share of the activations at the
    first tuned layer and the base top-k at the answer positions; the shares are then gathered.
    ``options`` gives each query its own (negative, positive) answer tokens instead of the shared pair."""
    state = process_state()
    start = start_layer(model, config)
    device = input_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    mine = list(range(state.process_index, len(queries), state.num_processes))
    lengths = [len(queries[i].ids) for i in mine]
    items: dict[int, dict[str, torch.Tensor]] = {}
    max_rows, max_tokens = pass_limits(model, keep_cache=False, all_hidden=True)
    with adapters_off(model), token_progress(len(mine), "caching activations", progress) as bar:
        for batch in make_batches(range(len(mine)), lengths, max_rows=max_rows, max_tokens=max_tokens):
            index = [mine[j] for j in batch.rows]
            ids, mask = left_pad([queries[i].ids for i in index], batch.width, pad, device)
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                output_hidden_states=True,
                logits_to_keep=1,
            )
            for row, i in enumerate(index):
                query, n = queries[i], len(queries[i].ids)
                offset = batch.width - n
                answer = torch.arange(max(query.answer_start - 1, 0), max(query.answer_end - 1, 0))
                final = out.hidden_states[-1][row, offset + answer]
                top = output_logits(model, final).float().log_softmax(-1).topk(config.kl_topk, dim=-1)
                item = {
                    "positions": torch.arange(n),
                    "answer_positions": answer,
                    "label": torch.tensor(int(grades[i])),
                    "base_ids": top.indices.cpu(),
                    "base_logprobs": top.values.cpu(),
                }
                if options is not None:
                    item["options"] = torch.tensor(options[i])
                if config.top_layers is None:
                    item["input_ids"] = torch.tensor(query.ids)
                else:
                    item["hidden"] = out.hidden_states[start][row, offset:].cpu()  # the model's dtype
                items[i] = item
            bar.advance(len(index), sum(len(queries[i].ids) for i in index))
    if state.num_processes > 1:
        for part in gather_object([items]):
            items.update(part)
    return [items[i] for i in range(len(queries))]


def cache_queries_in_parts(
    model,
    tokenizer,
    queries: Sequence[QueryText],
    grades: Sequence[float],
    config: TuningConfig,
    folder: Path | None,
    *,
    options: Sequence[tuple[int, int]] | None = None,
    progress: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """:func:`cache_queries`, saved to ``folder`` in parts of two passes' rows as it goes (a killed training
    then redoes one part of the base pass, not all of it, before resuming from its checkpoint)."""
    size = part_rows(model)
    ranges = part_ranges(len(queries), size)
    setting = [getattr(model.config, "_name_or_path", ""), config.top_layers, config.kl_topk]

    def key(part: range) -> str:
        digest = hashlib.sha256(json.dumps(setting).encode())
        for i in part:
            q = queries[i]
            chosen = None if options is None else list(options[i])
            digest.update(json.dumps([q.ids, q.answer_start, q.answer_end, float(grades[i]), chosen]).encode())
        return digest.hexdigest()[:16]

    def compute(part: range) -> dict[str, torch.Tensor]:
        items = cache_queries(
            model,
            tokenizer,
            [queries[i] for i in part],
            [grades[i] for i in part],
            config,
            options=None if options is None else [options[i] for i in part],
            progress=progress,
        )
        return {f"{row}.{name}": value for row, item in enumerate(items) for name, value in item.items()}

    items = []
    parts = computed_in_parts(
        folder, "activations", ranges, key, compute, description="caching activations", progress=progress
    )
    for flat in parts:
        rows: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in flat.items():
            row, field_name = name.split(".", 1)
            rows.setdefault(int(row), {})[field_name] = value
        items += [rows[row] for row in range(len(rows))]
    return items


class CalibrationTrainer(CheckpointedTrainer):
    """The calibration loss as a ``compute_loss`` override (cross-entropy + weighted divergence)."""

    def __init__(self, *args, tuning: TuningConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.tuning = tuning

    def _get_train_sampler(self, train_dataset=None):
        """Grouped by the batch of one optimizer step over all processes, which accelerate deals out to them in
        turn, so that N processes train on the batches of one process at N times the batch size."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        size = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        return LengthGroupedBatches(size, dataset.lengths(), self.args.seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        base_ids, base_logprobs = inputs.pop("base_ids"), inputs.pop("base_logprobs")
        outputs = model(**inputs)
        loss = F.cross_entropy(outputs["option_logits"], labels)
        if self.tuning.regularizer != "none" and self.tuning.kl_weight > 0 and len(base_ids):
            per_position = divergence(outputs["answer_logprobs"], base_ids, base_logprobs, self.tuning.regularizer)
            loss = loss + self.tuning.kl_weight * per_position.sum() / len(labels)
        return (loss, outputs) if return_outputs else loss


class _QuietProgress(ProgressCallback):
    """The training progress bar without the raw log dictionaries it prints every ``logging_steps``."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


class _KeepBest(TrainerCallback):
    """After each epoch, score the validation queries and keep the trainable weights with the lowest NLL."""

    def __init__(self, calibration: CalibrationModel, validation: CachedQueries, adapter: str, batch_size: int):
        self.calibration, self.validation, self.adapter, self.batch_size = calibration, validation, adapter, batch_size
        self.best_nll, self.best_state, self.history = math.inf, None, []

    def on_epoch_end(self, args, state, control, **kwargs):
        nll = validation_nll(self.calibration, self.validation, self.batch_size)
        self.history.append(nll)
        if nll < self.best_nll:
            self.best_nll = nll
            self.best_state = (
                copy.deepcopy(get_peft_model_state_dict(self.calibration.peft_model, adapter_name=self.adapter)),
                copy.deepcopy(self.calibration.head.state_dict()) if self.calibration.head else None,
            )

    def save_state(self, folder: Path) -> None:
        """The best epoch so far and the validation history, into a checkpoint (so a resumed run keeps them)."""
        (folder / "keep_best.json").write_text(json.dumps({"best_nll": self.best_nll, "history": self.history}))
        if self.best_state is not None:
            adapter, head = self.best_state
            tensors = {f"adapter.{k}": v for k, v in adapter.items()}
            tensors |= {f"head.{k}": v for k, v in (head or {}).items()}
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, folder / "keep_best.safetensors")

    def load_state(self, folder: Path) -> None:
        saved = json.loads((folder / "keep_best.json").read_text())
        self.best_nll, self.history = saved["best_nll"], saved["history"]
        if (folder / "keep_best.safetensors").exists():
            tensors = load_file(folder / "keep_best.safetensors")
            adapter = {k.removeprefix("adapter."): v for k, v in tensors.items() if k.startswith("adapter.")}
            head = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
            self.best_state = (adapter, head if self.calibration.head is not None else None)

    def restore(self) -> None:
        if self.best_state is not None:
            set_peft_model_state_dict(self.calibration.peft_model, self.best_state[0], adapter_name=self.adapter)
            if self.calibration.head is not None:
                self.calibration.head.load_state_dict(self.best_state[1])


@torch.no_grad()
def validation_nll(calibration: CalibrationModel, data: CachedQueries, batch_size: int) -> float:
    was_training = calibration.training
    calibration.eval()
    device = calibration.options.device
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
        labels = batch.pop("labels").to(device)
        batch.pop("base_ids"), batch.pop("base_logprobs")
        logits = calibration(**{k: v.to(device) for k, v in batch.items()})["option_logits"]
        total += float(F.cross_entropy(logits, labels, reduction="sum"))
        count += len(labels)
    calibration.train(was_training)
    return total / max(count, 1)


def make_head(hidden_size: int) -> nn.Module:
    """The reference's probe head (spec §9), Xavier-initialised: d-256-128-64-2 with ReLUs."""
    sizes = [hidden_size, 256, 128, 64, 2]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        linear = nn.Linear(a, b)
        nn.init.xavier_normal_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers += [linear] if i == len(sizes) - 2 else [linear, nn.ReLU()]
    return nn.Sequential(*layers)


def training_arguments(
    output_dir: str, batch_size: int, epochs: float, lr: float, seed: int, progress: bool, model, **overrides
) -> TrainingArguments:
    """The settings every selfknow training loop shares: checkpoints only when asked (see
    :mod:`selfknow.checkpoints`), no evaluation loop, no reporting
    services, no weight decay, and training where ``model`` is (a model on the CPU stays there even when a
    GPU is visible); ``overrides`` for the rest."""
    settings = {
        "output_dir": output_dir,
        "per_device_train_batch_size": batch_size,
        "num_train_epochs": epochs,
        "learning_rate": lr,
        "weight_decay": 0.0,
        "warmup_steps": 0,
        "logging_steps": 10,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": [],
        "seed": seed,
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "disable_tqdm": not progress,
        "use_cpu": input_device(model).type == "cpu",
    }
    return TrainingArguments(**{**settings, **overrides})


def quiet(trainer: Trainer) -> None:
    """A progress bar (or nothing) instead of the raw log dictionaries Trainer prints."""
    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_QuietProgress)


def train_adapter(
    peft_model,
    adapter: str,
    options: tuple[int, int],
    train: CachedQueries,
    validation: CachedQueries,
    config: TuningConfig,
    head: nn.Module | None = None,
    progress: bool = False,
    checkpoints: Path | None = None,
) -> dict:
    """Train the named adapter (and head) with the calibration loss, keeping the epoch with the best
    validation NLL; returns the run's numbers. With a ``checkpoints`` folder, a killed training resumes from
    its last checkpoint there."""
    for name, parameter in peft_model.named_parameters():
        parameter.requires_grad = "lora_" in name and f".{adapter}." in name
    if head is not None:
        head.requires_grad_(True)
    calibration = CalibrationModel(peft_model, start_layer(peft_model, config), options, head)
    keep_best = _KeepBest(calibration, validation, adapter, config.batch_size)
    with training_folder(checkpoints) as output_dir:
        args = training_arguments(
            output_dir, config.batch_size, config.epochs, config.lr, config.seed, progress, peft_model,
            lr_scheduler_type="cosine",
        )  # fmt: skip
        trainer = CalibrationTrainer(
            model=calibration, args=args, train_dataset=train, data_collator=collate, callbacks=[keep_best],
            tuning=config,
        )  # fmt: skip
        quiet(trainer)
        result = train_resuming(trainer, checkpoints is not None)
    keep_best.restore()
    peft_model.eval()
    return {
        "train_seconds": result.metrics.get("train_runtime"),
        "validation_nll_per_epoch": keep_best.history,
        "best_validation_nll": keep_best.best_nll,
    }


@torch.inference_mode()
def score_queries(
    calibration: CalibrationModel, tokenizer, queries: Sequence[QueryText], *, progress: bool = False
) -> torch.Tensor:
    """Option (or head) logits of each query through the full model with the adapter on."""
    calibration.eval()
    device = calibration.options.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = [len(q.ids) for q in queries]
    out = torch.empty(len(queries), 2)
    empty = torch.empty(0, dtype=torch.long, device=device)
    max_rows, max_tokens = pass_limits(calibration.peft_model, keep_cache=False)
    with token_progress(len(queries), "scoring queries", progress) as bar:
        for batch in make_batches(range(len(queries)), lengths, max_rows=max_rows, max_tokens=max_tokens):
            ids, mask = left_pad([queries[i].ids for i in batch.rows], batch.width, pad, device)
            logits = calibration(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                answer_rows=empty,
                answer_cols=empty,
            )["option_logits"]
            out[batch.rows] = logits.cpu()
            bar.advance(len(batch.rows), sum(lengths[i] for i in batch.rows))
    return out


def query_options(tokenizer, queries: Sequence[QueryText]) -> tuple[int, int]:
    """The option token ids shared by every query (they depend only on the query's fixed ending)."""
    found = {option_ids(tokenizer, q.text[-64:]) for q in queries}
    if len(found) != 1:
        raise ValueError(f"queries disagree on the option tokens: {found}")
    return found.pop()

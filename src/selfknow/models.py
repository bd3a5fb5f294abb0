"""Resolve a model spec to (model, tokenizer): an alias (see :mod:`selfknow.model_files`), a .gguf file, a
local directory or a hub id.

GGUF files (the embedded default ships as one) are dequantized once and cached as safetensors, so
later loads take seconds instead of the ~25 s a dequantization costs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from selfknow.errors import ModelError
from selfknow.model_files import ALIASES, cache_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' is the process's accelerator under ``accelerate launch`` (its GPU, or the CPU)."""
    if device == "auto":
        from selfknow.distributed import process_state

        return process_state().device
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ModelError(f"unknown device '{device}': {err}") from None


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' is float32 on CPU (bf16 matmuls are unusably slow on many CPUs) and bf16/fp16 on GPUs."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in names:
        raise ModelError(f"unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16")
    return names[dtype]


def _gguf_cache_path(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def cached_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors directory and return that directory."""
    target = _gguf_cache_path(gguf)
    if (target / "config.json").exists():
        return target
    log.info("dequantizing %s once into %s", gguf.name, target)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, use_kernels=False
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as err:  # transformers raises many types for unreadable files
        raise ModelError(f"could not read GGUF file {gguf}: {err}") from None
    # A GGUF-loaded model refuses save_pretrained while it still carries its quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.replace(target)
    except OSError:  # another process (accelerate's others, a parallel test worker) put its copy there first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    return target


def resolve_spec(spec: str) -> str:
    """A model spec as something ``from_pretrained`` accepts: a local directory or a hub id."""
    if spec in ALIASES:
        return str(cached_gguf(ALIASES[spec].path()))
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {spec}")
        return str(cached_gguf(path))
    if path.is_dir():
        if not (path / "config.json").exists():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return str(cached_gguf(ggufs[0]))
            raise ModelError(f"{spec} is a directory without config.json (not a Hugging Face model folder)")
        return str(path)
    if path.is_absolute() or spec.startswith((".", "~")) or spec.count("/") > 1:
        raise ModelError(f"model path not found: {spec}")
    return spec


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    """Left padding for batched decoding, a pad token, and a sane maximum length."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and (tokenizer.model_max_length is None or tokenizer.model_max_length > limit):
        tokenizer.model_max_length = limit


@contextmanager
def adapters_off(model: PreTrainedModel) -> Iterator[PreTrainedModel]:
    """The base model's behaviour: PEFT adapters disabled inside the block (a plain model is unchanged)."""
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
    else:
        yield model


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may run on: its affinity mask, bounded by a cgroup CPU quota (a container's
    share), which torch does not read when it picks its thread count."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return count


def match_threads() -> int:
    """No more torch threads than CPUs available: one thread too many, waiting for a core another thread
    holds, slows every matmul several-fold. ``OMP_NUM_THREADS`` (the user's choice) is left alone."""
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(min(torch.get_num_threads(), available_cpus()))
    return torch.get_num_threads()


def input_device(model) -> torch.device:
    """Where a model's inputs go: the device of its input embeddings (the first of several GPUs when
    accelerate spread the model over them)."""
    return model.get_input_embeddings().weight.device


def device_map(device: str, target: torch.device) -> str | dict[str, str]:
    """What ``from_pretrained`` places the weights with, so they go straight to the device and never
    need a full copy in host memory: one device, or accelerate's ``"auto"`` layout over every GPU when
    ``device`` is auto, one process runs, and the machine has several."""
    if device == "auto" and target.type == "cuda" and torch.cuda.device_count() > 1:
        from selfknow.distributed import process_state

        if process_state().num_processes == 1:
            return "auto"
    return {"": str(target)}


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    hub_kernels: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer in eval mode, its weights straight onto the device.

    ``spec`` is an alias (``smollm2``), a ``.gguf`` file, a local model directory or a hub id
    (``meta-llama/Llama-2-7b-chat-hf``). ``trust_remote_code`` stays off unless asked for, and so do
    transformers' hub kernels (``hub_kernels``): they download code from the hub when a model changes
    between training and inference, which fails on an offline cluster and is a network call the user
    did not ask for.
    """
    source = resolve_spec(spec)
    target = resolve_device(device)
    if target.type == "cpu":
        match_threads()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=resolve_dtype(dtype, target),
            device_map=device_map(device, target),
            trust_remote_code=trust_remote_code,
            use_kernels=hub_kernels,
        )
    except OSError as err:
        raise ModelError(
            f"unknown model '{spec}': not an alias ({', '.join(sorted(ALIASES))}), a .gguf file, a local "
            f"model directory, or a hub id that could be loaded ({str(err).splitlines()[0]})"
        ) from None
    except ValueError as err:
        raise ModelError(f"could not load model '{spec}': {str(err).splitlines()[0]}") from None
    model.eval()
    _prepare_tokenizer(tokenizer, model)
    return model, tokenizer

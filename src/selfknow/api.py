"""The workflows a user runs, composed from the pieces; the CLI is a thin layer over these."""

from __future__ import annotations

from pathlib import Path

from selfknow.answer import AnswerConfig, AnswerStats, answer_records
from selfknow.data.records import Record, read_records, write_records
from selfknow.data.registry import get_source, load_dataset
from selfknow.endpoint import Endpoint
from selfknow.errors import DataError, SelfknowError
from selfknow.grade import grade_records
from selfknow.judge import Judge, judge_records
from selfknow.models import DEFAULT_MODEL, load_model
from selfknow.prompts import Prompter, PromptStyle
from selfknow.vllm_engine import load_vllm


def fewshot_pool(dataset: str, *, format: str, seed: int = 0, columns: dict[str, str] | None = None) -> list[Record]:
    """The records k-shot examples are drawn from: the source's few-shot split (train, or dev for MMLU)."""
    source, _ = get_source(dataset)
    try:
        return load_dataset(dataset, split=source.fewshot_split, format=format, seed=seed, columns=columns)
    except DataError as err:
        raise DataError(f"k-shot prompts need the '{source.fewshot_split}' split: {err}") from None


def answer_dataset(
    dataset: str,
    *,
    output: str | Path | None = None,
    model: str = DEFAULT_MODEL,
    split: str | None = "test",
    format: str = "oe",
    kshot: int = 0,
    chat: bool | None = None,
    limit: int | None = None,
    seed: int = 0,
    columns: dict[str, str] | None = None,
    config: AnswerConfig = AnswerConfig(),
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    progress: bool = True,
    loaded: tuple | None = None,
    engine: str = "hf",
    tensor_parallel_size: int = 1,
    questions: list[Record] | None = None,
    base_url: str | None = None,
    verbal: bool = False,
) -> tuple[list[Record], AnswerStats]:
    """Load a dataset split, answer it with a model, and (with ``output``) journal to a JSONL file.

    Rerunning with the same ``output`` resumes where a killed run stopped. ``loaded`` passes an already
    loaded (model, tokenizer) for ``model`` instead of loading it again. ``engine="vllm"`` answers on vLLM
    (where installed) across ``tensor_parallel_size`` GPUs, writing the same records; ``engine="openai"``
    asks ``model`` at the OpenAI-compatible ``base_url`` (:mod:`selfknow.endpoint`; no prompt template or
    k-shot examples of selfknow's own: the server applies its template; ``verbal`` also asks it for its
    answer's probability of being correct). ``questions`` answers those records of ``dataset`` instead of
    the split (a calibration run's own selection).
    """
    if questions is None:
        questions = load_dataset(dataset, split=split, format=format, seed=seed, columns=columns, limit=limit)
    if verbal and engine != "openai":
        raise SelfknowError("verbal replies are kept for the openai engine; a local model's are the verbal estimator")
    if engine == "openai":
        if not base_url:
            raise SelfknowError("the openai engine needs the endpoint's --base-url (e.g. http://127.0.0.1:8000/v1)")
        if kshot:
            raise SelfknowError("the openai engine sends the question alone: k-shot prompts are not supported")
        endpoint = Endpoint(base_url, model, verbal=verbal)
        return answer_records(endpoint, None, questions, config=config, output=output, progress=progress)
    pool = fewshot_pool(dataset, format=format, seed=seed, columns=columns) if kshot > 0 else []
    if engine not in ("hf", "vllm"):
        raise SelfknowError(f"unknown engine '{engine}'; use 'hf', 'vllm' or 'openai'")
    if loaded is None and engine == "vllm":
        llm = load_vllm(
            model, tensor_parallel_size=tensor_parallel_size, dtype=dtype, trust_remote_code=trust_remote_code
        )
        loaded = (llm, llm.get_tokenizer())
    lm, tokenizer = loaded or load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    prompter = Prompter(tokenizer, PromptStyle(chat=chat, kshot=kshot, seed=seed), pool)
    return answer_records(lm, tokenizer, questions, prompter=prompter, config=config, output=output, progress=progress)


def grade_file(
    path: str | Path,
    output: str | Path | None = None,
    *,
    strategy: str = "auto",
    judge: Judge | None = None,
    progress: bool = True,
) -> list[Record]:
    """Grade a JSONL file of answered records; writes ``output`` (default: the input, replaced atomically)."""
    records = read_records(path)
    output = Path(output or path)
    if strategy == "judge":
        if judge is None:
            raise DataError("the judge strategy needs a judge model (--judge-model) and optionally --judge-url")
        return judge_records(records, judge, output=output, progress=progress)
    graded = grade_records(records, strategy)
    write_records(output, graded)
    return graded

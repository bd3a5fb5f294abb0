"""The ``selfknow`` command line: each command is a thin wrapper over :mod:`selfknow.api`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from selfknow import api
from selfknow.answer import AnswerConfig, AnswerStats
from selfknow.data.records import Record, read_records
from selfknow.distributed import process_state
from selfknow.errors import DataError, SelfknowError
from selfknow.grade import STRATEGIES, accuracy_table
from selfknow.judge import Judge
from selfknow.model_files import ALIASES, cache_dir
from selfknow.models import DEFAULT_MODEL, resolve_spec
from selfknow.pipeline import STAGES, Run, RunConfig
from selfknow.stages import read_settings
from selfknow.writing import storage_problem

app = typer.Typer(
    help="selfknow: answers from language models with confidences you can trust.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Alias, .gguf file, model directory or hub id.")]
DTYPE_HELP = "auto (fp32 on CPU, bf16/fp16 on GPU), float32, bfloat16, float16."
DEVICE_HELP = "auto (the process's GPU under accelerate, or spread over several), cpu, cuda, cuda:N."
DtypeOpt = Annotated[str, typer.Option(help=DTYPE_HELP)]
DeviceOpt = Annotated[str, typer.Option(help=DEVICE_HELP)]
GradientCheckpointingOpt = Annotated[
    bool,
    typer.Option(
        help="Recompute each layer's activations in the backward pass: far less training memory for about a "
        "third more compute; the adapters come out the same."
    ),
]


def _columns(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field or not column:
            raise DataError(f"--column expects FIELD=COLUMN, got '{pair}'")
        mapping[field] = column
    return mapping


def print_accuracy(records: list[Record], title: str = "accuracy") -> None:
    table = Table(title=title)
    for name in ("set", "n", "accuracy"):
        table.add_column(name, justify="left" if name == "set" else "right")
    for key, (n, acc) in sorted(accuracy_table(records).items(), key=lambda kv: (kv[0] != "all", kv[0])):
        table.add_row(key, str(n), f"{acc:.3f}")
    console.print(table)


def print_stats(stats: AnswerStats) -> None:
    """Token accounting of this process (under accelerate, of the main process's share)."""
    if stats.records:
        console.print(
            f"{stats.records} answered in {stats.seconds:.1f} s: {stats.useful_tokens / max(stats.seconds, 1e-9):,.0f} "
            f"useful tokens/s, padding and waste {stats.padding_fraction:.1%} "
            f"({stats.prompt_tokens:,} prompt tokens, {stats.computed_tokens:,} computed, "
            f"{stats.generated_tokens:,} generated)"
        )


def print_examples(records: list[Record]) -> None:
    table = Table(title="examples")
    for name in ("question", "answer", "gold", "correct"):
        table.add_column(name)
    for r in records:
        gold = f"{r.gold_letter}: {r.answer}" if r.format == "choice" else r.answer
        table.add_row(r.question, r.output or "", gold, "yes" if r.correct else "no")
    console.print(table)


def print_comparison(summary: dict) -> None:
    """The estimators side by side on the test split (point values; report.md has the intervals)."""
    columns = {"ece": "ECE", "brier": "Brier", "auroc": "AUROC", "within_group_auroc": "within-dataset AUROC"}
    columns["within_task_auroc"] = "within-task AUROC"
    accuracy = summary["metrics"][summary["best"]]["accuracy"]["value"]
    table = Table(title=f"{summary['records']} held-out answers, accuracy {accuracy:.3f}")
    table.add_column("estimator")
    for label in columns.values():
        table.add_column(label, justify="right")
    for name, metrics in summary["metrics"].items():
        mark = " (best on validation)" if name == summary["best"] else ""
        table.add_row(name + mark, *(f"{metrics[key]['value']:.3f}" if key in metrics else "-" for key in columns))
    console.print(table)


@app.command()
def datasets() -> None:
    """List the dataset sources and how to name them."""
    from selfknow.data.registry import SOURCES, _ensure_sources_loaded

    _ensure_sources_loaded()
    table = Table(title="dataset sources (use NAME or NAME:ARG)")
    for column in ("name", "kind", "formats", "description"):
        table.add_column(column)
    for name, source in sorted(SOURCES.items(), key=lambda kv: (kv[1].kind, kv[0])):
        spec = f"{name}:{source.arg}" if source.arg_required else (f"{name}[:{source.arg}]" if source.arg else name)
        table.add_row(spec, source.kind, ",".join(source.formats), source.description)
    console.print(table)


@app.command()
def models(
    fetch: Annotated[
        str | None,
        typer.Option(help="Get this alias's files now (a download for one not installed) and convert them once."),
    ] = None,
) -> None:
    """List the model aliases: what each is, its size, licence and where its files come from."""
    if fetch is not None:
        if fetch not in ALIASES:
            raise SelfknowError(f"unknown model alias '{fetch}'; one of {', '.join(sorted(ALIASES))}")
        console.print(f"{fetch}: ready in {resolve_spec(fetch)}")
        return
    names: dict[int, list[str]] = {}
    for alias, entry in ALIASES.items():
        names.setdefault(id(entry), []).append(alias)
    for first, *others in names.values():
        entry = ALIASES[first]
        also = f" (also {', '.join(others)})" if others else ""
        size = entry.size()
        ready = "ready" if entry.ready() else "fetched on first use, or now with --fetch"
        console.print(f"[bold]{first}[/bold]{also}: {entry.description}", highlight=False)
        console.print(
            f"  {size / 1e9:.2f} GB, {entry.licence}, {ready}" if size else "  not installed", highlight=False
        )
        console.print(f"  files: {entry.source()}; upstream: {entry.upstream}", highlight=False)
    console.print(f"cache: {cache_dir()} (set SELFKNOW_CACHE, HF_HOME or XDG_CACHE_HOME to move it)")


@app.command()
def answer(
    dataset: Annotated[
        str, typer.Argument(help="Dataset spec, e.g. countries, builtin, mmlu-csv:DIR (see `selfknow datasets`).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file of answered records; a rerun resumes it.")],
    model: ModelOpt = DEFAULT_MODEL,
    split: Annotated[str, typer.Option(help="Split to answer: train, validation, test, dev or 'all'.")] = "test",
    format: Annotated[str, typer.Option("--format", "-f", help="oe (open-ended) or choice (multiple choice).")] = "oe",
    kshot: Annotated[int, typer.Option(help="Worked examples in each prompt, from the few-shot split.")] = 0,
    chat: Annotated[
        bool | None, typer.Option("--chat/--no-chat", help="Use the chat template (default: when the model has one).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Answer a seeded random subset of this size.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for splits, choices, k-shot examples, subsets and samples.")] = 0,
    column: Annotated[list[str], typer.Option(help="FIELD=COLUMN mapping for csv:/jsonl: files (repeatable).")] = [],  # noqa: B006
    max_new_tokens: Annotated[int, typer.Option(help="Longest open-ended answer.")] = AnswerConfig.max_new_tokens,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Most rows per forward pass (default: 64 on the CPU, 512 on a GPU); with --samples K each "
            "question is K + 1 rows."
        ),
    ] = None,
    max_batch_tokens: Annotated[
        int | None,
        typer.Option(help="Most padded tokens per forward pass (default: 16384 on the CPU, from free GPU memory)."),
    ] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: Annotated[
        bool, typer.Option(help="Run code shipped with a hub model (off by default).")
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="hf (transformers, accelerate), vllm (where installed) or openai (an OpenAI-compatible endpoint "
            "at --base-url serving --model; key from $OPENAI_API_KEY)."
        ),
    ] = "hf",
    tensor_parallel_size: Annotated[int, typer.Option(help="GPUs one vLLM model spans (--engine vllm).")] = 1,
    base_url: Annotated[
        str | None, typer.Option(help="The endpoint's base URL for --engine openai, e.g. http://127.0.0.1:8000/v1.")
    ] = None,
    samples: Annotated[
        int,
        typer.Option(
            help="Sampled answers per question besides the greedy one, with their token log-probs, for the "
            "sampling estimators (seeded per question: a resumed run draws the same)."
        ),
    ] = 0,
    sample_temperature: Annotated[float, typer.Option(help="Temperature of the samples.")] = 1.0,
    sample_top_p: Annotated[float, typer.Option(help="Nucleus (top-p) of the samples.")] = 0.95,
    verbal: Annotated[
        bool,
        typer.Option(
            help="--engine openai: also ask the endpoint for the probability its answer is correct and keep the "
            "reply, for the verbal estimator."
        ),
    ] = False,
) -> None:
    """Answer a dataset split with a model: letters by logits for choice, greedy text for oe; with --samples,
    also K sampled answers per question (from the same prefill)."""
    try:
        config = AnswerConfig(
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            samples=samples,
            sample_temperature=sample_temperature,
            sample_top_p=sample_top_p,
            seed=seed,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    records, stats = api.answer_dataset(
        dataset,
        output=output,
        model=model,
        split=None if split == "all" else split,
        format=format,
        kshot=kshot,
        chat=chat,
        limit=limit,
        seed=seed,
        columns=_columns(column),
        config=config,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        engine=engine,
        tensor_parallel_size=tensor_parallel_size,
        base_url=base_url,
        verbal=verbal,
    )
    if process_state().is_main_process:
        print_stats(stats)
        console.print(f"wrote {len(records)} records to {output}")


@app.command()
def grade(
    input: Annotated[Path, typer.Argument(help="JSONL file of answered records.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write (default: replace the input).")
    ] = None,
    strategy: Annotated[str, typer.Option(help=f"One of {', '.join(STRATEGIES)}.")] = "auto",
    judge_model: Annotated[
        str | None, typer.Option(help="Judge: a local model spec, or the model name at --judge-url.")
    ] = None,
    judge_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL for the judge (key from $OPENAI_API_KEY).")
    ] = None,
) -> None:
    """Grade answers against gold answers and print accuracy per dataset and task."""
    judge = Judge(judge_model, judge_url) if judge_model else None
    records = api.grade_file(input, output, strategy=strategy, judge=judge)
    print_accuracy(records)


DEMO = {
    "limits": {"train": 400, "validation": 200, "test": 400},
    "options": {"ct": {"epochs": 2, "top_layers": 8}, "lora-probe": {"epochs": 2, "top_layers": 8}},
    "bootstrap": 500,
}


@app.command()
def demo(
    run_dir: Annotated[Path, typer.Option(help="Run directory of the demo (rerunning resumes it).")] = Path(
        "runs/demo"
    ),
    model: ModelOpt = DEFAULT_MODEL,
) -> None:
    """The whole pipeline on built-in questions with the embedded model, small enough for a laptop CPU:
    answer, grade, fit every estimator, evaluate on held-out entities, then ask a question."""
    summary = Run(run_dir, RunConfig(model=model, **DEMO)).run()
    answers = read_records(run_dir / "answers" / "test.jsonl")
    print_examples(answers[:: max(1, len(answers) // 6)][:6])
    print_comparison(summary)
    console.print(
        f"full report: {run_dir / 'evaluation' / 'report.md'}; "
        f"reliability diagram: {run_dir / 'evaluation' / 'reliability.png'}"
    )
    from selfknow.ask import Asker

    for reply in Asker(run_dir).ask(["What is the capital of France?", "What is 4821 + 3997?"]):
        console.print(
            f"[bold]{reply.question}[/bold] {reply.answer}  P(correct) = {reply.confidence:.2f} "
            f"({reply.estimator}, best on validation: {summary['best']})"
        )


def _options(pairs: list[str]) -> dict[str, dict]:
    """``ct.epochs=2`` → {"ct": {"epochs": 2}}; values are read as JSON when they parse, else as text."""
    options: dict[str, dict] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name, dot, setting = key.partition(".")
        if not sep or not dot or not name or not setting:
            raise DataError(f"--option expects ESTIMATOR.SETTING=VALUE, got '{pair}'")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        options.setdefault(name, {})[setting] = parsed
    return options


@app.command()
def tune(
    run_dir: Annotated[Path, typer.Argument(help="Run directory; rerunning resumes it stage by stage.")],
    config: Annotated[Path | None, typer.Option(help="JSON file of run settings (flags override it).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model spec (default: smollm2).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset spec (default: builtin).")] = None,
    format: Annotated[str | None, typer.Option("--format", "-f", help="oe or choice (default: oe).")] = None,
    train_limit: Annotated[int | None, typer.Option(help="Seeded subset of the train split.")] = None,
    validation_limit: Annotated[int | None, typer.Option(help="Seeded subset of the validation split.")] = None,
    test_limit: Annotated[int | None, typer.Option(help="Seeded subset of the test split.")] = None,
    estimators: Annotated[
        str | None, typer.Option(help="Comma-separated estimators (default: all for the format).")
    ] = None,
    option: Annotated[list[str], typer.Option(help="ESTIMATOR.SETTING=VALUE, e.g. ct.epochs=2 (repeatable).")] = [],  # noqa: B006
    stages: Annotated[str, typer.Option(help="Comma-separated stages to run.")] = ",".join(STAGES),
    seed: Annotated[int | None, typer.Option(help="Seed for subsets, prompts and training (default: 0).")] = None,
    dtype: Annotated[str | None, typer.Option(help=f"{DTYPE_HELP} A run keeps its first dtype.")] = None,
    device: Annotated[str | None, typer.Option(help=DEVICE_HELP)] = None,
    hold_out: Annotated[
        list[str],
        typer.Option(
            help="Question family (DATASET or DATASET/TASK) kept out of all fitting, repeatable: its validation "
            "questions choose the served estimator; its train and test questions are reported apart, as out of family."
        ),
    ] = [],  # noqa: B006
    samples: Annotated[
        int | None,
        typer.Option(
            help="Sampled answers per validation and test question; adds the sampling estimators to the default "
            "ones (asking for a sampling estimator alone draws 10)."
        ),
    ] = None,
    answers_from: Annotated[
        str | None,
        typer.Option(
            help="Score another model's answers (cross-model confidence): its spec, or its name at --answers-url; "
            "--model is then the model the estimators read."
        ),
    ] = None,
    answers_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL serving --answers-from (answered via the API).")
    ] = None,
) -> None:
    """Answer, grade, fit every estimator, score and evaluate in a run directory (resumable)."""
    settings = read_settings(config, RunConfig.__dataclass_fields__, "run") if config else {}
    flags = {"model": model, "dataset": dataset, "format": format, "seed": seed, "dtype": dtype, "device": device}
    flags.update(samples=samples, answers_from=answers_from, answers_url=answers_url)
    settings.update({k: v for k, v in flags.items() if v is not None})
    limits = {"train": train_limit, "validation": validation_limit, "test": test_limit}
    settings["limits"] = {**settings.get("limits", {}), **{k: v for k, v in limits.items() if v is not None}}
    if estimators:
        settings["estimators"] = [e.strip() for e in estimators.split(",") if e.strip()]
    if hold_out:
        settings["hold_out"] = hold_out
    for name, values in _options(option).items():
        settings.setdefault("options", {}).setdefault(name, {}).update(values)
    try:
        run_config = RunConfig(**settings)
    except TypeError as err:
        raise DataError(f"bad run settings: {err}") from None
    summary = Run(run_dir, run_config).run([s.strip() for s in stages.split(",") if s.strip()])
    if summary:
        console.print(
            (run_dir / "evaluation" / "report.md").read_text().split("## By dataset")[0], soft_wrap=True, markup=False
        )
        console.print(f"best on validation: {summary['best']}; report: {run_dir / 'evaluation' / 'report.md'}")


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `selfknow tune`.")],
    dataset: Annotated[str | None, typer.Option(help="Evaluate on another dataset instead (transfer).")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the transfer evaluation (default: the dataset).")] = None,
    format: Annotated[str | None, typer.Option("--format", "-f", help="Format of the other dataset.")] = None,
    kshot: Annotated[int | None, typer.Option(help="Worked examples per prompt for the other dataset.")] = None,
    limit: Annotated[int | None, typer.Option(help="Seeded subset of the other dataset's test split.")] = None,
    risk: Annotated[
        float | None, typer.Option(help="Target risk: choose each estimator's abstention threshold on validation.")
    ] = None,
    delta: Annotated[float, typer.Option(help="Allowed probability that the risk guarantee fails.")] = 0.1,
) -> None:
    """Score validation and test with every fitted estimator and write the report; with --dataset, apply
    the run's estimators unchanged to another dataset (written under <run>/transfer/<name>/); with --risk,
    pick abstention thresholds on validation and report the coverage and risk they give on test."""
    run = Run(run_dir)
    if dataset is None:
        if run.run(["score", "evaluate"]) is None:
            return  # another process of an `accelerate launch` writes and prints
        report = run_dir / "evaluation" / "report.md"
        if risk is not None:
            _print_abstention(run.abstention_report(risk, delta))
    else:
        label = name or dataset.split(":")[0]
        summary = run.transfer(dataset, name=label, format=format, kshot=kshot, limit=limit)
        if summary is None:
            return
        for estimator, reason in summary["skipped"].items():
            console.print(f"skipped {estimator}: {reason}")
        report = run_dir / "transfer" / label / "evaluation" / "report.md"
    console.print(report.read_text().split("## By dataset")[0], soft_wrap=True, markup=False)


def _print_abstention(summary: dict) -> None:
    console.print(
        f"Abstention at target risk {summary['target_risk']:g} (δ = {summary['delta']:g}); thresholds chosen on "
        f"validation, measured on {summary['test_records']} test answers:",
        soft_wrap=True,
    )
    table = Table("estimator", "threshold", "validation coverage", "test coverage", "test risk")
    for name, row in summary["estimators"].items():
        threshold = "abstain always" if row["threshold"] is None else f"{row['threshold']:.3f}"
        test_risk = "—" if row["test_risk"] is None else f"{row['test_risk']:.3f}"
        table.add_row(name, threshold, f"{row['coverage']:.3f}", f"{row['test_coverage']:.3f}", test_risk)
    console.print(table)


RISK_HELP = "Target risk: abstain below the threshold chosen on the run's validation answers."


@app.command()
def ask(
    question: Annotated[list[str], typer.Argument(help="One or more questions.")],
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory made by `selfknow tune`.")] = Path(
        "runs/demo"
    ),
    estimator: Annotated[str | None, typer.Option(help="Estimator (default: the run's best on validation).")] = None,
    risk: Annotated[float | None, typer.Option(help=RISK_HELP)] = None,
) -> None:
    """Answer with the base model and give the probability the answer is correct."""
    from selfknow.ask import Asker

    for reply in Asker(run, estimator, risk=risk).ask(question):
        verdict = " — abstains" if reply.abstained else ""
        console.print(
            f"[bold]{reply.question}[/bold]\n  {reply.answer}\n  P(correct) = {reply.confidence:.2f} "
            f"({reply.estimator}){verdict}"
        )


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="A run directory made by `selfknow tune`, or a model spec.")],
    estimator: Annotated[str | None, typer.Option(help="Estimator of the run (default: best on validation).")] = None,
    risk: Annotated[float | None, typer.Option(help=RISK_HELP)] = None,
    delta: Annotated[float, typer.Option(help="Allowed probability that the risk guarantee fails.")] = 0.1,
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the service to the network.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    name: Annotated[str | None, typer.Option(help="Model name clients use (default: the model spec).")] = None,
    max_batch: Annotated[int, typer.Option(help="Questions answered together.")] = 16,
    batch_window_ms: Annotated[float, typer.Option(help="How long a request waits for others to batch with.")] = 20,
    max_pending: Annotated[int, typer.Option(help="Unfinished requests held; more are refused with 503.")] = 64,
    max_tokens_cap: Annotated[int, typer.Option(help="Most new tokens a request may ask for.")] = 256,
    max_prompt_tokens: Annotated[int, typer.Option(help="Longest question accepted, in tokens.")] = 1024,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted.")] = 64 * 1024,
    timeout: Annotated[float, typer.Option(help="Seconds before a request is answered 504.")] = 120,
    trust_remote_code: Annotated[bool, typer.Option(help="Run model code from the model's repository.")] = False,
) -> None:
    """Serve answers with confidence over HTTP: OpenAI-compatible /v1/chat/completions and /v1/completions,
    plus /v1/ask, /v1/models and /health."""
    import uvicorn

    from selfknow.ask import Asker
    from selfknow.service import ServiceConfig, create_app

    if (Path(target) / "config.json").exists() and (Path(target) / "estimators").exists():
        if trust_remote_code:
            raise SelfknowError("--trust-remote-code applies to a model spec, not to a run directory")
        asker = Asker(target, estimator, risk=risk, delta=delta)
    else:
        if risk is not None or estimator is not None:
            raise SelfknowError("--risk and --estimator need a run directory with graded validation answers")
        asker = Asker.from_model(target, trust_remote_code=trust_remote_code)
    config = ServiceConfig(
        max_batch=max_batch,
        batch_window_ms=batch_window_ms,
        max_pending=max_pending,
        max_body_bytes=max_body_bytes,
        max_prompt_tokens=max_prompt_tokens,
        max_tokens_cap=max_tokens_cap,
        timeout_s=timeout,
    )
    console.print(f"serving {name or asker.model_name} ({asker.name}) on http://{host}:{port}", soft_wrap=True)
    uvicorn.run(create_app(asker, config, model_name=name), host=host, port=port, log_level="warning")


elk_app = typer.Typer(help="Latent knowledge: quirky datasets and models, and probes that read the truth.")
app.add_typer(elk_app, name="elk")


@elk_app.command("run")
def elk_run(
    run_dir: Annotated[Path, typer.Argument(help="ELK run directory; rerunning resumes it stage by stage.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model spec to make quirky.")] = "smollm2",
    dataset: Annotated[str, typer.Option(help="Quirky dataset: addition or populations.")] = "addition",
    template: Annotated[str, typer.Option(help="grader_last, grader_first, mixture, ...")] = "grader_last",
    statements: Annotated[int | None, typer.Option(help="Base statements (each shown to Alice and Bob).")] = 8000,
    max_digits: Annotated[int, typer.Option(help="Addition operands are log-uniform below 10^(max_digits+1).")] = 4,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs of the quirky model.")] = 3,
    top_layers: Annotated[
        list[int] | None,
        typer.Option(help="LoRA on the top k layers (lower activations cached); repeat to try several (default 12)."),
    ] = None,
    lr: Annotated[
        list[float] | None,
        typer.Option(help="Fine-tuning learning rate; repeat to try several (default 1e-3 and 2e-4)."),
    ] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated probe methods.")] = "lr,dim,lda,lr-pair,ccs,crc",
    stages: Annotated[str, typer.Option(help="Comma-separated stages to run.")] = "data,train,extract,evaluate",
    seed: Annotated[int, typer.Option(help="Seed of the data and the adapter's initialisation.")] = 633,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the AE→BH intervals.")] = 1000,
    dtype: DtypeOpt = "auto",
) -> None:
    """Build a quirky dataset, fine-tune a quirky model, extract hidden states, fit probes on Alice-easy and
    read them on Bob-hard; writes the transfer table, anomaly detection and an AUROC-by-layer plot. Every
    combination of the learning rates and layer counts given is trained, and the lowest validation NLL wins."""
    from selfknow.elk.report import transfer_table
    from selfknow.elk.run import ElkConfig, ElkRun

    config = ElkConfig(
        model=model,
        dataset=dataset,
        template=template,
        statements=statements,
        max_digits=max_digits,
        seed=seed,
        training={
            "top_layers": _one_or_sweep(top_layers or [12]),
            "epochs": epochs,
            "lr": _one_or_sweep(lr or [1e-3, 2e-4]),
            "batch_size": 16,
            "dropout": 0.0,
        },
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        bootstrap=bootstrap,
        dtype=dtype,
    )
    run = ElkRun(run_dir, config)  # a rerun with the same settings resumes; other settings are refused
    summary = run.run([s.strip() for s in stages.split(",") if s.strip()])
    if summary:
        console.print(transfer_table(summary), soft_wrap=True, markup=False)
        console.print(f"report: {run_dir / 'evaluation' / 'report.md'}")


def _one_or_sweep(values: list) -> Any:
    """One value as itself, several as a list (the run's settings then name a sweep)."""
    return values[0] if len(values) == 1 else list(values)


rag_app = typer.Typer(help="Self-reflective retrieval (Self-RAG), with retrieval gated by calibrated confidence.")
app.add_typer(rag_app, name="rag")


@rag_app.command("index")
def rag_index(
    run_dir: Annotated[Path, typer.Argument(help="Self-RAG run directory to create; its settings are fixed here.")],
    model: ModelOpt = DEFAULT_MODEL,
    source: Annotated[
        list[str] | None,
        typer.Option(help="Corpus source, repeatable: factbook, mendeleev, a folder of .txt/.md, or a .jsonl file."),
    ] = None,
    retrievers: Annotated[str, typer.Option(help="Indexes to build: bm25, dense (MiniLM), comma-separated.")] = (
        "bm25,dense"
    ),
    method: Annotated[str, typer.Option(help="Retriever Self-RAG reads from: bm25, dense or hybrid.")] = "hybrid",
    tasks: Annotated[str | None, typer.Option(help="Question tasks, dataset:task, comma-separated.")] = None,
    k: Annotated[int, typer.Option(help="Passages retrieved per question.")] = 5,
    limit_train: Annotated[int | None, typer.Option(help="Most training questions.")] = None,
    limit_validation: Annotated[int | None, typer.Option(help="Most validation questions.")] = None,
    limit_test: Annotated[int | None, typer.Option(help="Most test questions.")] = None,
    estimators: Annotated[str, typer.Option(help="Calibration estimators fit on the closed-book answers.")] = (
        "dataset-accuracy,probe-mlp"
    ),
    confidence: Annotated[str, typer.Option(help="Calibrated P(correct) that gates retrieval.")] = "probe-mlp+platt",
    epochs: Annotated[float, typer.Option(help="Generator training epochs.")] = 1.0,
    lr: Annotated[float, typer.Option(help="Generator learning rate.")] = 5e-4,
    delta: Annotated[float, typer.Option(help="Adaptive retrieval threshold on p([Retrieval]).")] = 0.2,
    tau: Annotated[
        float, typer.Option(help="Retrieve when the calibrated P(closed-book correct) is below this.")
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of splits, training and bootstrap.")] = 0,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    dtype: DtypeOpt = "auto",
) -> None:
    """Create a Self-RAG run and build its passage index (BM25 and MiniLM embeddings, computed once)."""
    from selfknow.rag.questions import DEFAULT_TASKS
    from selfknow.rag.run import RagConfig, RagRun
    from selfknow.rag.train import GeneratorConfig

    config = RagConfig(
        model=model,
        sources=list(source or ["factbook", "mendeleev"]),
        retrievers=[r.strip() for r in retrievers.split(",") if r.strip()],
        method=method,
        tasks=[t.strip() for t in tasks.split(",") if t.strip()] if tasks else list(DEFAULT_TASKS),
        k=k,
        limits={"train": limit_train, "validation": limit_validation, "test": limit_test},
        estimators=[e.strip() for e in estimators.split(",") if e.strip()],
        confidence=confidence,
        generator=GeneratorConfig(epochs=epochs, lr=lr).to_dict(),
        delta=delta,
        tau=tau,
        seed=seed,
        bootstrap=bootstrap,
        dtype=dtype,
    )
    run = RagRun(run_dir, config)  # the same settings resume; other settings are refused
    run.run(["index"])
    info = run.search_index.info
    console.print(
        f"index: {len(run.search_index.passages)} passages, {', '.join(info.get('kinds', []))} in {run_dir / 'index'}"
    )


@rag_app.command("train")
def rag_train(
    run_dir: Annotated[Path, typer.Argument(help="Self-RAG run directory made by `selfknow rag index`.")],
    gradient_checkpointing: GradientCheckpointingOpt = False,
):
    """Questions, the base model's closed-book answers and calibrated confidence, rule labels, and the
    Self-RAG generator (LoRA + reflection tokens)."""
    from selfknow.rag.run import RagRun

    run = RagRun(run_dir, gradient_checkpointing=gradient_checkpointing)
    numbers = run.run(["index", "questions", "closed_book", "labels", "train"])
    console.print(
        f"generator: {numbers['examples']} examples, {numbers['train_seconds']:.0f} s; adapter in {run_dir / 'adapter'}"
    )


@rag_app.command("evaluate")
def rag_evaluate(run_dir: Annotated[Path, typer.Argument(help="Self-RAG run directory with a trained generator.")]):
    """Answer the held-out questions every way once, then report accuracy per mode, the δ and τ curves,
    reflection-token agreement and retriever recall."""
    from selfknow.rag.report import modes_table
    from selfknow.rag.run import RagRun

    summary = RagRun(run_dir).run(["answer", "evaluate"])
    console.print(modes_table(summary), soft_wrap=True, markup=False)
    console.print(f"report: {run_dir / 'evaluation' / 'report.md'}")


@rag_app.command("ask")
def rag_ask(
    run_dir: Annotated[Path, typer.Argument(help="Self-RAG run directory with a trained generator.")],
    question: Annotated[str, typer.Argument(help="The question.")],
    mode: Annotated[str, typer.Option(help="none, always, adaptive (p([Retrieval]) > δ) or confidence (P < τ).")] = (
        "confidence"
    ),
    delta: Annotated[float | None, typer.Option(help="Adaptive threshold (default: the run's).")] = None,
    tau: Annotated[float | None, typer.Option(help="Confidence threshold (default: the run's).")] = None,
) -> None:
    """Answer with Self-RAG: the answer, whether it retrieved and why, the passages with their critique scores,
    and the calibrated confidence of the closed-book answer."""
    from selfknow.rag.ask import RagAsker

    reply = RagAsker(run_dir, mode=mode, delta=delta, tau=tau).ask(question)
    console.print(f"[bold]{reply.question}[/bold]\n  {reply.answer}", markup=True)
    console.print(f"  retrieved: {'yes' if reply.retrieved else 'no'} ({reply.reason})", markup=False)
    console.print(
        f"  closed-book answer: {reply.closed_book!r}, P(correct) = {reply.confidence:.2f}; "
        f"p([Retrieval]) = {reply.retrieve_probability:.2f}",
        markup=False,
    )
    for p in reply.passages:
        console.print(
            f"  [{p['score']:.2f}] {p['title']} ({p['id']}): {p['text']!r} — IsRel {p['relevance']:.2f}, "
            f"IsSup {p['support']:.2f} ({p['issup'] or 'none'}), IsUse {p['utility']:.2f}",
            markup=False,
        )


@app.command("backtranslate")
def backtranslate(
    run_dir: Annotated[Path, typer.Argument(help="Backtranslation run directory; a rerun resumes it.")],
    model: ModelOpt = DEFAULT_MODEL,
    seed_source: Annotated[
        list[str] | None,
        typer.Option(help="Seed pairs, repeatable: python-faq, debian-faq, user:<pairs.jsonl>, hub:<dataset id>."),
    ] = None,
    pool_source: Annotated[
        list[str] | None,
        typer.Option(help="Unlabelled texts, repeatable: python-docs, factbook, user:<folder or .jsonl>."),
    ] = None,
    held_out: Annotated[int, typer.Option(help="Seed pairs held out before anything is trained.")] = 60,
    pool_limit: Annotated[int | None, typer.Option(help="Most unlabelled segments (a seeded sample).")] = None,
    backward_epochs: Annotated[float, typer.Option(help="Backward-model epochs.")] = 3.0,
    forward_epochs: Annotated[float, typer.Option(help="Forward-model epochs.")] = 2.0,
    reading: Annotated[
        str, typer.Option(help="Curation reading that selects pairs: expected, parsed, or rank (the paper's share).")
    ] = "expected",
    k: Annotated[int, typer.Option(help="Keep pairs rated at least k: 5 (A_5) or 4 (A_4).")] = 5,
    rating_prompt: Annotated[
        str,
        typer.Option(help="Rating prompt: paper (reasons, then the score) or score-first (the score, then reasons)."),
    ] = "paper",
    rating_tokens: Annotated[int, typer.Option(help="Most tokens of each rating reply.")] = 64,
    iterations: Annotated[int, typer.Option(help="Self-curation iterations (M_1, M_2, ...).")] = 2,
    uncurated: Annotated[
        str, typer.Option(help="Control's candidates: matched (random, as many as the curated set) or all.")
    ] = "matched",
    labelled: Annotated[int, typer.Option(help="Pairs in the curation test set (20% real positives).")] = 250,
    stages: Annotated[str, typer.Option(help="Comma-separated stages to run.")] = (
        "data,backward,augment,curate,train,evaluate"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the held-out split, sampling, training and bootstrap.")] = 0,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    dtype: DtypeOpt = "auto",
    gradient_checkpointing: GradientCheckpointingOpt = False,
) -> None:
    """Instruction backtranslation: a backward model writes instructions for unlabelled texts, forward models
    rate them (self-curation) and are retrained on the best; reports each part against baselines."""
    from selfknow.backtranslate.run import POOL_SOURCES, SEED_SOURCES, BacktranslateConfig, BacktranslateRun
    from selfknow.backtranslate.tuning import LoraSettings

    config = BacktranslateConfig(
        model=model,
        seed_sources=list(seed_source or SEED_SOURCES),
        pool_sources=list(pool_source or POOL_SOURCES),
        held_out=held_out,
        pool_limit=pool_limit,
        backward=LoraSettings(epochs=backward_epochs).to_dict(),
        forward=LoraSettings(epochs=forward_epochs).to_dict(),
        reading=reading,
        k=k,
        rating_prompt=rating_prompt,
        rating_tokens=rating_tokens,
        iterations=iterations,
        uncurated=uncurated,
        labelled=labelled,
        seed=seed,
        bootstrap=bootstrap,
        dtype=dtype,
    )
    # the same settings resume; other settings are refused
    run = BacktranslateRun(run_dir, config, gradient_checkpointing=gradient_checkpointing)
    summary = run.run([s.strip() for s in stages.split(",") if s.strip()])
    if summary:
        console.print(f"report: {run_dir / 'evaluation' / 'report.md'}")


def main() -> None:
    try:
        app()
    except SelfknowError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:  # a full disk or a read-only folder met by a library's own writer (Trainer, PEFT)
        reason = storage_problem(err)
        if reason is None:
            raise
        print(f"error: {err.filename or 'a file'}: {reason}; the files finished before are intact", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

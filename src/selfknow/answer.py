"""Answer questions with a causal LM, writing each batch as it finishes so a killed run resumes.

Multiple choice is one forward pass per row reading only the choice letters' logits; open-ended
questions are answered greedily up to the end of the line (:mod:`selfknow.engine`). A model behind an
OpenAI-compatible endpoint answers through :mod:`selfknow.endpoint` into the same records. Under
``accelerate launch`` every process answers its share and the main process merges the shares in
input order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from accelerate.utils import gather_object
from transformers import PreTrainedModel

from selfknow.data.journal import Journal
from selfknow.data.records import Record, read_records
from selfknow.distributed import process_state
from selfknow.endpoint import Endpoint, EndpointAnswerer, endpoint_prompt
from selfknow.engine import AnswerConfig, Answerer, AnswerStats
from selfknow.progress import token_progress
from selfknow.prompts import Prompter
from selfknow.vllm_engine import VllmAnswerer, is_vllm

__all__ = ["AnswerConfig", "AnswerStats", "answer_once", "answer_records"]


def answer_records(
    model: PreTrainedModel | Endpoint,
    tokenizer,
    records: Sequence[Record],
    *,
    prompter: Prompter | None = None,
    config: AnswerConfig = AnswerConfig(),
    output: str | Path | None = None,
    progress: bool = True,
) -> tuple[list[Record], AnswerStats]:
    """Answer every record; with ``output``, resume from and write to that JSONL file.

    ``model`` is a loaded model (or a vLLM engine), or an :class:`~selfknow.endpoint.Endpoint`, which needs no
    tokenizer. Returns the answered records in input order and the token accounting of this process.
    """
    state = process_state()
    journal = Journal(output, state.process_index) if output is not None else None
    done = journal.done() if journal else {}
    state.wait_for_everyone()  # every process must see the same finished set before anyone appends
    todo = [r for r in records if r.id not in done]
    if isinstance(model, Endpoint):
        encoded = [(r, endpoint_prompt(r), []) for r in todo]
        runner = EndpointAnswerer(model, config)
    else:
        prompter = prompter or Prompter(tokenizer)
        encoded = sorted(
            ((r, p, prompter.encode(p)) for r in todo for p in [prompter.render(r)]), key=lambda i: len(i[2])
        )
        runner = VllmAnswerer(model, tokenizer, config) if is_vllm(model) else Answerer(model, tokenizer, config)
    mine = encoded[state.process_index :: state.num_processes]
    runner.stats.prompt_tokens = sum(len(ids) for _, _, ids in mine)
    answered: list[Record] = []
    start = time.perf_counter()
    with token_progress(len(mine), "answering", progress and state.is_main_process) as bar:

        def emit(batch: list[Record], tokens: int) -> None:
            if journal:
                journal.append(batch)
            answered.extend(batch)
            bar.advance(len(batch), tokens)

        runner.run([item for item in mine if item[0].format == "choice"], emit)
        runner.run([item for item in mine if item[0].format != "choice"], emit)
    runner.stats.seconds = time.perf_counter() - start
    runner.stats.records = len(mine)
    order = [r.id for r in records]
    if journal is None:
        mine_answered = gather_object(answered) if state.num_processes > 1 else answered
        by_id = {r.id: r for r in mine_answered}
        return [by_id[i] for i in order], runner.stats
    state.wait_for_everyone()
    if state.is_main_process:
        journal.finish(order)
    state.wait_for_everyone()
    return read_records(output), runner.stats


def answer_once(
    model: PreTrainedModel, tokenizer, records: Sequence[Record], *, output: str | Path, **options
) -> tuple[list[Record], AnswerStats]:
    """:func:`answer_records`, unless ``output`` is already a finished answer file for exactly these records (a
    stage that completed before), which is then read instead of recomputed."""
    path = Path(output)
    if path.exists():
        done = read_records(path)
        if [r.id for r in done] == [r.id for r in records]:
            return done, AnswerStats()
    return answer_records(model, tokenizer, records, output=output, **options)

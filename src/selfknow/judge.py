"""An LLM judge for open-ended answers: a local model, or any OpenAI-compatible chat endpoint.

The prompts are the calibration-tuning reference's (spec §6): the answer-key grader, and the two-answers
prompt its sampling baselines cluster samples with; the verdict is "yes" anywhere in the judge's reply.
Used only when asked for: it costs a model call per answer (or per pair of answers).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from selfknow.data.journal import Journal
from selfknow.data.records import Record
from selfknow.endpoint import post_chat
from selfknow.errors import GradingError
from selfknow.progress import token_progress
from selfknow.prompts import question_body

SYSTEM = "You are an automated grading assistant helping a teacher grade student answers."
TEMPLATE = (
    "The problem is: {question}\n\n The correct answer for this problem is: {gold}\n A student submitted the "
    "answer: {answer}\n The student's answer must be correct and specific but not overcomplete (for example, "
    "if they provide two different answers, they did not get the question right). However, small differences "
    "in formatting should not be penalized (for example, 'New York City' is equivalent to 'NYC'). Did the "
    "student provide an equivalent answer to the ground truth? Please answer yes or no without any explanation: "
)
TWO_ANSWERS = (
    "The problem is: {question}\n\nStudent A submitted the answer: {a}\n Student B submitted the answer: {b}\n"
    "Your task is to evaluate if these two answers are equivalent, so the teacher can group matching answers "
    "together. Small differences in formatting should not be a reason to mark the answers as different. Did the "
    "two students provide equivalent answers? Please answer yes or no without any explanation: "
)


@dataclass(frozen=True)
class Judge:
    """``model`` is a local model spec, or the model name at ``url`` (an OpenAI-compatible base URL)."""

    model: str
    url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    workers: int = 8
    timeout: float = 60.0

    @property
    def name(self) -> str:
        return f"judge:{self.model}"


def judge_messages(record: Record) -> list[dict[str, str]]:
    gold = record.answer if not record.aliases else f"{record.answer} (also accepted: {', '.join(record.aliases)})"
    user = TEMPLATE.format(question=question_body(record), gold=gold, answer=record.output or "")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def equivalence_messages(record: Record, a: str, b: str) -> list[dict[str, str]]:
    """The reference's ``two-answers`` prompt (spec §6), which its sampling baselines cluster samples by."""
    user = TWO_ANSWERS.format(question=question_body(record), a=a, b=b)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def says_yes(reply: str) -> bool:
    """The reference's reading of a verdict: "yes" anywhere in the reply."""
    return "yes" in reply.strip().lower()


Query = tuple[Record, list[dict[str, str]]]  # a record the reply belongs to, and the messages to send


def _ask_endpoint(client: httpx.Client, judge: Judge, query: Query) -> str:
    record, messages = query
    body = {"model": judge.model, "messages": messages, "temperature": 0, "max_tokens": 5}
    url = f"{judge.url.rstrip('/')}/chat/completions"
    reply = post_chat(client, url, body, f"judge endpoint {judge.url} failed for record {record.id!r}", GradingError)
    return reply["choices"][0]["message"]["content"] or ""


def _ask_remote(queries: Sequence[Query], judge: Judge, emit: Callable[[list[tuple[int, str]]], None]) -> None:
    headers = {"Authorization": f"Bearer {os.environ.get(judge.api_key_env, 'none')}"}
    with httpx.Client(timeout=judge.timeout, headers=headers) as client, ThreadPoolExecutor(judge.workers) as pool:
        futures = {pool.submit(_ask_endpoint, client, judge, q): i for i, q in enumerate(queries)}
        for future in as_completed(futures):
            emit([(futures[future], future.result())])


def _ask_local(queries: Sequence[Query], loaded: tuple[Any, Any], emit, progress: bool) -> None:
    from selfknow.answer import AnswerConfig, answer_records

    model, tokenizer = loaded
    chat = bool(tokenizer.chat_template)
    prompts = []
    for i, (record, messages) in enumerate(queries):
        prompt = (
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            if chat
            else "\n\n".join(m["content"] for m in messages)
        )
        prompts.append(
            dataclasses.replace(record, id=str(i), prompt=prompt, format="oe", choices=None, answer_index=None)
        )
    replies, _ = answer_records(model, tokenizer, prompts, config=AnswerConfig(max_new_tokens=4), progress=progress)
    emit([(int(r.id), r.output or "") for r in replies])


def ask_judge(
    queries: Sequence[Query],
    judge: Judge,
    emit: Callable[[list[tuple[int, str]]], None],
    *,
    loaded: tuple[Any, Any] | None = None,
    progress: bool = False,
) -> None:
    """Send each query to the judge and hand ``emit`` (index, reply) pairs as they come. A local judge is
    loaded from ``judge.model`` unless ``loaded`` (model, tokenizer) is given, e.g. the one already in use."""
    if not queries:
        return
    if judge.url:
        _ask_remote(queries, judge, emit)
        return
    if loaded is None:
        from selfknow.models import load_model

        loaded = load_model(judge.model)
    _ask_local(queries, loaded, emit, progress)


def judge_records(
    records: Sequence[Record], judge: Judge, *, output: str | Path | None = None, progress: bool = True
) -> list[Record]:
    """Grade every record with the judge; with ``output``, verdicts are journaled and a rerun resumes."""
    missing = [r.id for r in records if r.output is None]
    if missing:
        raise GradingError(f"record {missing[0]!r} has no output; answer it first (selfknow answer)")
    journal = Journal(output) if output is not None else None
    done = journal.done() if journal else {}
    graded = dict(done)
    todo = [r for r in records if r.id not in done]
    with token_progress(len(todo), "judging", progress and judge.url is not None) as bar:

        def emit(replies: list[tuple[int, str]]) -> None:
            batch = [dataclasses.replace(todo[i], correct=says_yes(reply), grader=judge.name) for i, reply in replies]
            if journal:
                journal.append(batch)
            graded.update((r.id, r) for r in batch)
            bar.advance(len(batch), 0)

        ask_judge([(r, judge_messages(r)) for r in todo], judge, emit, progress=progress and judge.url is None)
    order = [r.id for r in records]
    return journal.finish(order) if journal else [graded[i] for i in order]

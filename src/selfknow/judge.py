"""An LLM judge for open-ended answers: a local model, or any OpenAI-compatible chat endpoint.

The prompt is the calibration-tuning reference's answer-key grader (spec §6); the verdict is "yes"
anywhere in the judge's reply. Used only when asked for: it costs a model call per answer.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

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


def _verdict(record: Record, reply: str, judge: Judge) -> Record:
    return dataclasses.replace(record, correct="yes" in reply.strip().lower(), grader=judge.name)


def _ask_endpoint(client: httpx.Client, judge: Judge, record: Record) -> str:
    body = {"model": judge.model, "messages": judge_messages(record), "temperature": 0, "max_tokens": 5}
    url = f"{judge.url.rstrip('/')}/chat/completions"
    reply = post_chat(client, url, body, f"judge endpoint {judge.url} failed for record {record.id!r}", GradingError)
    return reply["choices"][0]["message"]["content"] or ""


def _judge_remote(todo: Sequence[Record], judge: Judge, emit) -> None:
    headers = {"Authorization": f"Bearer {os.environ.get(judge.api_key_env, 'none')}"}
    with httpx.Client(timeout=judge.timeout, headers=headers) as client, ThreadPoolExecutor(judge.workers) as pool:
        futures = {pool.submit(_ask_endpoint, client, judge, r): r for r in todo}
        for future in as_completed(futures):
            emit([_verdict(futures[future], future.result(), judge)])


def _judge_local(todo: Sequence[Record], judge: Judge, emit, progress: bool) -> None:
    from selfknow.answer import AnswerConfig, answer_records
    from selfknow.models import load_model

    model, tokenizer = load_model(judge.model)
    chat = bool(tokenizer.chat_template)
    queries = []
    for r in todo:
        messages = judge_messages(r)
        prompt = (
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            if chat
            else "\n\n".join(m["content"] for m in messages)
        )
        queries.append(dataclasses.replace(r, prompt=prompt, format="oe", choices=None, answer_index=None))
    replies, _ = answer_records(model, tokenizer, queries, config=AnswerConfig(max_new_tokens=4), progress=progress)
    by_id = {q.id: q.output or "" for q in replies}
    emit([_verdict(r, by_id[r.id], judge) for r in todo])


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

        def emit(batch: list[Record]) -> None:
            if journal:
                journal.append(batch)
            graded.update((r.id, r) for r in batch)
            bar.advance(len(batch), 0)

        if todo:
            _judge_remote(todo, judge, emit) if judge.url else _judge_local(todo, judge, emit, progress)
    order = [r.id for r in records]
    return journal.finish(order) if journal else [graded[i] for i in order]

"""Answering through an OpenAI-compatible endpoint (a hosted model, a vLLM or TGI server, ``selfknow serve``):
the records the local engine writes, for a model whose weights cannot be read.

Each question is one chat request for the greedy answer (temperature 0) with its tokens' log-probabilities
where the server returns them, and with ``samples`` a second request for that many answers at the sample
temperature and top-p, seeded by the record id (a server that honours ``seed`` gives a resumed run the same
samples). With ``verbal``, a third request sends the question, the answer and the reference's verbal-confidence
request as one user message (the reference's text form, which any chat endpoint accepts) and keeps the reply
(``scores["verbal_reply"]``) for the ``verbal`` estimator: the confidence a model that shows no weights can
state about itself. The question goes as the one user message:
the server applies its own chat template. Answers are cut at the end of their first line as the local engine
cuts them, and their log-probabilities with them. Records carry ``scores["engine"] = "openai"``; they have
no letter logits and no hidden states.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import httpx

from selfknow.data.records import Record
from selfknow.data.splits import rng_for
from selfknow.engine import AnswerConfig, AnswerStats, Emit, Item, answered_record, cut_at_stop
from selfknow.errors import SelfknowError
from selfknow.prompts import VERBAL_REQUEST, question_body

ENGINE = "openai"
CHOICE_ASK = "Answer with the letter of one choice."


@dataclass(frozen=True)
class Endpoint:
    """``model`` as served at ``url`` (an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1)."""

    url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    workers: int = 8
    timeout: float = 120.0
    verbal: bool = False  # also ask for the answer's probability of being correct
    verbal_tokens: int = 12


def endpoint_prompt(record: Record) -> str:
    """The user message: the question, with its choices and the ask for a letter for multiple choice."""
    return f"{question_body(record)}\n\n{CHOICE_ASK}" if record.format == "choice" else record.question


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def first_line(text: str, stops: Sequence[str]) -> str:
    return cut_at_stop(text.lstrip(), stops)[0].strip()


def kept_logprobs(content: list[dict[str, Any]] | None, answer: str) -> list[float] | None:
    """The log-probs of the tokens that make up ``answer`` (the reply's start), or None without log-probs."""
    if content is None:
        return None
    text, kept = "", 0
    while kept < len(content) and len(text.strip()) < len(answer):
        text += content[kept].get("token", "")
        kept += 1
    return [float(token["logprob"]) for token in content[:kept]]


class EndpointAnswerer:
    """Same interface as :class:`~selfknow.engine.Answerer`: ``run(items, emit)`` and ``stats``."""

    def __init__(self, endpoint: Endpoint, config: AnswerConfig):
        self.endpoint, self.config, self.stats = endpoint, config, AnswerStats()
        self.headers = {"Authorization": f"Bearer {os.environ.get(endpoint.api_key_env, 'none')}"}

    def run(self, items: Sequence[Item], emit: Emit) -> None:
        """Questions answered concurrently; each is emitted (journaled) as soon as it is done."""
        if not items:
            return
        with (
            httpx.Client(timeout=self.endpoint.timeout, headers=self.headers) as client,
            ThreadPoolExecutor(self.endpoint.workers) as pool,
        ):
            futures = [pool.submit(self._answer, client, record, prompt) for record, prompt, _ in items]
            for future in as_completed(futures):
                record, tokens = future.result()
                emit([record], tokens)

    def _answer(self, client: httpx.Client, record: Record, prompt: str) -> tuple[Record, int]:
        config = self.config
        greedy = self._ask(client, record, [user(prompt)], {"temperature": 0})[0]
        answer = first_line(greedy["text"], config.stop)
        scores: dict[str, Any] = {"engine": ENGINE}
        if self.endpoint.verbal:
            request = [user(f"{question_body(record)}\nAnswer: {answer}\n\n{VERBAL_REQUEST}")]
            settings = {"temperature": 0, "max_tokens": self.endpoint.verbal_tokens}
            scores["verbal_reply"] = self._ask(client, record, request, settings)[0]["text"]
        logprobs = kept_logprobs(greedy["content"], answer)
        if logprobs is not None:
            scores["token_logprobs"] = logprobs
        tokens = len(logprobs or [])
        if config.samples:
            seed = rng_for(config.seed, record.id, "samples").getrandbits(31)
            settings = {"temperature": config.sample_temperature, "top_p": config.sample_top_p}
            drawn = self._ask(client, record, [user(prompt)], {**settings, "n": config.samples, "seed": seed})
            scores["samples"] = []
            for sample in drawn:
                text = first_line(sample["text"], config.stop)
                kept = kept_logprobs(sample["content"], text)
                scores["samples"].append({"text": text, **({"token_logprobs": kept} if kept is not None else {})})
            scores["sampling"] = config.sampling
            tokens += sum(len(s.get("token_logprobs", [])) for s in scores["samples"])
        self.stats.generated_tokens += len(logprobs or [])
        self.stats.sampled_tokens += tokens - len(logprobs or [])
        return answered_record(record, prompt, answer, scores), tokens

    def _ask(
        self, client: httpx.Client, record: Record, messages: list[dict[str, str]], settings: dict[str, Any]
    ) -> list[dict]:
        """The reply's choices as text and log-prob content (None where the server gave none)."""
        body = {
            "model": self.endpoint.model,
            "messages": messages,
            "max_tokens": self.config.max_new_tokens,
            "logprobs": True,
            **settings,
        }
        url = f"{self.endpoint.url.rstrip('/')}/chat/completions"
        reply = post_chat(client, url, body, f"endpoint {url} failed for record {record.id!r}")
        return [
            {"text": c["message"]["content"] or "", "content": (c.get("logprobs") or {}).get("content")}
            for c in reply["choices"]
        ]


def post_chat(
    client: httpx.Client, url: str, body: dict[str, Any], failure: str, error: type[SelfknowError] = SelfknowError
) -> dict[str, Any]:
    """A chat completion's JSON with choices, tried three times; then ``error`` saying ``failure`` and why."""
    for attempt in range(3):
        try:
            response = client.post(url, json=body)
            response.raise_for_status()
            reply = response.json()
            reply["choices"][0]["message"]
            return reply
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as err:
            if attempt == 2:
                detail = err.response.text[:200] if isinstance(err, httpx.HTTPStatusError) else str(err)
                raise error(f"{failure}: {detail}") from None
    raise AssertionError("unreachable")

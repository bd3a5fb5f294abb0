"""The HTTP service: OpenAI-compatible completions whose every answer carries P(correct).

One :class:`~selfknow.ask.Asker` (one model, loaded once; adapter off for the answer, on for the
confidence) serves every request. Concurrent requests are batched by :class:`Batcher`; what exceeds
its bound is refused with 503. Errors are OpenAI-shaped JSON: ``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from selfknow.ask import Answer, Asker, Sampled, Sampling
from selfknow.errors import SelfknowError
from selfknow.service.batcher import Batcher, Overloaded
from selfknow.service.schemas import AskRequest, ChatCompletionRequest, CompletionRequest

ABSTAIN_TEXT = "I don't know."  # what an abstaining completion says; the withheld answer is in `answer`


@dataclass(frozen=True)
class ServiceConfig:
    max_batch: int = 16  # questions answered together
    batch_window_ms: float = 20.0  # how long the first request of a batch waits for others
    max_pending: int = 64  # accepted, unfinished requests; more get 503
    max_body_bytes: int = 64 * 1024  # larger bodies get 413
    max_prompt_tokens: int = 1024  # longer questions get 413
    max_tokens_cap: int = 256  # the most new tokens a request may ask for; more get 400
    timeout_s: float = 120.0  # a request not answered by then gets 504


class ServiceError(Exception):
    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error", **headers) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def _describe(errors: Sequence[dict[str, Any]]) -> str:
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        if error.get("type") == "extra_forbidden":
            parts.append(f"unknown field '{where}'")
        else:
            parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(asker: Asker, config: ServiceConfig = ServiceConfig(), model_name: str | None = None) -> FastAPI:
    """The FastAPI app serving ``asker``; run it with uvicorn (``selfknow serve`` does)."""
    served = model_name or asker.model_name
    batcher = Batcher(
        lambda questions, key: asker.ask(questions, max_new_tokens=key[0], sampling=key[1]),
        max_batch=config.max_batch,
        window=config.batch_window_ms / 1000,
        max_pending=config.max_pending,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="selfknow", summary="Answers with the probability they are right", lifespan=lifespan)
    app.state.batcher, app.state.asker = batcher, asker

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
            return _error(413, f"request body is {declared} bytes; the limit is {config.max_body_bytes}", "too_large")
        if request.method == "POST" and len(await request.body()) > config.max_body_bytes:
            return _error(413, f"request body exceeds {config.max_body_bytes} bytes", "too_large")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        errors = error.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, f"malformed JSON: {errors[0].get('ctx', {}).get('error', 'cannot parse')}", "bad_json")
        return _error(422, _describe(errors), "invalid_fields")

    @app.exception_handler(ServiceError)
    async def refused(_request: Request, error: ServiceError) -> JSONResponse:
        headers = {"Retry-After": "1"} if error.status == 503 else {}
        return _error(error.status, error.message, error.code, error.kind, **headers)

    async def answer(questions: list[str], max_tokens: int | None, sampling: Sampling | None = None) -> list[Answer]:
        limit = max_tokens or asker.max_new_tokens
        if limit > config.max_tokens_cap:
            raise ServiceError(400, f"max_tokens {limit} exceeds this server's cap of {config.max_tokens_cap}", "cap")
        if not questions or any(not q.strip() for q in questions):
            raise ServiceError(400, "the question is empty", "empty_question")
        if len(questions) > config.max_batch:
            raise ServiceError(400, f"{len(questions)} prompts in one request; at most {config.max_batch}", "batch")
        for q in questions:
            tokens = len(asker.tokenizer(q, add_special_tokens=False).input_ids)
            if tokens > config.max_prompt_tokens:
                raise ServiceError(
                    413, f"the prompt is {tokens} tokens; the limit is {config.max_prompt_tokens}", "too_long"
                )
        try:
            return await asyncio.wait_for(batcher.submit(questions, (limit, sampling)), config.timeout_s)
        except Overloaded as error:
            raise ServiceError(503, f"server busy: {error}; retry later", "overloaded", "server_error") from error
        except asyncio.TimeoutError as error:
            raise ServiceError(504, f"no answer within {config.timeout_s:g} s", "timeout", "server_error") from error
        except SelfknowError as error:
            raise ServiceError(400, str(error), "invalid_question") from error

    def check_generation(request: ChatCompletionRequest | CompletionRequest) -> Sampling | None:
        """The sampling a request asks for (None: the greedy answer with its confidence)."""
        if request.model is not None and request.model != served:
            raise ServiceError(
                404, f"model '{request.model}' is not served here; this server serves '{served}'", "model_not_found"
            )
        if request.stream:
            raise ServiceError(400, "streaming is not supported: the confidence needs the whole answer", "stream")
        if not request.temperature:
            if request.n != 1:
                raise ServiceError(400, "n must be 1 at temperature 0: every greedy choice would be the same", "n")
            if request.top_p not in (None, 1):
                raise ServiceError(400, "top_p applies to sampling: set a temperature above 0", "sampling")
            return None
        if request.n > config.max_batch:
            raise ServiceError(400, f"n is {request.n}; at most {config.max_batch} samples a request", "n")
        return Sampling(request.n, request.temperature, request.top_p or 1.0, request.seed or 0)

    def logprob_fields(tokens: Sequence[str], logprobs: Sequence[float], chat: bool) -> dict[str, Any]:
        """The answer's token log-probs in OpenAI's chat or legacy completions shape (of ``answer``: an
        abstaining reply shows other text)."""
        if chat:
            pairs = zip(tokens, logprobs, strict=True)
            return {
                "content": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []} for t, lp in pairs
                ]
            }
        offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
        return {"tokens": list(tokens), "token_logprobs": list(logprobs), "top_logprobs": None, "text_offset": offsets}

    def sampled_choice(index: int, sample: Sampled, chat: bool, logprobs: bool) -> dict[str, Any]:
        """A sampled answer: no confidence (the confidence is the greedy answer's), no abstention."""
        choice: dict[str, Any] = {"index": index, "finish_reason": "length" if sample.truncated else "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": sample.text}
        else:
            choice["text"] = sample.text
        choice["logprobs"] = logprob_fields(sample.tokens, sample.token_logprobs, chat) if logprobs else None
        return {**choice, "confidence": None, "abstained": None, "answer": sample.text}

    def sampled_envelope(kind: str, reply: Answer, chat: bool, logprobs: bool) -> dict[str, Any]:
        choices = [sampled_choice(i, s, chat, logprobs) for i, s in enumerate(reply.samples)]
        completion = sum(len(s.token_logprobs) for s in reply.samples)
        body = envelope(kind, [], choices)
        body["usage"] = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": reply.prompt_tokens + completion,
        }
        return body

    def choice_fields(reply: Answer) -> dict[str, Any]:
        return {
            "finish_reason": "length" if reply.truncated else "stop",
            "confidence": reply.confidence,
            "abstained": reply.abstained,
            "answer": reply.answer,
        }

    def envelope(kind: str, replies: list[Answer], choices: list[dict[str, Any]]) -> dict[str, Any]:
        prompt = sum(r.prompt_tokens for r in replies)
        completion = sum(r.completion_tokens for r in replies)
        body = {
            "id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": served,
            "choices": choices,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            "estimator": asker.name,
        }
        if len(replies) == 1:
            body["confidence"], body["abstained"] = replies[0].confidence, replies[0].abstained
        return body

    def shown(reply: Answer) -> str:
        return ABSTAIN_TEXT if reply.abstained else reply.answer

    @app.get("/health")
    async def health() -> dict[str, Any]:
        threshold = asker.threshold.to_dict() if asker.threshold is not None else None
        return {
            "status": "ok",
            "model": served,
            "estimator": asker.name,
            "abstention": threshold,
            "pending": batcher.pending,
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served, "object": "model", "created": 0, "owned_by": "selfknow"}]}

    @app.post("/v1/ask")
    async def ask(request: AskRequest) -> dict[str, Any]:
        reply = (await answer([request.question], request.max_tokens))[0]
        threshold = asker.threshold.threshold if asker.threshold is not None else None
        return {
            "question": reply.question,
            "answer": reply.answer,
            "confidence": reply.confidence,
            "estimator": reply.estimator,
            "abstained": reply.abstained,
            "threshold": threshold,
            "model": served,
        }

    @app.post("/v1/chat/completions")
    async def chat(request: ChatCompletionRequest) -> dict[str, Any]:
        if len(request.messages) != 1 or request.messages[0].role != "user":
            raise ServiceError(
                400,
                "send exactly one user message: selfknow answers one question per request "
                "(system prompts and earlier turns are not supported)",
                "single_turn",
            )
        sampling = check_generation(request)
        limit = request.max_completion_tokens or request.max_tokens
        replies = await answer([request.messages[0].content], limit, sampling)
        reply = replies[0]
        if sampling is not None:
            return sampled_envelope("chat.completion", reply, True, request.logprobs)
        message = {"role": "assistant", "content": shown(reply)}
        choice = {"index": 0, "message": message, **choice_fields(reply)}
        choice["logprobs"] = logprob_fields(reply.tokens, reply.token_logprobs, True) if request.logprobs else None
        return envelope("chat.completion", replies, [choice])

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest) -> dict[str, Any]:
        sampling = check_generation(request)
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        logprobs = request.logprobs is not None
        if sampling is not None:
            if len(prompts) != 1:
                raise ServiceError(400, "sampling takes one prompt a request", "batch")
            return sampled_envelope(
                "text_completion", (await answer(prompts, request.max_tokens, sampling))[0], False, logprobs
            )
        replies = await answer(prompts, request.max_tokens)
        choices = [
            {
                "index": i,
                "text": shown(reply),
                "logprobs": logprob_fields(reply.tokens, reply.token_logprobs, False) if logprobs else None,
                **choice_fields(reply),
            }
            for i, reply in enumerate(replies)
        ]
        return envelope("text_completion", replies, choices)

    return app

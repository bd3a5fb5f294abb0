"""Request bodies of the HTTP service: the OpenAI fields selfknow honours, and nothing else.

Unknown fields are refused (HTTP 422) rather than ignored, so a client never believes a setting took
effect when it did not. The greedy answer carries the confidence; a request with a temperature above 0
gets ``n`` sampled answers instead (seeded by ``seed``), which carry none.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(_Strict):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class _Generation(_Strict):
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = Field(default=1, ge=1)
    seed: int | None = None
    stream: bool = False
    user: str | None = None


class ChatCompletionRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=0)  # only the chosen tokens' log-probs are kept


class CompletionRequest(_Generation):
    prompt: str | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=0)


class AskRequest(_Strict):
    question: str
    max_tokens: int | None = Field(default=None, ge=1)

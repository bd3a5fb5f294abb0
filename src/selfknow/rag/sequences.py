"""Self-RAG generator training sequences: the prompt, the output with reflection tokens, and the loss mask.

An output is a run of segments, each introduced by its Retrieve token (Asai et al. 2023, App. A.2)::

    [No Retrieval]{answer}
    [Retrieval]<paragraph>{title}\\n{text}</paragraph>[Relevant]{answer}[Fully supported]
    [Retrieval]<paragraph>{title}\\n{text}</paragraph>[Irrelevant]{answer}

followed once by ``[Utility:k]`` and the end-of-sequence text. The loss (paper Eq. 2) covers the whole
output, reflection tokens included, except the retrieved passage text: the model reads passages, it is
not taught to write them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from selfknow.errors import DataError
from selfknow.rag.reflection import (
    IRRELEVANT,
    ISSUP_TOKENS,
    ISUSE_TOKENS,
    NO_RETRIEVAL,
    PARAGRAPH_CLOSE,
    PARAGRAPH_OPEN,
    PARAGRAPH_TOKENS,
    RELEVANT,
    RETRIEVAL,
    reflection_token_ids,
)
from selfknow.sft import IGNORE_INDEX

PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"
PROMPT_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"


def format_prompt(instruction: str, input_text: str = "") -> str:
    """The generator prompt of the reference code (``PROMPT_DICT``); the ``### Input`` block only when given."""
    if input_text:
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=input_text)
    return PROMPT.format(instruction=instruction)


class Evidence(Protocol):
    """A retrieved passage as a segment needs it (:class:`selfknow.rag.corpus.Passage` is one)."""

    @property
    def title(self) -> str: ...

    @property
    def text(self) -> str: ...


def paragraph(passage: Evidence) -> str:
    """``<paragraph>{title}\n{text}</paragraph>``, as the reference appends evidence."""
    return f"{PARAGRAPH_OPEN}{passage.title}\n{passage.text}{PARAGRAPH_CLOSE}"


@dataclass(frozen=True)
class Segment:
    """One answer segment: without a passage, or with one judged relevant (then with its IsSup token) or not.

    ``support`` is one of :data:`~selfknow.rag.reflection.ISSUP_TOKENS`, given exactly when the segment has
    a relevant passage.
    """

    answer: str
    passage: Evidence | None = None
    relevant: bool = True
    support: str | None = None

    def serialize(self) -> str:
        if self.passage is None:
            if self.support is not None:
                raise DataError("a segment without a passage cannot carry an IsSup token")
            return f"{NO_RETRIEVAL}{self.answer}"
        evidence = f"{RETRIEVAL}{paragraph(self.passage)}"
        if not self.relevant:
            if self.support is not None:
                raise DataError("an [Irrelevant] segment carries no IsSup token")
            return f"{evidence}{IRRELEVANT}{self.answer}"
        if self.support not in ISSUP_TOKENS:
            raise DataError(f"a [Relevant] segment needs an IsSup token, one of {ISSUP_TOKENS}; got {self.support!r}")
        return f"{evidence}{RELEVANT}{self.answer}{self.support}"


def serialize(segments: Sequence[Segment], utility: int, eos: str) -> str:
    """The output text: the segments in order, then ``[Utility:{utility}]`` and ``eos``."""
    if not segments:
        raise DataError("an output needs at least one segment")
    if utility not in range(1, 6):
        raise DataError(f"utility is a rating from 1 to 5, got {utility!r}")
    return "".join(segment.serialize() for segment in segments) + ISUSE_TOKENS[utility - 1] + eos


def encode_example(tokenizer, prompt: str, output: str) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt + output`` and their labels, ``-100`` where the loss is off.

    Prompt and output are tokenized separately and concatenated, so the output's tokens are the ones the
    model produces after the prompt. Labels are ``-100`` on every prompt token and on the tokens strictly
    between each ``<paragraph>`` and the ``</paragraph>`` that closes it; the tags, the reflection tokens,
    the answers and ``eos`` are supervised. (The reference code masks up to the *last* closing tag, which
    also hides the answers between passages in multi-passage outputs, and leaves the last prompt token in
    the loss; both are fixed here.) An opening tag without its closing tag, or the reverse, is an error.
    """
    prompt_ids = tokenizer(prompt).input_ids
    output_ids = tokenizer(output, add_special_tokens=False).input_ids
    labels = list(output_ids)
    open_id, close_id = reflection_token_ids(tokenizer, PARAGRAPH_TOKENS)
    start = None
    for position, token in enumerate(output_ids):
        if token == open_id:
            if start is not None:
                raise DataError(f"{PARAGRAPH_OPEN} opened again before {PARAGRAPH_CLOSE} in output: {output[:200]!r}")
            start = position
        elif token == close_id:
            if start is None:
                raise DataError(f"{PARAGRAPH_CLOSE} without a {PARAGRAPH_OPEN} before it in output: {output[:200]!r}")
            labels[start + 1 : position] = [IGNORE_INDEX] * (position - start - 1)
            start = None
    if start is not None:
        raise DataError(f"{PARAGRAPH_OPEN} is never closed in output: {output[:200]!r}")
    return prompt_ids + output_ids, [IGNORE_INDEX] * len(prompt_ids) + labels

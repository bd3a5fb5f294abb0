"""The uncertainty query: the question and the proposed answer, then "Is the proposed answer correct?".

The raw form is the calibration-tuning reference's (spec §7)::

    Question: What is the capital of France?
    Answer: Paris

    Is the proposed answer correct?
    Choices:
    (i): no
    (ii): yes
    Answer:

P(correct) = softmax over the logits of the two option tokens at the last position, index 1 (yes).
Which tokens those are depends on the tokenizer and on what precedes them (SmolLM2 continues
"Answer:" with " i", a different token from "i"), so they are found by tokenizing the query itself.
The chat form puts the question and the answer in a user and an assistant turn, the query in a second
user turn, and primes the reply with "Answer:".
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from selfknow.data.records import Record
from selfknow.prompts import SYSTEM_PROMPT, continuation_token, question_body

QUERY = "Is the proposed answer correct?\nChoices:\n(i): no\n(ii): yes"
OPTIONS = ("i", "ii")  # index 1 = yes = correct
STYLES = ("raw", "chat")


@dataclass(frozen=True)
class QueryText:
    """A rendered query, and the span of its answer tokens (for the answer-preserving regularizer)."""

    text: str
    ids: list[int]
    answer_start: int  # index of the first answer token in ``ids``
    answer_end: int  # one past the last answer token


def answer_prefix(record: Record) -> str:
    return f"{question_body(record)}\nAnswer:"


def render_query(record: Record, tokenizer: PreTrainedTokenizerBase, style: str = "raw") -> QueryText:
    """The query text of an answered record, tokenized, with the answer's token span located."""
    if style not in STYLES:
        raise ValueError(f"query style must be one of {STYLES}, got {style!r}")
    answer = (record.output or "").strip()
    if style == "raw":
        head = answer_prefix(record)
        body = f"{head} {answer}" if answer else head
        text = f"{body}\n\n{QUERY}\nAnswer:"
        special = True
    else:
        turns = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question_body(record)},
        ]
        head = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        body = head + answer
        turns += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": QUERY},
            {"role": "assistant", "content": "Answer:"},
        ]
        text = tokenizer.apply_chat_template(turns, tokenize=False, continue_final_message=True)
        special = False
    ids = tokenizer(text, add_special_tokens=special).input_ids
    start = common_prefix(ids, tokenizer(head, add_special_tokens=special).input_ids)
    # The answer's tokens as they stand in the query: a last token the tokenizer merged with the text after
    # it (Qwen2 writes "." and a blank line as one token) is not among them, the rest are.
    end = common_prefix(ids, tokenizer(body, add_special_tokens=special).input_ids)
    return QueryText(text, ids, start, max(start, end))


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading ids ``a`` and ``b`` share."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def option_ids(tokenizer: PreTrainedTokenizerBase, query_text: str) -> tuple[int, int]:
    """The token ids of "(i)" and "(ii)"'s labels as the model would continue this query."""
    first, second = (continuation_token(tokenizer, query_text, option) for option in OPTIONS)
    return first, second

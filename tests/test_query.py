from __future__ import annotations

import pytest

from selfknow.confidence.query import QUERY, option_ids, render_query
from selfknow.data.records import Record


@pytest.fixture(params=["smollm2", "qwen2"])
def any_tokenizer(request):
    """SmolLM2's tokenizer and Qwen2's, which merge text differently ("." and a blank line are one Qwen token)."""
    return request.getfixturevalue("tokenizer" if request.param == "smollm2" else "qwen_tokenizer")


def answered(output: str) -> Record:
    return Record(
        id="q", dataset="t", split="test", question="What is the capital of France?", answer="Paris", output=output
    )


@pytest.mark.parametrize("style", ["raw", "chat"])
def test_option_tokens_are_the_spaced_roman_numerals_after_the_answer_cue(any_tokenizer, style):
    tokenizer = any_tokenizer
    query = render_query(answered("Paris"), tokenizer, style)
    assert query.text.endswith("Answer:") and QUERY in query.text
    first, second = option_ids(tokenizer, query.text)
    assert (first, second) == (tokenizer(" i").input_ids[-1], tokenizer(" ii").input_ids[-1])
    assert (first, second) != (tokenizer("i").input_ids[-1], tokenizer("ii").input_ids[-1])  # SmolLM2: 89, 4877


ANSWERS = ["The capital of France is Paris.", "Paris", "It is 42.", "(B) 1945!", "Yes.\nNo?", "Ça va… 東京."]


@pytest.mark.parametrize("style", ["raw", "chat"])
def test_the_answer_span_covers_the_answer_tokens_the_rendered_query_holds(any_tokenizer, style):
    """The span is the answer's tokens as they stand in the rendered query: all of them, except a last token
    the tokenizer merged with the text after it (Qwen2 writes "." and a blank line as one token), never none."""
    tokenizer = any_tokenizer
    for answer in ANSWERS:
        query = render_query(answered(answer), tokenizer, style)
        assert query.ids == tokenizer(query.text, add_special_tokens=style == "raw").input_ids
        span = tokenizer.decode(query.ids[query.answer_start : query.answer_end]).strip()
        assert answer.startswith(span) and len(span) >= len(answer) - 1, (answer, span)
        assert len(answer) < 2 or query.answer_end - query.answer_start >= 1
    if tokenizer.vocab_size > 100_000:  # Qwen2: the case that switched the regularizer off
        query = render_query(answered("Paris."), tokenizer, "raw")
        assert tokenizer.decode(query.ids[query.answer_start : query.answer_end]).strip() == "Paris"


def test_an_empty_answer_has_no_span_to_regularize(any_tokenizer):
    tokenizer = any_tokenizer
    query = render_query(answered(""), tokenizer)
    assert query.answer_start == query.answer_end
    assert "Answer:\n\nIs the proposed answer correct?" in query.text

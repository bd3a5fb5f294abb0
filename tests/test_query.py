from __future__ import annotations

import pytest

from selfknow.confidence.query import QUERY, option_ids, render_query
from selfknow.data.records import Record


def answered(output: str) -> Record:
    return Record(
        id="q", dataset="t", split="test", question="What is the capital of France?", answer="Paris", output=output
    )


@pytest.mark.parametrize("style", ["raw", "chat"])
def test_option_tokens_are_the_spaced_roman_numerals_after_the_answer_cue(tokenizer, style):
    query = render_query(answered("Paris"), tokenizer, style)
    assert query.text.endswith("Answer:") and QUERY in query.text
    first, second = option_ids(tokenizer, query.text)
    assert (first, second) == (tokenizer(" i").input_ids[-1], tokenizer(" ii").input_ids[-1])
    assert (first, second) != (tokenizer("i").input_ids[-1], tokenizer("ii").input_ids[-1])  # SmolLM2: 89, 4877


@pytest.mark.parametrize("style", ["raw", "chat"])
def test_the_answer_span_covers_exactly_the_answer_tokens(tokenizer, style):
    query = render_query(answered("The capital of France is Paris."), tokenizer, style)
    span = tokenizer.decode(query.ids[query.answer_start : query.answer_end])
    assert span.strip() == "The capital of France is Paris."
    assert query.ids == tokenizer(query.text, add_special_tokens=style == "raw").input_ids


def test_an_empty_answer_has_no_span_to_regularize(tokenizer):
    query = render_query(answered(""), tokenizer)
    assert query.answer_start == query.answer_end
    assert "Answer:\n\nIs the proposed answer correct?" in query.text

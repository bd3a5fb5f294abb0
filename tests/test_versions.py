"""selfknow's own calls into transformers use no API that a later release removes."""

from __future__ import annotations

import warnings

from selfknow.answer import AnswerConfig, answer_records
from selfknow.confidence.features import forward_queries
from selfknow.confidence.query import render_query
from selfknow.models import load_model
from tests.conftest import make_records


def test_answering_and_the_feature_pass_raise_no_deprecation_warning(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    records = make_records(6) + make_records(4, "choice", dataset="mc")
    cue = tuple(tokenizer(" Yes", add_special_tokens=False).input_ids)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answered, _ = answer_records(
            model, tokenizer, records, config=AnswerConfig(max_new_tokens=4, cue=cue, cue_read=cue), progress=False
        )
        queries = [render_query(r, tokenizer) for r in answered if r.format == "oe"]
        forward_queries(model, tokenizer, queries, hidden=True, contrast=True)
    deprecations = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert deprecations == []

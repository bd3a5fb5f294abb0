"""The embedded model end to end: loading from its GGUF cache, answering and grading real questions."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM

from selfknow.answer import answer_records
from selfknow.api import answer_dataset
from selfknow.data.records import Record
from selfknow.grade import grade_records
from selfknow.models import ALIASES, _gguf_cache_path, load_model
from tests.conftest import SHARED_MMLU as MMLU

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2", device="cpu")


def test_the_gguf_is_dequantized_once_and_then_loaded_from_safetensors(smollm2, monkeypatch):
    assert (_gguf_cache_path(ALIASES["smollm2"].path()) / "model.safetensors").exists()
    calls = []
    real = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: calls.append(k) or real(*a, **k))
    model, tokenizer = load_model("smollm2", device="cpu")
    assert calls and all("gguf_file" not in k for k in calls)
    assert model.config.model_type == "llama" and tokenizer.chat_template


def test_the_embedded_model_knows_famous_capitals(smollm2):
    model, tokenizer = smollm2
    facts = {
        "France": "Paris",
        "Japan": "Tokyo",
        "Italy": "Rome",
        "Egypt": "Cairo",
        "Russia": "Moscow",
        "Germany": "Berlin",
        "Spain": "Madrid",
        "Peru": "Lima",
    }
    records = [
        Record(id=c, dataset="t", split="test", question=f"What is the capital of {c}?", answer=a)
        for c, a in facts.items()
    ]
    graded = grade_records(answer_records(model, tokenizer, records, progress=False)[0])
    assert sum(r.correct for r in graded) >= 6, [r.output for r in graded]


def test_mmlu_five_shot_choice_reads_letters_with_shared_prefixes(tmp_path):
    if not MMLU.exists():
        pytest.skip("../shared/data/mmlu is not here")
    records, stats = answer_dataset(
        f"mmlu-csv:{MMLU}",
        format="choice",
        kshot=5,
        limit=12,
        device="cpu",
        output=tmp_path / "mmlu.jsonl",
        progress=False,
    )
    assert all(r.output in "abcd" and len(r.scores["choice_logits"]) == 4 for r in records)
    assert stats.per_prefix and min(stats.per_prefix) > 300  # five worked examples, computed once per subject
    assert stats.computed_tokens + sum(stats.per_prefix) < stats.prompt_tokens

"""Self-RAG building blocks: reflection tokens and their adapter, training sequences, critique scores."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from selfknow.errors import DataError, ModelError
from selfknow.rag.critique import (
    ReflectionIds,
    aggregate_closed_set,
    critique_generation,
    final_score,
    relevance_score,
    retrieve_probability,
    should_retrieve,
    strip_reflection,
    support_score,
    utility_score,
)
from selfknow.rag.reflection import (
    FULLY_SUPPORTED,
    NO_SUPPORT,
    PARAGRAPH_CLOSE,
    PARAGRAPH_OPEN,
    PARTIALLY_SUPPORTED,
    REFLECTION_TOKENS,
    add_reflection_tokens,
    load_reflection_adapter,
    reflection_lora_config,
    reflection_token_ids,
    save_reflection_adapter,
)
from selfknow.rag.sequences import IGNORE_INDEX, Segment, encode_example, format_prompt, serialize
from tests.conftest import TINY


@dataclass(frozen=True)
class Doc:
    title: str
    text: str


@pytest.fixture(scope="module")
def tiny_tied_dir(tokenizer, tmp_path_factory):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, **TINY)
    path = tmp_path_factory.mktemp("tiny-llama-tied")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(params=["llama", "llama-tied", "gemma"])
def base_dir(request, tiny_llama_dir, tiny_tied_dir, tiny_gemma_dir):
    return {"llama": tiny_llama_dir, "llama-tied": tiny_tied_dir, "gemma": tiny_gemma_dir}[request.param]


@pytest.fixture
def fresh_tokenizer(tiny_llama_dir):
    """A tokenizer of our own: adding tokens must not touch the session-wide one."""
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def reflection_tokenizer(tiny_llama_dir):
    """A tokenizer with the reflection tokens (read-only for the tests that share it)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    add_reflection_tokens(load_base(tiny_llama_dir), tokenizer)
    return tokenizer


def load_base(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def tied(model) -> bool:
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight


# --- reflection tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("base_dir", ["llama", "llama-tied"], indirect=True)
def test_each_token_gets_one_new_id_and_the_mean_row(base_dir):
    model, tokenizer = load_base(base_dir), AutoTokenizer.from_pretrained(base_dir)
    vocab = len(tokenizer)
    matrices = [model.get_input_embeddings().weight] + ([] if tied(model) else [model.get_output_embeddings().weight])
    before = [w.detach().clone() for w in matrices]

    ids = add_reflection_tokens(model, tokenizer)

    assert len(REFLECTION_TOKENS) == len(set(REFLECTION_TOKENS)) == 15
    assert ids == list(range(vocab, vocab + 15))
    assert [tokenizer.encode(t, add_special_tokens=False) for t in REFLECTION_TOKENS] == [[i] for i in ids]
    assert tied(model) == model.config.tie_word_embeddings  # resizing kept a tied model tied
    matrices = [model.get_input_embeddings().weight] + ([] if tied(model) else [model.get_output_embeddings().weight])
    for old, new in zip(before, matrices, strict=True):
        assert new.shape[0] == vocab + 15
        assert torch.equal(new[:vocab], old)
        torch.testing.assert_close(new[ids], old.mean(dim=0).expand(15, -1), rtol=0, atol=1e-7)


def test_adding_twice_changes_nothing(tiny_llama_dir, fresh_tokenizer):
    model = load_base(tiny_llama_dir)
    ids = add_reflection_tokens(model, fresh_tokenizer)
    size, weight = len(fresh_tokenizer), model.get_input_embeddings().weight.detach().clone()

    assert add_reflection_tokens(model, fresh_tokenizer) == ids
    assert len(fresh_tokenizer) == size
    assert torch.equal(model.get_input_embeddings().weight, weight)


def test_token_ids_need_the_tokens_added(fresh_tokenizer):
    with pytest.raises(ModelError, match="add_reflection_tokens"):
        reflection_token_ids(fresh_tokenizer)


def _train_step(peft_model, ids: list[int]) -> None:
    """One SGD step on a sequence that uses old tokens (5..9) and every reflection token."""
    peft_model.train()
    x = torch.tensor([[5, 6, 7, 8, 9, *ids]])
    peft_model(input_ids=x, labels=x).loss.backward()
    torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=1.0).step()
    peft_model.eval()


def _adapted(base_dir, tokenizer):
    model = load_base(base_dir)
    ids = add_reflection_tokens(model, tokenizer)
    return get_peft_model(model, reflection_lora_config(model, ids, r=4, alpha=8, target_modules=["q_proj"])), ids


@pytest.mark.parametrize("base_dir", ["llama", "llama-tied"], indirect=True)
def test_lora_trains_only_the_reflection_rows(base_dir):
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    peft_model, ids = _adapted(base_dir, tokenizer)
    rows_per_side = {
        name: p.shape for name, p in peft_model.named_parameters() if p.requires_grad and "lora" not in name
    }
    assert all("token_adapter" in name and shape == (15, 64) for name, shape in rows_per_side.items())
    assert len(rows_per_side) == (1 if peft_model.config.tie_word_embeddings else 2)
    embed, head = peft_model.get_input_embeddings(), peft_model.get_output_embeddings()
    before = embed.weight.detach().clone(), head.weight.detach().clone()

    _train_step(peft_model, ids)

    for weight, old in zip((embed.weight, head.weight), before, strict=True):
        assert not torch.equal(weight[ids], old[ids])
        assert torch.equal(weight[: ids[0]], old[: ids[0]])  # token 5 took part in the step, its rows did not move
    if len(rows_per_side) == 1:  # tied: the head reads the same trained rows
        assert torch.equal(head.weight[ids], embed.weight[ids])


def test_adapter_round_trip_gives_identical_logits(base_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    peft_model, ids = _adapted(base_dir, tokenizer)
    _train_step(peft_model, ids)
    x = torch.tensor([[5, 6, ids[1], ids[5], 7, ids[6], ids[4], ids[12]]])
    with torch.no_grad():
        expected = peft_model(input_ids=x).logits

    save_reflection_adapter(peft_model, tokenizer, tmp_path / "adapter")
    loaded, loaded_tokenizer = load_reflection_adapter(load_base(base_dir), tmp_path / "adapter")

    with torch.no_grad():
        assert torch.equal(loaded(input_ids=x).logits, expected)
    assert reflection_token_ids(loaded_tokenizer) == ids
    embedding_bytes = len(tokenizer) * 64 * 4
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size < embedding_bytes / 50


# --- training sequences ------------------------------------------------------------------------------


def test_prompt_is_the_reference_format():
    assert format_prompt("Who?") == "### Instruction:\nWho?\n\n### Response:\n"
    assert format_prompt("Who?", "ctx") == "### Instruction:\nWho?\n\n### Input:\nctx\n\n### Response:\n"


def test_serialize_writes_each_segment_shape():
    paris = Doc("Paris", "Capital of France.")
    assert serialize([Segment("Paris")], 4, "</s>") == "[No Retrieval]Paris[Utility:4]</s>"
    assert (
        serialize([Segment("Paris.", paris, support=FULLY_SUPPORTED), Segment(" Big.", paris, relevant=False)], 5, "E")
        == "[Retrieval]<paragraph>Paris\nCapital of France.</paragraph>[Relevant]Paris.[Fully supported]"
        "[Retrieval]<paragraph>Paris\nCapital of France.</paragraph>[Irrelevant] Big.[Utility:5]E"
    )


@pytest.mark.parametrize(
    "segment",
    [
        Segment("a", Doc("t", "x")),
        Segment("a", Doc("t", "x"), relevant=False, support=NO_SUPPORT),
        Segment("a", support=NO_SUPPORT),
    ],
)
def test_serialize_rejects_a_misplaced_support_token(segment):
    with pytest.raises(DataError):
        serialize([segment], 5, "</s>")


def test_serialize_rejects_a_utility_outside_one_to_five():
    with pytest.raises(DataError, match="1 to 5"):
        serialize([Segment("a")], 6, "</s>")


def test_loss_mask_covers_prompt_and_each_passage_only(reflection_tokenizer):
    tokenizer = reflection_tokenizer
    ids = dict(zip(REFLECTION_TOKENS, reflection_token_ids(tokenizer), strict=True))
    prompt = format_prompt("Capital of France?")
    output = serialize(
        [
            Segment("Paris.", Doc("France", "Its capital is Paris."), support=FULLY_SUPPORTED),
            Segment(" Big city.", Doc("Lyon", "A city."), relevant=False),
        ],
        5,
        tokenizer.eos_token,
    )
    input_ids, labels = encode_example(tokenizer, prompt, output)

    n_prompt = len(tokenizer(prompt).input_ids)
    opens = [i for i, t in enumerate(input_ids) if t == ids[PARAGRAPH_OPEN]]
    closes = [i for i, t in enumerate(input_ids) if t == ids[PARAGRAPH_CLOSE]]
    masked = {i for i, label in enumerate(labels) if label == IGNORE_INDEX}
    expected = set(range(n_prompt)) | set(range(opens[0] + 1, closes[0])) | set(range(opens[1] + 1, closes[1]))
    assert len(input_ids) == len(labels) and len(opens) == len(closes) == 2
    assert masked == expected
    assert all(labels[i] == input_ids[i] for i in range(len(labels)) if i not in masked)
    assert labels[n_prompt] == ids["[Retrieval]"] and labels[opens[0]] == ids[PARAGRAPH_OPEN]
    assert (
        tokenizer.decode([input_ids[i] for i in sorted(masked)])
        == prompt + "France\nIts capital is Paris.Lyon\nA city."
    )
    assert tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) == (
        "[Retrieval]<paragraph></paragraph>[Relevant]Paris.[Fully supported]"
        f"[Retrieval]<paragraph></paragraph>[Irrelevant] Big city.[Utility:5]{tokenizer.eos_token}"
    )


@pytest.mark.parametrize(
    "output",
    ["[Retrieval]<paragraph>t\nx[Relevant]a", "t\nx</paragraph>a", "<paragraph>a<paragraph>b</paragraph>"],
)
def test_loss_mask_rejects_unpaired_tags(reflection_tokenizer, output):
    with pytest.raises(DataError, match="paragraph"):
        encode_example(reflection_tokenizer, format_prompt("q"), output)


# --- critique ----------------------------------------------------------------------------------------


def test_retrieval_threshold_is_in_probability_space():
    assert retrieve_probability(0.3, 0.1) == pytest.approx(0.75)
    assert should_retrieve(0.3, 0.1, delta=0.2)
    assert not should_retrieve(0.02, 0.18, delta=0.2)  # 0.1
    assert not should_retrieve(0.1, 0.3, delta=0.25)  # exactly delta: strict
    assert retrieve_probability(0.0, 0.0) == 0.0


def test_critique_scores_match_hand_computed_values():
    assert relevance_score(0.6, 0.2) == pytest.approx(0.75)
    assert support_score(0.2, 0.2, 0.0) == pytest.approx(0.5 + 0.25)
    assert support_score(0.5, 0.3, 0.1) == pytest.approx(0.65 / 0.9)
    assert utility_score([0.1, 0.1, 0.2, 0.2, 0.4]) == pytest.approx(-0.1 - 0.05 + 0.1 + 0.4)
    assert utility_score([0.05, 0.05, 0.1, 0.1, 0.2]) == pytest.approx(0.35)  # normalised by the utility mass
    assert final_score(math.log(0.5), 0.75, 0.65, 0.35) == pytest.approx(0.5 + 0.75 + 0.65 + 0.175)
    assert final_score(math.log(0.5), 0.75, 0.65, 0.35, use_seqscore=False) == pytest.approx(1.575)


IDS = ReflectionIds(
    retrieval=10, no_retrieval=11, relevant=12, irrelevant=13, support=(14, 15, 16), utility=(17, 18, 19, 20, 21)
)


def _rows(spec: list[dict[int, float]], vocab: int = 24) -> np.ndarray:
    rows = np.zeros((len(spec), vocab))
    for row, probs in zip(rows, spec, strict=True):
        for token, p in probs.items():
            row[token] = p
    return rows


COLUMNS = list(range(10, 22))


def _critique(tokens: list[int], rows: np.ndarray, as_tensor: bool = False):
    """The scores from what generation keeps: the chosen tokens' log-probs and the reflection columns."""
    with np.errstate(divide="ignore"):
        logprobs = np.log(rows[np.arange(len(tokens)), tokens]).tolist()
    reflection = rows[:, COLUMNS]
    return critique_generation(tokens, logprobs, torch.tensor(reflection) if as_tensor else reflection, COLUMNS, IDS)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_critique_reads_each_score_at_its_step(as_tensor):
    tokens = [12, 3, 15, 14, 21, 2]
    rows = _rows(
        [
            {12: 0.6, 13: 0.2, 3: 0.1},
            {3: 0.5},
            {14: 0.2, 15: 0.4, 16: 0.2},  # first IsSup token: read here
            {14: 0.9},  # a later IsSup token: ignored
            {17: 0.1, 18: 0.1, 19: 0.2, 20: 0.2, 21: 0.4},
            {2: 0.8},
        ]
    )
    critique = _critique(tokens, rows, as_tensor)

    assert critique.relevance == pytest.approx(0.75)
    assert critique.support == pytest.approx((0.2 + 0.5 * 0.4) / 0.8)
    assert critique.utility == pytest.approx(0.35)
    assert critique.seq_logprob_mean == pytest.approx(np.log([0.6, 0.5, 0.4, 0.9, 0.4, 0.8]).mean())
    assert critique.issup == PARTIALLY_SUPPORTED  # token 15, the first IsSup token generated


def test_critique_is_zero_for_tokens_never_generated():
    critique = _critique([13, 3], _rows([{12: 0.1, 13: 0.3, 14: 0.5, 17: 0.5}, {3: 1.0}]))
    assert (critique.relevance, critique.support, critique.utility) == (pytest.approx(0.25), 0.0, 0.0)


def test_reflection_ids_come_from_the_tokenizer(reflection_tokenizer):
    ids = reflection_token_ids(reflection_tokenizer)
    found = ReflectionIds.from_tokenizer(reflection_tokenizer)
    assert (found.no_retrieval, found.retrieval, found.irrelevant, found.relevant) == tuple(
        ids[i] for i in (0, 1, 3, 4)
    )
    assert found.utility == tuple(ids[7:12]) and found.support == tuple(ids[12:])


def test_strip_reflection_leaves_the_answer():
    assert strip_reflection("[Relevant]true[Fully supported][Utility:5]</s>") == "true"
    assert strip_reflection("[No Retrieval]## B\n[Utility:4]<|im_end|>") == "B"
    assert strip_reflection(": Paris<paragraph>") == "Paris"


def test_closed_set_answers_sum_their_scores():
    candidates = [("[Relevant]true[Fully supported]", 1.0), ("[Irrelevant]false</s>", 1.5), ("true[Utility:5]", 0.8)]
    assert aggregate_closed_set(candidates) == "true"
    assert aggregate_closed_set([("A", 1.0), ("B", 1.0)]) == "A"


def test_generation_counts_the_tokens_it_computes(tiny_llama_dir):
    """The Self-RAG progress bar's tokens/s: each batch reports its prompts and kept continuations, no padding."""
    from selfknow.rag.generate import generate_candidates

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompts = ["a short one", "a somewhat longer prompt than that", "the longest prompt of the three, by far"]
    counted: list[int] = []
    candidates = generate_candidates(
        load_base(tiny_llama_dir), tokenizer, prompts, [3, 4], max_new_tokens=5, batch_size=2,
        count_tokens=counted.append,
    )  # fmt: skip
    assert len(counted) == 2
    prompt_tokens = sum(len(tokenizer(p).input_ids) for p in prompts)
    assert sum(counted) == prompt_tokens + sum(len(c.tokens) for c in candidates)
    assert all(1 <= len(c.tokens) <= 5 for c in candidates)

"""Self-RAG reflection tokens on a causal LM: vocabulary, embedding rows, and a LoRA adapter that trains them.

Self-RAG (Asai et al. 2023) teaches a generator to emit 15 control tokens: whether to retrieve, whether a
passage is relevant, whether a segment is supported by it, how useful the whole answer is, and markup
around the passage. Each must be one token with its own embedding row. The reference critic initialises
the new input and output rows to the mean of the existing rows; we do the same explicitly, because
transformers' ``mean_resizing`` samples around that mean at random and runs would differ.

With LoRA the new rows would stay at their initial value, so the adapter trains exactly those rows with
PEFT's trainable-token indices (``15 x hidden`` values per matrix) instead of saving the whole embedding
(``modules_to_save``). The adapter is saved without embedding layers; loading resizes a fresh base model
to the saved tokenizer, and the trained rows come back from the adapter itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from selfknow.errors import ModelError

NO_RETRIEVAL = "[No Retrieval]"
RETRIEVAL = "[Retrieval]"
CONTINUE_EVIDENCE = "[Continue to Use Evidence]"
IRRELEVANT = "[Irrelevant]"
RELEVANT = "[Relevant]"
PARAGRAPH_OPEN = "<paragraph>"
PARAGRAPH_CLOSE = "</paragraph>"
UTILITY_1 = "[Utility:1]"
UTILITY_2 = "[Utility:2]"
UTILITY_3 = "[Utility:3]"
UTILITY_4 = "[Utility:4]"
UTILITY_5 = "[Utility:5]"
FULLY_SUPPORTED = "[Fully supported]"
PARTIALLY_SUPPORTED = "[Partially supported]"
NO_SUPPORT = "[No support / Contradictory]"

RETRIEVE_TOKENS = (NO_RETRIEVAL, RETRIEVAL, CONTINUE_EVIDENCE)
ISREL_TOKENS = (IRRELEVANT, RELEVANT)
PARAGRAPH_TOKENS = (PARAGRAPH_OPEN, PARAGRAPH_CLOSE)
ISUSE_TOKENS = (UTILITY_1, UTILITY_2, UTILITY_3, UTILITY_4, UTILITY_5)
ISSUP_TOKENS = (FULLY_SUPPORTED, PARTIALLY_SUPPORTED, NO_SUPPORT)
REFLECTION_TOKENS = (*RETRIEVE_TOKENS, *ISREL_TOKENS, *PARAGRAPH_TOKENS, *ISUSE_TOKENS, *ISSUP_TOKENS)
"""The 15 strings in the order of the reference tokenizer (ids 32000..32014 on Llama-2)."""

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def reflection_token_ids(tokenizer: PreTrainedTokenizerBase, tokens: Sequence[str] = REFLECTION_TOKENS) -> list[int]:
    """The id of each token, checking that every string encodes to exactly one token of the vocabulary."""
    vocab = tokenizer.get_vocab()
    ids = []
    for token in tokens:
        encoded = tokenizer.encode(token, add_special_tokens=False)
        if token not in vocab or encoded != [vocab[token]]:
            raise ModelError(
                f"reflection token {token!r} is not a single token of this tokenizer (encodes to {encoded}); "
                "call add_reflection_tokens first"
            )
        ids.append(vocab[token])
    return ids


def _embeddings_tied(model: PreTrainedModel) -> bool:
    output = model.get_output_embeddings()
    return output is not None and output.weight is model.get_input_embeddings().weight


@torch.no_grad()
def _grow_embeddings(model: PreTrainedModel, size: int, new_ids: Sequence[int]) -> None:
    """Resize to at least ``size`` rows and set each row in ``new_ids`` to the mean of the rows below them.

    "Below them" means the ids before the first new one: the vocabulary as it was before the tokens were
    added, so padding rows some checkpoints carry past the tokenizer's length do not enter the mean.
    """
    if model.get_input_embeddings().num_embeddings < size:
        model.resize_token_embeddings(size, mean_resizing=False)
    if not new_ids:
        return
    matrices = [model.get_input_embeddings().weight]
    if not _embeddings_tied(model) and model.get_output_embeddings() is not None:
        matrices.append(model.get_output_embeddings().weight)
    index = torch.tensor(sorted(new_ids), device=matrices[0].device)
    for weight in matrices:
        mean = weight[: min(new_ids)].float().mean(dim=0).to(weight.dtype)
        weight.index_copy_(0, index, mean.expand(len(index), -1).contiguous())


def add_reflection_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Add the 15 reflection tokens as special tokens, grow the embeddings, and return their ids.

    A token gets a fresh row, the mean of the rows of the tokens before it, when the tokenizer did not know
    it or the model has no row for it yet (a fresh base model next to a saved tokenizer). Tokens the
    tokenizer and the model both have keep their ids and rows, so a second call changes nothing.
    """
    known = min(len(tokenizer), model.get_input_embeddings().num_embeddings)
    tokenizer.add_special_tokens({"extra_special_tokens": list(REFLECTION_TOKENS)}, replace_extra_special_tokens=False)
    ids = reflection_token_ids(tokenizer)
    _grow_embeddings(model, len(tokenizer), [i for i in ids if i >= known])
    return ids


def _module_name(model: PreTrainedModel, module: torch.nn.Module) -> str:
    """The last component of a module's name (``embed_tokens``, ``lm_head``), as PEFT matches layer names."""
    return next(name for name, candidate in model.named_modules() if candidate is module).rsplit(".", 1)[-1]


def reflection_lora_config(
    model: PreTrainedModel,
    token_ids: Sequence[int],
    *,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
) -> LoraConfig:
    """LoRA on ``target_modules`` plus trainable rows for ``token_ids`` in the embedding and the LM head.

    Untied models get trainable rows in the output layer too, since a reflection token must be predictable
    as well as readable; the rest of both matrices stays frozen. With tied embeddings only the input layer
    is named: PEFT 0.21 then wraps the tied LM head around the same rows by itself.
    ``ensure_weight_tying`` is left off because for trainable tokens it changes nothing in PEFT 0.21 except
    a warning that no tied module is in ``modules_to_save`` or ``target_modules``.
    """
    ids = [int(i) for i in token_ids]
    indices = {_module_name(model, model.get_input_embeddings()): ids}
    if not _embeddings_tied(model):
        indices[_module_name(model, model.get_output_embeddings())] = ids
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        trainable_token_indices=indices,
        task_type="CAUSAL_LM",
    )


def save_reflection_adapter(peft_model: PeftModel, tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> Path:
    """Save the adapter (LoRA weights and the trained token rows, not the embeddings) with its tokenizer beside it."""
    directory = Path(directory)
    peft_model.save_pretrained(directory, save_embedding_layers=False)
    tokenizer.save_pretrained(directory)
    return directory


def load_reflection_adapter(
    base_model: PreTrainedModel, directory: str | Path
) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """Load an adapter saved by :func:`save_reflection_adapter` onto a fresh base model.

    The base is resized to the saved tokenizer (new rows mean-initialised as in training); the reflection
    tokens' trained rows then come from the adapter, which replaces those rows outright.
    """
    tokenizer = AutoTokenizer.from_pretrained(directory)
    add_reflection_tokens(base_model, tokenizer)
    return PeftModel.from_pretrained(base_model, directory), tokenizer

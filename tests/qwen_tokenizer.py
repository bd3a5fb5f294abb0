"""Qwen2's tokenizer rebuilt offline: Qwen's byte-level BPE ranks (the ``qwen.tiktoken`` file that the
``dashscope`` package ships, the vocabulary Qwen2 and Qwen2.5 share), Qwen2's pre-tokenizer pattern, its
special tokens at their ids, and a ChatML template. Token for token the tokenizer of Qwen2.5 models, so the
tests meet its merges (an answer's final "." and a following blank line become one token)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from pathlib import Path

from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

RANKS_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
PATTERN = (  # Qwen2's pre-tokenizer: single digits, punctuation runs with their line ends
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 151643, 151644, 151645, as in Qwen2.5
CHATML = (  # Qwen2.5's layout: a default system turn, then <|im_start|>role\ncontent<|im_end|>\n per turn
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def ranks_file() -> Path | None:
    """The ranks file of the installed ``dashscope`` package (``make setup`` installs it), if present."""
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"
    return path if path.exists() else None


class _Ranks(TikTokenConverter):
    """transformers' converter from tiktoken ranks to a fast BPE tokenizer, reading the ranks file itself
    (the converter would otherwise need the ``tiktoken`` package only to parse base64 lines)."""

    @staticmethod
    def load_tiktoken_bpe(path: str) -> dict[bytes, int]:
        ranks = {}
        for line in Path(path).read_bytes().splitlines():
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
        return ranks


def qwen2_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    if hashlib.sha256(path.read_bytes()).hexdigest() != RANKS_SHA256:
        raise ValueError(f"{path}: not the Qwen vocabulary these tests were written against")
    converted = _Ranks(vocab_file=str(path), pattern=PATTERN, extra_special_tokens=SPECIAL).converted()
    return PreTrainedTokenizerFast(
        tokenizer_object=converted,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML,
        padding_side="right",
    )

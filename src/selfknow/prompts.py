"""How a record becomes the text a model reads: question formats, k-shot examples and chat templates.

Formats follow the calibration-tuning reference (spec §3.3): open-ended ``Question: ..\\nAnswer:`` and
multiple choice with ``Choices:\\n  (a): ..`` lines, answered by a letter. Chat models get the same body
as a user turn after a short system prompt (which also replaces SmolLM2's 20-token default), with
k-shot examples as earlier user/assistant turns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from selfknow.data.records import LETTERS, Record
from selfknow.data.splits import rng_for
from selfknow.errors import ModelError

SYSTEM_PROMPT = (
    "You are an expert who responds with concise, correct answers. "
    "Directly state the answer without phrases like 'the correct answer is'."
)

# The calibration-tuning reference's verbal-confidence request, sent after the answer.
VERBAL_REQUEST = (
    "Provide the probability that your answer is correct. Give ONLY the probability, no other words or "
    "explanation.\n\nFor example:\n\nProbability: <the probability between 0.0 and 1.0 that your guess is "
    "correct, without any extra commentary whatsoever; just the probability!>\n\nInclude probability for "
    "the answer below:\nProbability:"
)


def question_body(record: Record) -> str:
    """The question as the model sees it, without the answer cue."""
    if record.format == "choice":
        lines = "\n".join(f"  ({LETTERS[i]}): {text}" for i, text in enumerate(record.choices or []))
        return f"Question:\n{record.question}\n\nChoices:\n{lines}"
    return f"Question: {record.question}"


def gold_text(record: Record) -> str:
    """What a correct reply says: the gold letter for multiple choice, the gold answer otherwise."""
    return record.gold_letter if record.format == "choice" else record.answer  # type: ignore[return-value]


def header(record: Record) -> str:
    subject = record.meta.get("subject_label")
    kind = "multiple-choice questions" if record.format == "choice" else "questions"
    return f"The following are {kind} (with answers) about {subject}.\n" if subject else ""


@dataclass(frozen=True)
class PromptStyle:
    """``chat=None`` uses the chat template when the tokenizer has one; ``kshot`` examples per prompt."""

    chat: bool | None = None
    kshot: int = 0
    system: str | None = SYSTEM_PROMPT
    seed: int = 0


class Prompter:
    """Renders records to prompt text for one tokenizer.

    The k-shot examples of a task are drawn once (seeded) from the few-shot pool, so every prompt of a
    task shares one prefix, which the answering engine computes once.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        style: PromptStyle = PromptStyle(),
        fewshot_pool: Sequence[Record] = (),
    ):
        self.tokenizer = tokenizer
        self.style = style
        self.chat = bool(tokenizer.chat_template) if style.chat is None else style.chat
        if self.chat and not tokenizer.chat_template:
            raise ModelError("the chat template was asked for but this tokenizer has none")
        self._pool: dict[tuple[str, str, str], list[Record]] = defaultdict(list)
        for example in fewshot_pool:
            self._pool[(example.dataset, example.task, example.format)].append(example)
        self._shots: dict[tuple[str, str, str], list[Record]] = {}

    @property
    def add_special_tokens(self) -> bool:
        """Chat templates write their own special tokens; raw prompts get the tokenizer's (e.g. BOS)."""
        return not self.chat

    def examples(self, record: Record) -> list[Record]:
        if self.style.kshot <= 0:
            return []
        key = (record.dataset, record.task, record.format)
        if key not in self._shots:
            pool = self._pool.get(key) or [
                r for k, rs in self._pool.items() if k[0] == key[0] and k[2] == key[2] for r in rs
            ]
            self._shots[key] = rng_for(self.style.seed, *key).sample(pool, min(self.style.kshot, len(pool)))
        return [r for r in self._shots[key] if r.id != record.id]

    def render(self, record: Record) -> str:
        """The full prompt text; a record that carries its own prompt (e.g. from a ct: file) keeps it."""
        if record.prompt:
            return record.prompt
        shots = self.examples(record)
        if self.chat:
            messages = [{"role": "system", "content": self.style.system}] if self.style.system else []
            for shot in shots:
                messages += [
                    {"role": "user", "content": header(shot) + question_body(shot)},
                    {"role": "assistant", "content": gold_text(shot)},
                ]
            messages.append({"role": "user", "content": header(record) + question_body(record)})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        parts = [f"{question_body(s)}\nAnswer: {gold_text(s)}\n" for s in shots]
        if parts:
            parts = [header(record) + parts[0], *parts[1:], "Now, answer the next question.\n"]
        return "\n".join([*parts, f"{question_body(record)}\nAnswer:"])

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=self.add_special_tokens).input_ids


def continuation_token(tokenizer: PreTrainedTokenizerBase, prompt: str, text: str) -> int:
    """The single token a model emits for ``text`` right after ``prompt``, found by tokenizing both.

    After ``Answer:`` SmolLM2 continues with " a" (a different token from "a"); after a chat
    generation prompt ending in a newline it continues with "a". Tokenizing prompt + option shows which;
    only the prompt's tail matters, so long prompts cost nothing extra.
    """
    tail = prompt[-64:]
    option = text if tail[-1:].isspace() else " " + text
    ids = tokenizer(tail + option, add_special_tokens=False).input_ids
    base = tokenizer(tail, add_special_tokens=False).input_ids
    if len(ids) != len(base) + 1 or ids[: len(base)] != base:
        raise ModelError(f"option {option!r} is not a single token after the prompt for this tokenizer")
    return ids[-1]

"""The texts instruction backtranslation shows a model (spec §3-§5): the backward prompt, the forward prompt with
its source tag, and the self-curation rating prompts (the paper's, and a score-first one that a 1.5B chat model
answers with a score: BENCHMARKS, "Self-curation's rater on the reference model").

Chat models get each as a user turn after a short system prompt (which also replaces SmolLM2's 20-token
default); models without a chat template get an Alpaca-style frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from selfknow.errors import DataError

ASSISTANT_TAG = "Answer in the style of an AI Assistant."  # S_a: seed pairs (spec §5)
WEB_TAG = "Answer with knowledge from web search."  # S_w: augmented pairs
SYSTEM = "You are a helpful AI assistant."
BACKWARD = (  # the backward prompt the Back-and-Forth paper attributes to Li et al. (spec §3, step 2)
    "Below is a candidate answer to a question or instruction from an user. Write the most likely question to "
    "which the text below would be a great answer.\n\n{response}\n\n" + ASSISTANT_TAG
)
SCALE = (  # the self-curation prompt's task and scale (spec §4, paper Table 1), each item one paragraph as printed
    "Below is an instruction from an user and a candidate answer. Evaluate whether or not the answer is a good "
    "example of how AI Assistant should respond to the user's instruction. Please assign a score using the "
    "following 5-point scale:\n"
    "1: It means the answer is incomplete, vague, off-topic, controversial, or not exactly what the user asked "
    "for. For example, some content seems missing, numbered list does not start from the beginning, the opening "
    "sentence repeats user's question. Or the response is from another person's perspective with their personal "
    "experience (e.g. taken from blog posts), or looks like an answer from a forum. Or it contains promotional "
    "text, navigation text, or other irrelevant information.\n"
    "2: It means the answer addresses most of the asks from the user. It does not directly address the user's "
    "question. For example, it only provides a high-level methodology instead of the exact solution to user's "
    "question.\n"
    "3: It means the answer is helpful but not written by an AI Assistant. It addresses all the basic asks from "
    "the user. It is complete and self contained with the drawback that the response is not written from an AI "
    "assistant's perspective, but from other people's perspective. The content looks like an excerpt from a blog "
    "post, web page, or web search results. For example, it contains personal experience or opinion, mentions "
    "comments section, or share on social media, etc.\n"
    "4: It means the answer is written from an AI assistant's perspective with a clear focus of addressing the "
    "instruction. It provide a complete, clear, and comprehensive response to user's question or instruction "
    "without missing or irrelevant information. It is well organized, self-contained, and written in a helpful "
    "tone. It has minor room for improvement, e.g. more concise and focused.\n"
    "5: It means it is a perfect answer from an AI Assistant. It has a clear focus on being a helpful AI "
    "Assistant, where the response looks like intentionally written to address the user's question or "
    "instruction without any irrelevant sentences. The answer provides high quality content, demonstrating "
    "expert knowledge in the area, is very well written, logical, easy-to-follow, engaging and insightful.\n\n"
)
RUBRIC = SCALE + (  # the paper's rubric: reasons first, the score last
    'Please first provide a brief reasoning you used to derive the rating score, and then write "Score: <rating>" '
    "in the last line.\n\n"
)
SCORE_FIRST_ASK = 'Reply with "Score: <rating>" on the first line, then a brief reasoning for the rating.'


@dataclass(frozen=True)
class RatingPrompt:
    """A rating prompt: ``shared`` (the rubric, encoded once) followed by ``pair`` filled with the
    instruction and the output."""

    shared: str
    pair: str


RATING_PROMPTS = {
    "paper": RatingPrompt(RUBRIC, "{instruction}\n{output}"),  # as printed in the paper
    # For small instruction models: the pair's parts named and the ask repeated after the answer, score first,
    # so that the score is the reply's first line and the expected score is read where the model gives it.
    "score-first": RatingPrompt(
        SCALE + SCORE_FIRST_ASK + "\n\n", "Instruction: {instruction}\n\nAnswer: {output}\n\n" + SCORE_FIRST_ASK
    ),
}
SCORE_CUE = "Score:"
_SCORE = re.compile(r"[Ss]core:\s*(\d+)\s*$")
_LEADING_SCORE = re.compile(r"[Ss]core:\s*(\d+)")


def chat_prompt(tokenizer: PreTrainedTokenizerBase, user: str, system: str = SYSTEM) -> str:
    """``user`` as the one user turn, ready for the assistant's reply."""
    if tokenizer.chat_template:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{system}\n\n### Instruction:\n{user}\n\n### Response:\n"


def split_prompt(tokenizer: PreTrainedTokenizerBase, user_prefix: str, user_rest: str) -> tuple[str, str]:
    """The chat prompt of ``user_prefix + user_rest`` cut where ``user_rest`` begins: the part every prompt with
    this prefix shares (the rating rubric) and the part that differs, so the first is encoded once."""
    marker = "\x00"
    full = chat_prompt(tokenizer, user_prefix + marker)
    head, tail = full.split(marker)
    return head, user_rest + tail


def backward_prompt(tokenizer: PreTrainedTokenizerBase, response: str) -> str:
    return chat_prompt(tokenizer, BACKWARD.format(response=response))


def forward_prompt(
    tokenizer: PreTrainedTokenizerBase, instruction: str, tags: tuple[str, ...] = (ASSISTANT_TAG,)
) -> str:
    """The instruction followed by its source tag(s) (the Back-and-Forth paper appends them to the question)."""
    return chat_prompt(tokenizer, " ".join([instruction.strip(), *tags]) if tags else instruction.strip())


def rating_parts(
    tokenizer: PreTrainedTokenizerBase, instruction: str, output: str, prompt: str = "paper"
) -> tuple[str, str]:
    """(shared rubric part, the pair's part) of the rating prompt named ``prompt`` (a key of RATING_PROMPTS)."""
    if prompt not in RATING_PROMPTS:
        raise DataError(f"rating prompt must be one of {', '.join(RATING_PROMPTS)}, got {prompt!r}")
    chosen = RATING_PROMPTS[prompt]
    return split_prompt(
        tokenizer, chosen.shared, chosen.pair.format(instruction=instruction.strip(), output=output.strip())
    )


def parse_score(text: str) -> int | None:
    """The rating ``Score: n`` in the reply's last line, as the rubric asks (the reproduction's reading, spec
    §8.1), or else alone on its first line: Qwen2.5-Coder-1.5B-Instruct puts the score first and its reasons
    after, in every reply measured (BENCHMARKS). None when neither holds or n is outside 1-5."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    found = _SCORE.search(lines[-1].strip()) or _LEADING_SCORE.fullmatch(lines[0].strip())
    if not found:
        return None
    score = int(found.group(1))
    return score if 1 <= score <= 5 else None

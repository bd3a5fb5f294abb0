"""Answering on vLLM, where it is installed: the records :class:`~selfknow.engine.Answerer` writes, from
vLLM's engine (tensor parallelism over several GPUs, paged attention, prefix caching).

The prompts are the same token ids; decoding is greedy. Open-ended answers are cut by the same rule
(:func:`~selfknow.engine.answer_text`); vLLM's own stop strings are not used because they would also stop
on the newline a model often opens with. Multiple choice scores each letter as the last prompt token
(``prompt_logprobs``): the letters' log-probabilities differ from their logits by one constant per
question, so the chosen letter and the softmax over letters are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from selfknow.data.records import LETTERS
from selfknow.engine import AnswerConfig, AnswerStats, Emit, Item, LetterIds, answer_text, answered_record, eos_ids
from selfknow.errors import SelfknowError


def load_vllm(spec: str, *, tensor_parallel_size: int = 1, dtype: str = "auto", trust_remote_code: bool = False):
    """A ``vllm.LLM`` for a model spec (aliases and local folders resolve as in :func:`load_model`)."""
    try:
        from vllm import LLM
    except ImportError as error:
        raise SelfknowError("the vllm engine needs vLLM: pip install vllm (Linux with a GPU)") from error
    from selfknow.models import resolve_spec

    return LLM(
        model=str(resolve_spec(spec)),
        tensor_parallel_size=tensor_parallel_size,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        enable_prefix_caching=True,
    )


def is_vllm(model) -> bool:
    return type(model).__module__.split(".")[0] == "vllm"


class VllmAnswerer:
    """Same interface as :class:`~selfknow.engine.Answerer`: ``run(items, emit)`` and ``stats``."""

    def __init__(self, llm, tokenizer, config: AnswerConfig):
        if config.samples:
            raise SelfknowError("the vllm engine draws no samples yet: answer with --engine hf for --samples")
        self.llm, self.tokenizer, self.config = llm, tokenizer, config
        self.eos = eos_ids(tokenizer, None)  # vLLM itself also stops at the model's generation EOS
        self.letter_ids = LetterIds(tokenizer)
        self.stats = AnswerStats()

    def run(self, items: Sequence[Item], emit: Emit) -> None:
        if not items:
            return
        before = self.stats.computed_tokens + self.stats.generated_tokens
        done = self._letters(items) if items[0][0].format == "choice" else self._decode(items)
        emit(done, self.stats.computed_tokens + self.stats.generated_tokens - before)

    def _letters(self, items: Sequence[Item]) -> list:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts, owners = [], []
        for k, (record, prompt, ids) in enumerate(items):
            for letter in self.letter_ids(prompt, len(record.choices or [])):
                prompts.append(TokensPrompt(prompt_token_ids=[*ids, letter]))
                owners.append((k, letter))
        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        scores: list[list[float]] = [[] for _ in items]
        for (k, letter), output in zip(owners, outputs, strict=True):
            scores[k].append(output.prompt_logprobs[-1][letter].logprob)
        self.stats.computed_tokens += sum(len(p["prompt_token_ids"]) for p in prompts)
        done = []
        for (record, prompt, _), letter_scores in zip(items, scores, strict=True):
            letter = LETTERS[max(range(len(letter_scores)), key=letter_scores.__getitem__)]
            done.append(answered_record(record, prompt, letter, {"choice_logits": letter_scores}))
        return done

    def _decode(self, items: Sequence[Item]) -> list:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(
            temperature=0.0, max_tokens=self.config.max_new_tokens, logprobs=0, stop_token_ids=sorted(self.eos)
        )
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for _, _, ids in items], params, use_tqdm=False)
        done = []
        for (record, prompt, ids), output in zip(items, outputs, strict=True):
            completion = output.outputs[0]
            tokens = list(completion.token_ids)
            logprobs = [step[token].logprob for token, step in zip(tokens, completion.logprobs, strict=True)]
            text, kept = answer_text(self.tokenizer, tokens, self.eos, self.config.stop)
            done.append(answered_record(record, prompt, text, {"token_logprobs": logprobs[:kept]}))
            self.stats.computed_tokens += len(ids)
            self.stats.generated_tokens += kept
            self.stats.wasted_decode_tokens += len(tokens) - kept
        return done

"""Answering on vLLM, where it is installed: the records :class:`~selfknow.engine.Answerer` writes, from
vLLM's engine (tensor parallelism over several GPUs, paged attention, prefix caching).

The prompts are the same token ids; decoding is greedy. Open-ended answers are cut by the same rule
(:func:`~selfknow.engine.answer_text`); vLLM's own stop strings are not used because they would also stop
on the newline a model often opens with. Multiple choice scores each letter as the last prompt token
(``prompt_logprobs``): the letters' log-probabilities differ from their logits by one constant per
question, so the chosen letter and the softmax over letters are the same.

With ``samples``, each open-ended question also gets a request of ``n`` samples at the sample temperature and
top-p, seeded per record (vLLM's per-request seed: a resumed run draws the same), sent in the same
``generate`` call as the greedy requests, so vLLM's prefix cache shares each prompt. vLLM's log-probs are
the raw model's (its default ``raw_logprobs``), as the local engine's are; the nucleus's largest log-prob
per step, which only the reference's ``sampling-likelihood`` reads, is not returned, so that estimator
refuses these samples.
Multiple-choice samples are drawn from the letters' softmax exactly as the local engine draws them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from selfknow.data.records import LETTERS
from selfknow.data.splits import rng_for
from selfknow.engine import (
    AnswerConfig,
    AnswerStats,
    Emit,
    Item,
    LetterIds,
    answer_text,
    answered_record,
    eos_ids,
    sample_letters,
)
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
            scores = {"choice_logits": letter_scores}
            if self.config.samples:
                scores.update(sample_letters(record, torch.tensor(letter_scores), self.config))
            done.append(answered_record(record, prompt, letter, scores))
        return done

    def _decode(self, items: Sequence[Item]) -> list:
        """Greedy answers, and with ``samples`` each question's seeded samples, in one ``generate`` call so
        vLLM schedules them together and its prefix cache shares each prompt."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        config, stop = self.config, sorted(self.eos)
        prompts = [TokensPrompt(prompt_token_ids=ids) for _, _, ids in items]
        params = [SamplingParams(temperature=0.0, max_tokens=config.max_new_tokens, logprobs=0, stop_token_ids=stop)]
        params *= len(items)
        if config.samples:
            prompts += prompts
            params += [
                SamplingParams(
                    n=config.samples, temperature=config.sample_temperature, top_p=config.sample_top_p,
                    seed=rng_for(config.seed, record.id, "samples").getrandbits(31),
                    max_tokens=config.max_new_tokens, logprobs=0, stop_token_ids=stop,
                )
                for record, _, _ in items
            ]  # fmt: skip
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        done = []
        for k, (record, prompt, ids) in enumerate(items):
            text, logprobs = self._read(outputs[k].outputs[0])
            scores = {"token_logprobs": logprobs}
            self.stats.computed_tokens += len(ids)
            self.stats.generated_tokens += len(logprobs)
            if config.samples:
                drawn = [self._read(completion) for completion in outputs[len(items) + k].outputs]
                scores["samples"] = [{"text": said, "token_logprobs": kept} for said, kept in drawn]
                scores["sampling"] = config.sampling
                self.stats.sampled_tokens += sum(len(sample["token_logprobs"]) for sample in scores["samples"])
            done.append(answered_record(record, prompt, text, scores))
        return done

    def _read(self, completion) -> tuple[str, list[float]]:
        """A completion's answer and its tokens' log-probs, cut by the local engine's rule; the tokens cut
        off count as wasted decoding."""
        tokens = list(completion.token_ids)
        logprobs = [step[token].logprob for token, step in zip(tokens, completion.logprobs, strict=True)]
        text, kept = answer_text(self.tokenizer, tokens, self.eos, self.config.stop)
        self.stats.wasted_decode_tokens += len(tokens) - kept
        return text, logprobs[:kept]

"""Answer questions with a causal LM, writing each batch as it finishes so a killed run resumes.

Multiple choice takes one forward pass per row and reads the logits of the choice letters only (no
generation, and no vocabulary-wide logits except at the last position). Open-ended questions are
answered greedily, stopping at the end of the line. Shared prompt prefixes are computed once
(:mod:`selfknow.batching`); under ``accelerate launch`` every process answers its share and the main
process merges the shares in input order.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    StoppingCriteria,
    StoppingCriteriaList,
)

from selfknow.batching import group_by_prefix, make_batches
from selfknow.data.journal import Journal
from selfknow.data.records import LETTERS, Record, read_records
from selfknow.progress import token_progress
from selfknow.prompts import Prompter, continuation_token


@dataclass(frozen=True)
class AnswerConfig:
    max_new_tokens: int = 32
    batch_size: int = 64
    max_batch_tokens: int = 16384  # padded tokens per forward pass, shared prefix included per row
    stop: tuple[str, ...] = ("\n",)


@dataclass
class AnswerStats:
    """Token accounting of one run: what was computed, and what of it was padding or waste."""

    records: int = 0
    prompt_tokens: int = 0  # tokens of all prompts, as if each were run on its own
    computed_tokens: int = 0  # prompt tokens actually run: shared prefixes once, padding excluded
    pad_tokens: int = 0
    generated_tokens: int = 0  # generated tokens kept in answers
    wasted_decode_tokens: int = 0  # decoding steps spent on rows that had already stopped
    seconds: float = 0.0
    per_prefix: list[int] = field(default_factory=list)  # length of each shared prefix computed

    @property
    def useful_tokens(self) -> int:
        return self.computed_tokens + self.generated_tokens

    @property
    def padding_fraction(self) -> float:
        total = self.computed_tokens + self.pad_tokens + self.generated_tokens + self.wasted_decode_tokens
        return (self.pad_tokens + self.wasted_decode_tokens) / total if total else 0.0


class _StopAfterText(StoppingCriteria):
    """Stops a row at a stop string that follows some answer text: models often open with a newline
    ("Answer:\nParis"), which a plain stop-string criterion would take for an empty answer."""

    def __init__(self, tokenizer, start: int, stops: Sequence[str]):
        self.tokenizer, self.start, self.stops = tokenizer, start, stops

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.start :], skip_special_tokens=True)
        return torch.tensor([_cut(t.lstrip(), self.stops)[1] >= 0 for t in texts], device=input_ids.device)


class _GreedyLogprobs(LogitsProcessor):
    """Records the log-probability of each greedy choice (the max of the log-softmax) as it is made."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.steps.append(scores.float().log_softmax(-1).max(-1).values.cpu())
        return scores


def _left_pad(rows: Sequence[Sequence[int]], width: int, pad_id: int, device: torch.device):
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def _eos_ids(model: PreTrainedModel, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _cut(text: str, stops: Sequence[str]) -> tuple[str, int]:
    """Text up to the first stop string, and where that stop begins (-1 when none)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text if cut < 0 else text[:cut]), cut


class Answerer:
    """Runs the forward passes; one instance per (model, tokenizer, prompter, config)."""

    def __init__(self, model: PreTrainedModel, tokenizer, prompter: Prompter, config: AnswerConfig):
        self.model, self.tokenizer, self.prompter, self.config = model, tokenizer, prompter, config
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.stats = AnswerStats()
        self._letters: dict[tuple[str, int], list[int]] = {}

    def letter_ids(self, prompt: str, n: int) -> list[int]:
        key = (prompt[-64:], n)
        if key not in self._letters:
            self._letters[key] = [continuation_token(self.tokenizer, prompt, c) for c in LETTERS[:n]]
        return self._letters[key]

    @torch.inference_mode()
    def choice(self, items: list[tuple[Record, str, list[int]]], emit: Callable[[list[Record], int], None]) -> None:
        """One forward pass per row; the answer is the letter with the highest logit."""
        seqs = [ids for _, _, ids in items]
        for group in group_by_prefix(seqs):
            shared = group.prefix_len
            prefix_cache = None
            if shared:
                prefix = torch.tensor([seqs[group.rows[0]][:shared]], device=self.device)
                prefix_cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
                self.stats.computed_tokens += shared
                self.stats.per_prefix.append(shared)
            lengths = [len(s) - shared for s in seqs]
            for batch in make_batches(
                group.rows,
                lengths,
                max_rows=self.config.batch_size,
                max_tokens=self.config.max_batch_tokens,
                prefix_len=shared,
            ):
                ids, mask = _left_pad([seqs[i][shared:] for i in batch.rows], batch.width, self.pad_id, self.device)
                positions = (shared + mask.cumsum(-1) - 1).clamp(min=shared)
                cache = None
                if prefix_cache is not None:
                    cache = copy.deepcopy(prefix_cache)
                    cache.batch_repeat_interleave(len(batch.rows))
                    mask = torch.cat([mask.new_ones(len(batch.rows), shared), mask], dim=1)
                logits = self.model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=cache is not None,
                    logits_to_keep=1,
                ).logits[:, -1]
                done = []
                for row, i in enumerate(batch.rows):
                    record, prompt, _ = items[i]
                    letter_logits = logits[row, self.letter_ids(prompt, len(record.choices or []))].float()
                    best = int(letter_logits.argmax())
                    done.append(_answered(record, prompt, LETTERS[best], {"choice_logits": letter_logits.tolist()}))
                self.stats.computed_tokens += sum(lengths[i] for i in batch.rows)
                self.stats.pad_tokens += batch.pad_tokens(lengths)
                emit(done, sum(lengths[i] for i in batch.rows))

    @torch.inference_mode()
    def generate(self, items: list[tuple[Record, str, list[int]]], emit: Callable[[list[Record], int], None]) -> None:
        """Greedy decoding with stop strings; keeps each answer's per-token log-probabilities."""
        config = GenerationConfig(
            max_new_tokens=self.config.max_new_tokens,
            do_sample=False,
            eos_token_id=_eos_ids(self.model, self.tokenizer),
            pad_token_id=self.pad_id,
        )
        lengths = [len(ids) for _, _, ids in items]
        budget = self.config.max_batch_tokens
        for batch in make_batches(
            range(len(items)),
            [n + self.config.max_new_tokens for n in lengths],
            max_rows=self.config.batch_size,
            max_tokens=budget,
        ):
            width = max(lengths[i] for i in batch.rows)
            ids, mask = _left_pad([items[i][2] for i in batch.rows], width, self.pad_id, self.device)
            recorder = _GreedyLogprobs()
            stopper = _StopAfterText(self.tokenizer, width, self.config.stop)
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=config,
                logits_processor=LogitsProcessorList([recorder]),
                stopping_criteria=StoppingCriteriaList([stopper]),
            )
            new = out[:, width:].tolist()
            logprobs = torch.stack(recorder.steps, 1).tolist() if recorder.steps else [[] for _ in new]
            done, kept_total = [], 0
            for row, i in enumerate(batch.rows):
                record, prompt, _ = items[i]
                text, token_logprobs = self._decode(new[row], logprobs[row])
                kept_total += len(token_logprobs)
                done.append(_answered(record, prompt, text, {"token_logprobs": token_logprobs}))
            prompt_tokens = sum(lengths[i] for i in batch.rows)
            self.stats.computed_tokens += prompt_tokens
            self.stats.pad_tokens += width * len(batch.rows) - prompt_tokens
            self.stats.generated_tokens += kept_total
            self.stats.wasted_decode_tokens += len(recorder.steps) * len(batch.rows) - kept_total
            emit(done, prompt_tokens + kept_total)

    def _decode(self, tokens: list[int], logprobs: list[float]) -> tuple[str, list[float]]:
        """The answer text (up to the first stop string or EOS) and the log-probs of its tokens.

        A token that straddles the stop (".\\n") counts when it adds answer text before the stop.
        """
        eos = set(_eos_ids(self.model, self.tokenizer)) | {self.pad_id}
        end = next((k for k, t in enumerate(tokens) if t in eos), len(tokens))
        text, _ = _cut(self.tokenizer.decode(tokens[:end], skip_special_tokens=True).lstrip(), self.config.stop)
        answer = text.strip()
        kept = 0
        while kept < end and len(self.tokenizer.decode(tokens[:kept], skip_special_tokens=True).strip()) < len(answer):
            kept += 1
        return answer, logprobs[:kept]


def _answered(record: Record, prompt: str, output: str, scores: dict) -> Record:
    """A copy with the new answer; grades and confidences of an older answer no longer apply."""
    return dataclasses.replace(
        record, prompt=prompt, output=output, scores=scores, correct=None, grader=None, confidences={}
    )


def answer_records(
    model: PreTrainedModel,
    tokenizer,
    records: Sequence[Record],
    *,
    prompter: Prompter | None = None,
    config: AnswerConfig = AnswerConfig(),
    output: str | Path | None = None,
    progress: bool = True,
) -> tuple[list[Record], AnswerStats]:
    """Answer every record; with ``output``, resume from and write to that JSONL file.

    Returns the answered records in input order and the token accounting of this process.
    """
    state = PartialState()
    prompter = prompter or Prompter(tokenizer)
    journal = Journal(output, state.process_index) if output is not None else None
    done = journal.done() if journal else {}
    state.wait_for_everyone()  # every process must see the same finished set before anyone appends
    todo = [r for r in records if r.id not in done]
    encoded = [(r, p, prompter.encode(p)) for r in todo for p in [prompter.render(r)]]
    encoded.sort(key=lambda item: len(item[2]))
    mine = encoded[state.process_index :: state.num_processes]
    runner = Answerer(model, tokenizer, prompter, config)
    runner.stats.prompt_tokens = sum(len(ids) for _, _, ids in mine)
    answered: list[Record] = []
    start = time.perf_counter()
    with token_progress(len(mine), "answering", progress and state.is_main_process) as bar:

        def emit(batch: list[Record], tokens: int) -> None:
            if journal:
                journal.append(batch)
            answered.extend(batch)
            bar.advance(len(batch), tokens)

        runner.choice([item for item in mine if item[0].format == "choice"], emit)
        runner.generate([item for item in mine if item[0].format != "choice"], emit)
    runner.stats.seconds = time.perf_counter() - start
    runner.stats.records = len(mine)
    order = [r.id for r in records]
    if journal is None:
        everything = (
            {r.id: r for r in gather_object(answered)} if state.num_processes > 1 else {r.id: r for r in answered}
        )
        return [everything[i] for i in order], runner.stats
    state.wait_for_everyone()
    if state.is_main_process:
        journal.finish(order)
    state.wait_for_everyone()
    return read_records(output), runner.stats

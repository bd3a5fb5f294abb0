"""Greedy generation that keeps what Self-RAG's critique reads: each generated token's log-probability and,
at every step, the probabilities of the reflection tokens.

Only those few columns of each step's distribution are kept (not the vocabulary-wide rows the reference
code requests), so a candidate costs a few hundred floats however large the vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from selfknow.engine import eos_ids, left_pad
from selfknow.models import input_device


@dataclass
class Candidate:
    """One greedy continuation: its tokens (up to and including the token that stopped it), their
    log-probabilities, and ``reflection[t, j]`` = p(token_ids[j]) at step t."""

    tokens: list[int]
    logprobs: list[float]
    reflection: np.ndarray

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "logprobs": self.logprobs, "reflection": self.reflection.round(6).tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Candidate:
        return cls(data["tokens"], data["logprobs"], np.asarray(data["reflection"], dtype=np.float32))


@torch.inference_mode()
def generate_candidates(
    model,
    tokenizer,
    prompts: Sequence[str],
    token_ids: Sequence[int],
    *,
    stop_ids: Sequence[int] = (),
    max_new_tokens: int = 32,
    batch_size: int = 16,
    count_tokens: Callable[[int], None] | None = None,
) -> list[Candidate]:
    """Greedy continuations of ``prompts`` in length-sorted batches (little padding); a row stops at EOS or
    at any of ``stop_ids`` (e.g. the utility tokens that end a Self-RAG answer). Results come back in
    prompt order; ``count_tokens(n)`` is called after each batch with the tokens it computed (prompts and
    kept continuations, padding not counted), for a progress bar's tokens/s."""
    device = input_device(model)
    stops = eos_ids(tokenizer, model.generation_config.eos_token_id) | set(stop_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(stops))
    encoded = [tokenizer(p).input_ids for p in prompts]  # as in training (selfknow.rag.sequences)
    if any(not ids for ids in encoded):
        raise ValueError("an empty prompt cannot be continued")
    columns = torch.tensor(list(token_ids), device=device)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[Candidate | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids, mask = left_pad([encoded[i] for i in rows], width, pad, device)
        generated = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=sorted(stops),
            pad_token_id=pad,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new = generated.sequences[:, width:]
        chosen_steps, reflection_steps = [], []
        for step, logits in enumerate(generated.logits):  # one [rows, vocab] at a time: little memory
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            chosen_steps.append(logprobs.gather(-1, new[:, step : step + 1]).squeeze(-1))
            reflection_steps.append(logprobs[:, columns].exp())
        chosen = torch.stack(chosen_steps, dim=1).cpu()
        reflection = torch.stack(reflection_steps, dim=1).cpu().numpy()
        for b, i in enumerate(rows):
            tokens = new[b].tolist()
            end = next((t + 1 for t, tok in enumerate(tokens) if tok in stops), len(tokens))
            out[i] = Candidate(tokens[:end], chosen[b, :end].tolist(), reflection[b, :end])
        if count_tokens is not None:
            count_tokens(sum(len(encoded[i]) + len(out[i].tokens) for i in rows))  # type: ignore[union-attr]
    return out  # type: ignore[return-value]

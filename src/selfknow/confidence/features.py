"""One batched pass of a model over uncertainty queries, reading only the last position.

It yields the two option logits (the zero-shot query's P(correct), or the calibration-tuned one with
an adapter on) and, when asked, the last token's hidden state at every layer (probe features). Base
model features are cached on disk per (model, query style, records and their answers), so every
estimator and every rerun reads them instead of running the model again.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from accelerate.utils import gather_object

from selfknow.batching import make_batches, part_rows, pass_limits
from selfknow.checkpoints import computed_in_parts, part_ranges
from selfknow.confidence.base import Context
from selfknow.confidence.query import QueryText, option_ids, render_query
from selfknow.data.records import Record
from selfknow.distributed import process_state
from selfknow.engine import left_pad
from selfknow.models import adapters_off, input_device
from selfknow.progress import token_progress


@dataclass
class QueryFeatures:
    option_logits: torch.Tensor  # [N, 2]: logits of the (negative, positive) option, e.g. (i) no and (ii) yes
    hidden: torch.Tensor | None  # [N, layers + 1, d] at the last token; index 0 is the embeddings
    contrast: torch.Tensor | None = None  # [N, layers + 1, 2, d] at each option token appended to the prompt

    def p_correct(self) -> torch.Tensor:
        return self.option_logits.float().softmax(-1)[:, 1]


def _last_states(hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stored in 16 bits: float16, or bfloat16 for a bf16 model (whose activations may overflow float16)."""
    states = torch.stack([h[:, -1].to(hidden_states[0].device) for h in hidden_states], dim=1)
    return states.to(torch.bfloat16 if states.dtype == torch.bfloat16 else torch.float16).cpu()


def _store(out: torch.Tensor | None, rows: Sequence[int], values: torch.Tensor, n: int) -> torch.Tensor:
    if out is None:
        out = torch.empty(n, *values.shape[1:], dtype=values.dtype)
    out[list(rows)] = values
    return out


@torch.inference_mode()
def forward_queries(
    model,
    tokenizer,
    queries: Sequence[QueryText],
    *,
    hidden: bool = False,
    contrast: bool = False,
    options: Sequence[tuple[int, int]] | None = None,
    max_batch_tokens: int | None = None,
    progress: bool = False,
) -> QueryFeatures:
    """Option logits (and last-token hidden states) of each query; left-padded, length-sorted batches.

    ``options`` gives each query its (negative, positive) answer tokens (default: the uncertainty
    query's, found from its text). ``contrast`` also feeds each option token after the prompt, reusing
    the prompt's key/value cache, and keeps its hidden states (contrast pairs for CCS-style probes).
    Under ``accelerate launch`` each process reads its share of the queries and every process ends
    with all of them."""
    state = process_state()
    device = input_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    found: dict[str, tuple[int, int]] = {}

    def pair(i: int) -> tuple[int, int]:
        if options is not None:
            return tuple(options[i])
        tail = queries[i].text[-64:]
        if tail not in found:
            found[tail] = option_ids(tokenizer, queries[i].text)
        return found[tail]

    n = len(queries)
    mine = list(range(state.process_index, n, state.num_processes))
    lengths = [len(q.ids) for q in queries]
    logits_out, hidden_out, contrast_out = torch.empty(n, 2), None, None
    with token_progress(len(mine), "reading queries", progress and state.is_main_process) as bar:
        rows, tokens = pass_limits(model, keep_cache=contrast, all_hidden=hidden)
        for batch in make_batches(mine, lengths, max_rows=rows, max_tokens=max_batch_tokens or tokens):
            ids, mask = left_pad([queries[i].ids for i in batch.rows], batch.width, pad, device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                output_hidden_states=hidden,
                use_cache=contrast,
                logits_to_keep=1,
            )
            pairs = torch.tensor([pair(i) for i in batch.rows], device=device)
            logits_out[batch.rows] = out.logits[:, -1].gather(1, pairs).float().cpu()
            if hidden:
                hidden_out = _store(hidden_out, batch.rows, _last_states(out.hidden_states), n)
            if contrast:
                per_option = []
                for c in (0, 1):
                    cache = copy.deepcopy(out.cache) if c == 0 else out.cache
                    step = model(
                        input_ids=pairs[:, c : c + 1],
                        attention_mask=torch.cat([mask, mask.new_ones(len(batch.rows), 1)], dim=1),
                        position_ids=positions[:, -1:] + 1,
                        cache=cache,
                        output_hidden_states=True,
                        logits_to_keep=1,
                    )
                    per_option.append(_last_states(step.hidden_states))
                contrast_out = _store(contrast_out, batch.rows, torch.stack(per_option, dim=2), n)
            bar.advance(len(batch.rows), sum(lengths[i] for i in batch.rows))
    if state.num_processes > 1:
        shares = gather_object(
            [(mine, logits_out[mine], *(None if t is None else t[mine] for t in (hidden_out, contrast_out)))]
        )
        for rows, logits, states, pairs_states in shares:
            logits_out[rows] = logits
            if states is not None:
                hidden_out = _store(hidden_out, rows, states, n)
            if pairs_states is not None:
                contrast_out = _store(contrast_out, rows, pairs_states, n)
    return QueryFeatures(logits_out, hidden_out, contrast_out)


def _key(context: Context, style: str, records: Sequence[Record]) -> str:
    digest = hashlib.sha256(json.dumps([context.model_spec, style]).encode())
    for record in records:
        digest.update(f"\n{record.id}\t{record.output}".encode())
    return digest.hexdigest()[:16]


def base_query_features(records: Sequence[Record], context: Context, style: str = "raw") -> QueryFeatures:
    """The base model's query features for these records, from the context's cache when present.

    The cache is written in parts of two passes' rows as the pass goes, so a killed run redoes one part."""
    size = part_rows(context.lm)
    ranges = part_ranges(len(records), size)

    def compute(rows: range) -> dict[str, torch.Tensor]:
        queries = [render_query(records[j], context.tokenizer, style) for j in rows]
        with adapters_off(context.lm):
            part = forward_queries(context.lm, context.tokenizer, queries, hidden=True, progress=context.progress)
        return {"option_logits": part.option_logits, "hidden": part.hidden}

    def key(rows: range) -> str:
        return _key(context, style, records[rows.start : rows.stop])

    parts = computed_in_parts(
        context.cache_dir, f"query-{style}", ranges, key, compute,
        description="reading queries", progress=context.progress,
    )  # fmt: skip
    return QueryFeatures(*(torch.cat([p[name] for p in parts]) for name in ("option_logits", "hidden")))

"""One batched pass of a model over uncertainty queries, reading only the last position.

It yields the two option logits (the zero-shot query's P(correct), or the calibration-tuned one with
an adapter on) and, when asked, the last token's hidden state at every layer (probe features). Base
model features are cached on disk per (model, query style, records and their answers), so every
estimator and every rerun reads them instead of running the model again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from accelerate.utils import gather_object
from safetensors.torch import load_file, save_file

from selfknow.batching import make_batches
from selfknow.confidence.base import Context
from selfknow.confidence.query import QueryText, option_ids, render_query
from selfknow.data.records import Record
from selfknow.distributed import process_state
from selfknow.engine import left_pad
from selfknow.models import adapters_off
from selfknow.progress import token_progress


@dataclass
class QueryFeatures:
    option_logits: torch.Tensor  # [N, 2]: logits of (i) no and (ii) yes
    hidden: torch.Tensor | None  # [N, layers + 1, d] at the last token; index 0 is the embeddings

    def p_correct(self) -> torch.Tensor:
        return self.option_logits.float().softmax(-1)[:, 1]


@torch.inference_mode()
def forward_queries(
    model,
    tokenizer,
    queries: Sequence[QueryText],
    *,
    hidden: bool = False,
    max_batch_tokens: int = 16384,
    progress: bool = False,
) -> QueryFeatures:
    """Option logits (and last-token hidden states) of each query; left-padded, length-sorted batches.

    Under ``accelerate launch`` each process reads its share of the queries and every process ends
    with all of them."""
    state = process_state()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    options: dict[str, tuple[int, int]] = {}
    mine = list(range(state.process_index, len(queries), state.num_processes))
    lengths = [len(q.ids) for q in queries]
    logits_out = torch.empty(len(queries), 2)
    hidden_out = None
    with token_progress(len(mine), "reading queries", progress and state.is_main_process) as bar:
        for batch in make_batches(mine, lengths, max_rows=64, max_tokens=max_batch_tokens):
            ids, mask = left_pad([queries[i].ids for i in batch.rows], batch.width, pad, device)
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                output_hidden_states=hidden,
                logits_to_keep=1,
            )
            for row, i in enumerate(batch.rows):
                tail = queries[i].text[-64:]
                if tail not in options:
                    options[tail] = option_ids(tokenizer, queries[i].text)
                logits_out[i] = out.logits[row, -1, list(options[tail])].float().cpu()
            if hidden:
                states = torch.stack([h[:, -1] for h in out.hidden_states], dim=1).to(torch.float16).cpu()
                if hidden_out is None:
                    hidden_out = torch.empty(len(queries), *states.shape[1:], dtype=torch.float16)
                hidden_out[batch.rows] = states
            bar.advance(len(batch.rows), sum(lengths[i] for i in batch.rows))
    if state.num_processes > 1:
        shares = gather_object([(mine, logits_out[mine], None if hidden_out is None else hidden_out[mine])])
        for rows, logits, states in shares:
            logits_out[rows] = logits
            if states is not None:
                if hidden_out is None:
                    hidden_out = torch.empty(len(queries), *states.shape[1:], dtype=torch.float16)
                hidden_out[rows] = states
    return QueryFeatures(logits_out, hidden_out)


def _key(context: Context, style: str, records: Sequence[Record]) -> str:
    digest = hashlib.sha256(json.dumps([context.model_spec, style]).encode())
    for record in records:
        digest.update(f"\n{record.id}\t{record.output}".encode())
    return digest.hexdigest()[:16]


def base_query_features(records: Sequence[Record], context: Context, style: str = "raw") -> QueryFeatures:
    """The base model's query features for these records, from the context's cache when present."""
    path = (
        context.cache_dir / f"query-{style}-{_key(context, style, records)}.safetensors" if context.cache_dir else None
    )
    if path is not None and path.exists():
        stored = load_file(path)
        return QueryFeatures(stored["option_logits"], stored["hidden"])
    queries = [render_query(r, context.tokenizer, style) for r in records]
    with adapters_off(context.lm):
        features = forward_queries(context.lm, context.tokenizer, queries, hidden=True, progress=context.progress)
    state = process_state()
    if path is not None and state.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"option_logits": features.option_logits, "hidden": features.hidden}, str(path))
    state.wait_for_everyone()
    return features

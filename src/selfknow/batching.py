"""Plan forward passes so few tokens are computed: shared prompt prefixes once, little padding.

Prompts of one task share their system prompt and k-shot examples; sorting token sequences puts such
prompts next to each other, and the common prefix of a run of them is computed once and its
key/value cache reused for every row. Rows are then batched by suffix length, so padding stays small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Group:
    """Rows (indices into the input) whose first ``prefix_len`` tokens are identical."""

    rows: list[int]
    prefix_len: int


@dataclass
class Batch:
    rows: list[int]
    width: int  # padded suffix length

    def pad_tokens(self, lengths: Sequence[int]) -> int:
        return self.width * len(self.rows) - sum(lengths[i] for i in self.rows)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def group_by_prefix(seqs: Sequence[Sequence[int]], min_prefix: int = 8) -> list[Group]:
    """Partition lexicographically sorted sequences into runs that share a prefix, minimizing the
    tokens computed: a run of n rows with shared prefix P costs sum(lengths) - (n - 1) * P.

    The shared prefix of a run is the minimum of adjacent common prefixes, so a run is either kept
    whole or cut where that minimum is reached, recursively (the cheaper of the two is kept). Each
    row keeps at least one token of its own, whose logits are the ones read.
    """
    if not seqs:
        return []
    order = sorted(range(len(seqs)), key=lambda i: list(seqs[i]))
    lengths = [len(seqs[i]) for i in order]
    adjacent = [
        min(common_prefix(seqs[a], seqs[b]), len(seqs[a]) - 1, len(seqs[b]) - 1)
        for a, b in zip(order, order[1:], strict=False)
    ]

    def best(lo: int, hi: int, depth: int = 0) -> tuple[int, list[Group]]:
        total = sum(lengths[lo:hi])
        shared = min(adjacent[lo : hi - 1], default=0)
        whole = Group(order[lo:hi], shared if shared >= min_prefix else 0)
        if hi - lo == 1 or depth > 200:
            return total - (hi - lo - 1) * whole.prefix_len, [whole]
        cuts = [k + 1 for k in range(lo, hi - 1) if adjacent[k] == shared]
        cost, groups = 0, []
        for a, b in zip([lo, *cuts], [*cuts, hi], strict=True):
            part_cost, part_groups = best(a, b, depth + 1)
            cost, groups = cost + part_cost, groups + part_groups
        whole_cost = total - (hi - lo - 1) * whole.prefix_len
        return (whole_cost, [whole]) if whole_cost <= cost else (cost, groups)

    groups = best(0, len(order))[1]
    for group in groups:
        if len(group.rows) < 2:
            group.prefix_len = 0
    return groups


def make_batches(
    rows: Sequence[int],
    lengths: Sequence[int],
    *,
    max_rows: int,
    max_tokens: int,
    reserved: int = 0,
    batch_overhead: int = 16,
) -> list[Batch]:
    """Cut length-sorted rows into batches of at most ``max_rows`` rows and ``max_tokens`` tokens, each row
    holding its padded length plus ``reserved`` tokens (a shared prefix it attends to, the answer it will
    generate), minimizing padding plus a fixed ``batch_overhead`` per forward pass (dynamic programming
    over the cut points)."""
    ordered = sorted(rows, key=lambda r: lengths[r])
    sizes = [lengths[r] for r in ordered]
    n = len(sizes)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        width, total = sizes[j - 1], 0
        for i in range(j - 1, max(j - max_rows, 0) - 1, -1):
            total += sizes[i]
            if i < j - 1 and (j - i) * (width + reserved) > max_tokens:
                break
            cost = best[i] + (j - i) * width - total + batch_overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    batches: list[Batch] = []
    j = n
    while j > 0:
        i = cut[j]
        batches.append(Batch(ordered[i:j], sizes[j - 1]))
        j = i
    return batches[::-1]


CPU_LIMITS = (64, 16384)  # rows and tokens per pass: past this a 2-core CPU gains nothing and holds more memory
GPU_MAX_ROWS = 512  # rows per pass on a GPU: decoding reads the weights once per step for all of them
GPU_MEMORY_SHARE = 0.6  # of the memory free after loading: the rest covers the allocator's slack and the logits


def pass_limits(model, *, keep_cache: bool, all_hidden: bool = False) -> tuple[int, int]:
    """Rows and tokens one forward pass may hold on the model's device.

    On the CPU, fixed small passes. On a GPU, the tokens that fit in a share of the free memory, each token
    costing its key/value cache (``keep_cache``, when decoding follows), a layer's activations (the MLP's
    intermediate width dominates) and, with ``all_hidden``, its hidden state at every layer."""
    import torch

    from selfknow.models import input_device

    device = input_device(model)
    if device.type != "cuda":
        return CPU_LIMITS
    config = model.config.get_text_config()
    element = torch.finfo(model.dtype).bits // 8
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    layers, hidden = config.num_hidden_layers, config.hidden_size
    per_token = (4 * hidden + 3 * config.intermediate_size + 2 * heads * head_dim) * element
    if keep_cache:
        per_token += 2 * layers * kv_heads * head_dim * element
    if all_hidden:
        per_token += (layers + 1) * hidden * element
    free, _ = torch.cuda.mem_get_info(device)
    return GPU_MAX_ROWS, max(int(GPU_MEMORY_SHARE * free) // per_token, 1024)


def part_rows(model) -> int:
    """Queries per saved part of a base pass (feature passes, ct's activation cache): two passes' rows, so a
    part fills whole batches and a kill redoes little."""
    return 2 * pass_limits(model, keep_cache=False, all_hidden=True)[0]

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

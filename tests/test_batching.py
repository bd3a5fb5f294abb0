from __future__ import annotations

import random

from selfknow.batching import common_prefix, group_by_prefix, make_batches


def test_groups_share_their_prefix_and_leave_each_row_a_token():
    rng = random.Random(0)
    heads = [[rng.randrange(50) for _ in range(40)] for _ in range(3)]
    seqs = [heads[i % 3] + [rng.randrange(50) for _ in range(rng.randrange(1, 9))] for i in range(30)]
    seqs.append(heads[0][:10])  # a row that is a prefix of others
    groups = group_by_prefix(seqs)
    assert sorted(i for g in groups for i in g.rows) == list(range(len(seqs)))
    assert sum(g.prefix_len for g in groups) >= 3 * 39
    for group in groups:
        first = seqs[group.rows[0]]
        for i in group.rows:
            assert common_prefix(first, seqs[i]) >= group.prefix_len
            assert len(seqs[i]) > group.prefix_len


def test_unrelated_rows_get_no_prefix():
    groups = group_by_prefix([[1, 2, 3], [4, 5, 6], [7, 8]])
    assert all(g.prefix_len == 0 for g in groups)


def test_batches_respect_limits_and_sort_by_length():
    lengths = [5, 50, 6, 49, 7, 48, 8]
    batches = make_batches(range(len(lengths)), lengths, max_rows=3, max_tokens=120)
    assert sorted(i for b in batches for i in b.rows) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch.rows) <= 3 and batch.width * len(batch.rows) <= 120
        assert batch.width == max(lengths[i] for i in batch.rows)
    assert sum(b.pad_tokens(lengths) for b in batches) <= 10

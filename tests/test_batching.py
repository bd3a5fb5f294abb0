from __future__ import annotations

import random
import types

import torch

from selfknow.batching import (
    CPU_LIMITS,
    GPU_MAX_ROWS,
    GPU_MEMORY_SHARE,
    common_prefix,
    group_by_prefix,
    make_batches,
    pass_limits,
)


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


class _FakeGpuModel:
    """What pass_limits reads of a model: its config, dtype and input device (a CUDA device, never touched)."""

    def __init__(self):
        from transformers import LlamaConfig

        self.config = LlamaConfig(
            hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32
        )
        self.dtype = torch.bfloat16
        self._embeddings = types.SimpleNamespace(weight=types.SimpleNamespace(device=torch.device("cuda", 0)))

    def get_input_embeddings(self):
        return self._embeddings


def test_pass_limits_are_fixed_on_the_cpu(tiny_llama_dir):
    from selfknow.models import load_model

    model, _ = load_model(str(tiny_llama_dir), device="cpu")
    assert pass_limits(model, keep_cache=True) == CPU_LIMITS


def test_pass_limits_on_a_gpu_follow_its_free_memory(monkeypatch):
    free = {"bytes": 80 * 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free["bytes"], 140 * 2**30))
    model = _FakeGpuModel()
    rows, prefill = pass_limits(model, keep_cache=False)
    _, decode = pass_limits(model, keep_cache=True)
    _, features = pass_limits(model, keep_cache=False, all_hidden=True)
    kv_per_token = 2 * 32 * 32 * 128 * 2  # K and V, every layer, bf16
    assert rows == GPU_MAX_ROWS and decode < prefill and features < prefill
    assert decode * kv_per_token <= GPU_MEMORY_SHARE * free["bytes"]
    assert decode > 0.5 * GPU_MEMORY_SHARE * free["bytes"] / kv_per_token  # the cache is most of a token's cost
    free["bytes"] //= 4
    assert pass_limits(model, keep_cache=True)[1] < decode / 3

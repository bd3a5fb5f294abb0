"""Training checkpoints: a training stopped after a checkpoint resumes from it and ends with the weights an
uninterrupted training reaches; an unfinished checkpoint is never trusted."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

import selfknow.batching as batching
import selfknow.checkpoints as checkpoints
import selfknow.confidence.tuning as tuning
import selfknow.progress as progress
from selfknow.confidence.base import Context
from selfknow.confidence.features import base_query_features, forward_queries
from selfknow.confidence.lora import CalibrationTuning
from selfknow.confidence.query import render_query
from selfknow.models import load_model
from selfknow.sft import fit, prompt_target_row
from tests.test_tuning import graded

STOP_AT = 3  # the step after whose checkpoint the "kill" comes


class Killed(Exception):
    pass


@pytest.fixture
def every_step(monkeypatch):
    """Checkpoints after every step, and a record of which step each training resumed from."""
    monkeypatch.setenv(checkpoints.SECONDS_VARIABLE, "0")
    resumed: list[str] = []
    load = checkpoints.CheckpointedTrainer._load_from_checkpoint

    def spy(self, path, model=None):
        resumed.append(path)
        return load(self, path, model)

    monkeypatch.setattr(checkpoints.CheckpointedTrainer, "_load_from_checkpoint", spy)
    return resumed


@contextmanager
def killed_after_a_checkpoint():
    """Training dies right after the checkpoint of step ``STOP_AT`` is complete, as if killed there."""
    original = checkpoints.TimedCheckpoints.on_save

    def die(self, args, state, control, **kwargs):
        original(self, args, state, control, **kwargs)
        if state.global_step == STOP_AT:
            raise Killed

    checkpoints.TimedCheckpoints.on_save = die
    try:
        with pytest.raises(Killed):
            yield
    finally:
        checkpoints.TimedCheckpoints.on_save = original


def _lora(model_dir):
    model, tokenizer = load_model(str(model_dir), device="cpu")
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"])
    return get_peft_model(model, config), tokenizer


def _rows(tokenizer):
    rng = np.random.default_rng(0)
    return [
        prompt_target_row(tokenizer(f"Question {i}:").input_ids, rng.integers(10, 500, size=4 + i % 5).tolist())
        for i in range(40)
    ]


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_a_killed_lora_training_resumes_to_the_uninterrupted_weights(tiny_llama_dir, tmp_path, every_step):
    settings = {"pad_id": 2, "batch_size": 4, "epochs": 2, "lr": 1e-3, "seed": 0}
    reference, tokenizer = _lora(tiny_llama_dir)
    fit(reference, _rows(tokenizer), **settings)  # no checkpoints: a scratch folder
    folder = tmp_path / "checkpoints"
    with killed_after_a_checkpoint():
        fit(_lora(tiny_llama_dir)[0], _rows(tokenizer), checkpoints=folder, **settings)
    assert [p.name for p in folder.iterdir()] == [f"checkpoint-{STOP_AT}"]  # older ones pruned
    resumed, _ = _lora(tiny_llama_dir)
    numbers = fit(resumed, _rows(tokenizer), checkpoints=folder, **settings)
    assert every_step == [str(folder / f"checkpoint-{STOP_AT}")]
    expected = _trainable(reference)
    got = _trainable(resumed)
    assert expected.keys() == got.keys() and len(expected) > 0
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    assert numbers["loss_last"] is not None


def test_a_killed_calibration_tuning_resumes_with_its_best_epoch(tiny_llama_dir, tmp_path, every_step, monkeypatch):
    """ct keeps the epoch with the best validation NLL: the history of epochs before the kill survives it."""
    options = {"top_layers": 1, "epochs": 3, "lr": 2e-3, "batch_size": 16}
    train, validation, test = graded(32, "train"), graded(16, "validation"), graded(8, "test")
    outcomes = []
    for killed in (False, True):
        model, tokenizer = load_model(str(tiny_llama_dir), device="cpu")
        folder = tmp_path / f"run-{killed}"
        if killed:
            with killed_after_a_checkpoint():  # 2 steps per epoch: dies in the second epoch
                first = Context("tiny", model=model, tokenizer=tokenizer, progress=False, checkpoint_dir=folder)
                CalibrationTuning(**options).fit(train, validation, first)
            model, tokenizer = load_model(str(tiny_llama_dir), device="cpu")
        context = Context("tiny", model=model, tokenizer=tokenizer, progress=False, checkpoint_dir=folder)
        if killed:  # the base pass's activations were saved before the kill: none is computed again
            assert list((folder / "ct").glob("activations-*.safetensors"))
            monkeypatch.setattr(tuning, "cache_queries", lambda *a, **k: pytest.fail("activations recomputed"))
        fitted = CalibrationTuning(**options).fit(train, validation, context)
        outcomes.append((fitted.config["training"], fitted.score(test, context)))
    (reference, scores), (resumed, again) = outcomes
    assert every_step == [str(tmp_path / "run-True" / "ct" / f"checkpoint-{STOP_AT}")]
    assert len(resumed["validation_nll_per_epoch"]) == 3
    np.testing.assert_allclose(resumed["validation_nll_per_epoch"], reference["validation_nll_per_epoch"], atol=1e-6)
    np.testing.assert_allclose(again, scores, atol=1e-6)


def test_an_unfinished_checkpoint_is_ignored(tmp_path):
    for step, complete in ((4, True), (8, True), (12, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / checkpoints.COMPLETE).write_text("")
    assert checkpoints.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-8"
    assert checkpoints.latest_checkpoint(tmp_path / "nothing") is None


def test_checkpoints_stay_until_the_result_is_saved(tmp_path):
    folder = tmp_path / "checkpoints"
    with pytest.raises(RuntimeError), checkpoints.removed_after_saving(folder):
        folder.mkdir()
        raise RuntimeError("killed while saving")
    assert folder.exists()  # the next run resumes from them
    with checkpoints.removed_after_saving(folder):
        pass
    assert not folder.exists()


def test_parts_are_saved_as_they_are_done_and_a_rerun_computes_only_the_missing_ones(tmp_path):
    computed: list[int] = []
    dies_in = [4]  # the first pass dies in its third part

    def compute(part):
        if part.start in dies_in:
            raise Killed
        computed.append(part.start)
        return {"x": torch.full((2,), float(part.start))}

    def key(part):
        return "abc"[part.start // 2]

    ranges = checkpoints.part_ranges(5, 2)
    assert ranges == [range(0, 2), range(2, 4), range(4, 5)]
    with pytest.raises(Killed):
        checkpoints.computed_in_parts(tmp_path, "part", ranges, key, compute)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-a.safetensors", "part-b.safetensors"]
    dies_in.clear()
    parts = checkpoints.computed_in_parts(tmp_path, "part", ranges, key, compute)
    assert computed == [0, 2, 4] and [p["x"][0].item() for p in parts] == [0.0, 2.0, 4.0]


def test_a_pass_in_parts_shows_one_bar_over_all_rows(tmp_path, monkeypatch):
    bars = []

    class Recorded(progress.Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(progress, "Progress", Recorded)

    def compute(part):
        with progress.token_progress(len(part), "one part", True) as bar:
            bar.advance(len(part), 10 * len(part))
        return {"x": torch.zeros(1)}

    ranges = checkpoints.part_ranges(5, 2)
    checkpoints.computed_in_parts(tmp_path, "part", ranges[:1], lambda part: str(part.start), compute)
    bars.clear()
    checkpoints.computed_in_parts(tmp_path, "part", ranges, lambda part: str(part.start), compute, progress=True)
    assert len(bars) == 1  # not one per part
    (task,) = bars[0].tasks
    assert task.total == task.completed == 5  # the part read back counts too
    assert task.fields["rate"].endswith("tok/s")


def test_feature_passes_in_parts_equal_one_pass_and_are_read_back(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(batching, "CPU_LIMITS", (2, 16384))  # parts of 4 records: 10 records make 3 parts
    model, tokenizer = load_model(str(tiny_llama_dir), device="cpu")
    records = graded(10, "train")
    context = Context("tiny", model=model, tokenizer=tokenizer, progress=False, cache_dir=tmp_path)
    parted = base_query_features(records, context)
    whole = forward_queries(model, tokenizer, [render_query(r, tokenizer) for r in records], hidden=True)
    assert len(list(tmp_path.glob("query-raw-*.safetensors"))) == 3
    torch.testing.assert_close(parted.option_logits, whole.option_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(parted.hidden.float(), whole.hidden.float(), rtol=0, atol=1e-2)
    monkeypatch.setattr("selfknow.confidence.features.forward_queries", lambda *a, **k: pytest.fail("recomputed"))
    again = base_query_features(records, context)
    assert torch.equal(again.option_logits, parted.option_logits) and torch.equal(again.hidden, parted.hidden)

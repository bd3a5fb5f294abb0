"""Tiny models built in the test session: real architectures (Llama, Gemma 3, Qwen2) and real tokenizers
(SmolLM2's; Qwen2's for the Qwen2 model), random weights."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
import torch
from transformers import (
    AutoTokenizer,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from selfknow.data.records import Record
from selfknow.models import ALIASES
from tests.qwen_tokenizer import qwen2_tokenizer, ranks_file

SHARED_MMLU = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu"  # six subjects, beside the checkout
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}


@pytest.fixture(scope="session")
def tokenizer():
    """SmolLM2's tokenizer read straight from the embedded GGUF (no dequantization needed)."""
    embedded = ALIASES["smollm2"]
    if importlib.util.find_spec(embedded.package) is None:
        pytest.skip("the embedded model package is not installed (make setup installs it)")
    path = embedded.path()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return tok


def _save(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tokenizer, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=2, **TINY
    )
    return _save(LlamaForCausalLM(config).eval(), tokenizer, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gemma_dir(tokenizer, tmp_path_factory) -> Path:
    """Gemma 3 text architecture: sliding-window and global attention layers, a different cache layout."""
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        head_dim=16,
        sliding_window=8,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        layer_types=["sliding_attention", "full_attention"],
        tie_word_embeddings=False,
        **TINY,
    )
    return _save(Gemma3ForCausalLM(config).eval(), tokenizer, tmp_path_factory.mktemp("tiny-gemma"))


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """Qwen2's tokenizer (151,646 tokens), rebuilt from Qwen's vocabulary file."""
    path = ranks_file()
    if path is None:
        pytest.skip("the dashscope package (Qwen's vocabulary file) is not installed (make setup installs it)")
    return qwen2_tokenizer(path)


@pytest.fixture(scope="session")
def tiny_qwen_dir(qwen_tokenizer, tmp_path_factory) -> Path:
    """Qwen2 architecture (biased q/k/v projections) with Qwen2's own tokenizer and ChatML template."""
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(qwen_tokenizer),
        tie_word_embeddings=True,
        eos_token_id=qwen_tokenizer.eos_token_id,
        pad_token_id=qwen_tokenizer.pad_token_id,
        **TINY,
    )
    return _save(Qwen2ForCausalLM(config).eval(), qwen_tokenizer, tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(params=["llama", "gemma", "qwen2"])
def tiny_model_dir(request) -> Path:
    return request.getfixturevalue(f"tiny_{request.param.removesuffix('2')}_dir")


def make_records(n: int = 12, format: str = "oe", dataset: str = "toy") -> list[Record]:
    """Questions of varied length, so batching and padding are exercised."""
    records = []
    for i in range(n):
        question = f"What is {i} + {i * 7}?" + " Think." * (i % 4)
        if format == "choice":
            choices = [str(i * 8), str(i * 8 + 1), str(i * 8 + 2), str(i * 8 + 3)][: 2 + i % 3]
            records.append(
                Record(
                    id=f"{dataset}/{i}",
                    dataset=dataset,
                    split="test",
                    question=question,
                    answer=choices[0],
                    format="choice",
                    choices=choices,
                    answer_index=0,
                    task="add",
                )
            )
        else:
            records.append(
                Record(
                    id=f"{dataset}/{i}", dataset=dataset, split="test", question=question, answer=str(i * 8), task="add"
                )
            )
    return records


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def chat_endpoint(reply: Callable[[str], str]) -> Iterator[tuple[str, list[str]]]:
    """A stand-in OpenAI chat endpoint on loopback that answers each request's last message with
    ``reply(message)``; yields its base URL and the list of messages it was sent."""
    received: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(body["messages"][-1]["content"])
            answer = json.dumps({"choices": [{"message": {"content": reply(received[-1])}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", received
    finally:
        server.shutdown()


@contextmanager
def serving(model_dir: Path, log_path: Path, name: str = "tiny") -> Iterator[str]:
    """A real `selfknow serve` process on a loopback port, serving ``model_dir`` as ``name``; yields its
    OpenAI base URL once /health answers, and stops the process after."""
    port = free_port()
    selfknow = Path(sys.executable).with_name("selfknow")
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [str(selfknow), "serve", str(model_dir), "--port", str(port), "--name", name],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(timeout=30)

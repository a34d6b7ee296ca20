"""Shared fixtures: tiny random models (unit tests) and the embedded model (integration)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


class TinyTokenizer:
    """A character-level tokenizer with a chat template, enough for the pipeline's needs."""

    chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    pad_token_id = 0
    eos_token_id = 1
    pad_token = "<pad>"
    eos_token = "<eos>"

    def __init__(self, vocab_size: int = 96) -> None:
        self.vocab_size = vocab_size

    def _ids(self, text: str) -> list[int]:
        return [2 + (ord(c) % (self.vocab_size - 2)) for c in text]

    def __call__(self, text, add_special_tokens: bool = True, **_: object) -> dict:
        if isinstance(text, list):
            return {"input_ids": [self._ids(t) for t in text]}
        return {"input_ids": self._ids(text)}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True, **_: object) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + (
            "<assistant>" if add_generation_prompt else ""
        )

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(32 + (i - 2) % 94) for i in ids if i > 1)

    def batch_decode(self, batch, skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(ids) for ids in batch]


#: per family: its config class and what differs from the shared small shape
_TINY = {
    "llama": ("LlamaConfig", dict(num_hidden_layers=4, max_position_embeddings=512)),
    "mistral": ("MistralConfig", {}),
    "qwen2": ("Qwen2Config", {}),
    "gemma": ("GemmaConfig", dict(head_dim=8)),
    "phi3": ("Phi3Config", dict(pad_token_id=0)),
    "gpt_neox": ("GPTNeoXConfig", dict(num_key_value_heads=None)),
}


def tiny_config(arch: str = "llama", **overrides):
    """A randomly initialised config of the given family, small enough for unit tests."""
    import transformers as tf

    if arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=32, n_layer=3, n_head=4, n_positions=512, vocab_size=96)
    elif arch in _TINY:
        name, extra = _TINY[arch]
        shape = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4)
        shape.update(num_key_value_heads=2)
        shape.update(extra)
        cfg = getattr(tf, name)(**{k: v for k, v in shape.items() if v is not None})
    else:
        raise ValueError(arch)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def tiny_model(arch: str = "llama", seed: int = 0, **overrides):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **overrides), dtype=torch.float32)
    model.eval().requires_grad_(False)
    return model


def random_pairs(n: int = 24, seed: int = 0):
    """Short random-letter pairs of varied lengths: enough to train and compare engines on a tiny model."""
    import random

    from steerkit.data.pairs import ContrastivePair

    r = random.Random(seed)

    def s(k: int) -> str:
        return "".join(r.choice("abcdefgh ") for _ in range(k))

    return [ContrastivePair(s(r.randint(5, 30)), s(r.randint(3, 15)), s(r.randint(3, 15)), id=str(i)) for i in range(n)]


@pytest.fixture
def tiny():
    return tiny_model("llama"), TinyTokenizer()


@pytest.fixture(scope="session")
def embedded():
    from steerkit.models import load_model

    return load_model()


# ------------------------------------------------------------------ a real OpenAI-compatible server
LLAMA_ALIAS = "smollm2-local"


@pytest.fixture(scope="session")
def llama_server():
    """llama-cpp-python's OpenAI-compatible server on the embedded model's GGUF, on a free loopback port: its /v1."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("llama_cpp.server.app")
    from steerkit.models import embedded_gguf

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf("smollm2-135m-instruct")),
            "--model_alias", LLAMA_ALIAS, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
            "--n_threads", "2", "--verbose", "False",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{base}/models", timeout=2) as r:
                if LLAMA_ALIAS in r.read().decode():
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the server did not come up: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        time.sleep(0.3)
    yield base
    proc.terminate()
    proc.wait(30)

"""Model loading, spec resolution, layer lookup, prompts, device/dtype choice (tiny models only)."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from steerkit import models
from steerkit.errors import ModelError
from steerkit.models import (
    EMBEDDED_DEFAULT,
    LAYER_PATHS,
    cache_root,
    decoder_layers,
    ensure_embedded,
    format_prompt,
    hidden_size,
    load_model,
    model_fingerprint,
    pick_device,
    pick_dtype,
    resolve_spec,
)

from ..conftest import TinyTokenizer, tiny_config, tiny_model


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test loudly instead of reaching out."""

    def refuse(*_a, **_k):
        raise AssertionError("a unit test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- decoder_layers ------------------------------------------------------------------------------

ARCH_LAYERS = {
    "llama": (lambda m: m.model.layers, 4),
    "mistral": (lambda m: m.model.layers, 3),
    "qwen2": (lambda m: m.model.layers, 3),
    "gemma": (lambda m: m.model.layers, 3),
    "phi3": (lambda m: m.model.layers, 3),
    "gpt2": (lambda m: m.transformer.h, 3),
    "gpt_neox": (lambda m: m.gpt_neox.layers, 3),
}


@pytest.mark.parametrize("arch", sorted(ARCH_LAYERS))
def test_decoder_layers_every_architecture(arch):
    model = tiny_model(arch)
    known, n = ARCH_LAYERS[arch]
    layers = decoder_layers(model)
    assert isinstance(layers, nn.ModuleList)
    assert layers is known(model)
    assert len(layers) == n == tiny_config(arch).num_hidden_layers
    assert hidden_size(model) == 32


def test_decoder_layers_through_peft_lora():
    peft = pytest.importorskip("peft")
    model = tiny_model("llama")
    wrapped = peft.get_peft_model(model, peft.LoraConfig(target_modules=["q_proj", "v_proj"], r=2))
    assert wrapped is not model
    layers = decoder_layers(wrapped)
    assert layers is model.model.layers
    assert len(layers) == 4
    assert hidden_size(wrapped) == 32
    assert model_fingerprint(wrapped) == model_fingerprint(model)


def test_decoder_layers_bare_llama_model():
    import transformers as tf

    torch.manual_seed(0)
    bare = tf.LlamaModel(tiny_config("llama"))
    assert decoder_layers(bare) is bare.layers
    assert len(decoder_layers(bare)) == 4
    assert hidden_size(bare) == 32


def test_no_known_layers_lists_paths_tried():
    linear = nn.Linear(4, 4)
    linear.config = SimpleNamespace(hidden_size=4)
    with pytest.raises(ModelError) as info:
        decoder_layers(linear)
    msg = str(info.value)
    assert "Linear" in msg
    for path in LAYER_PATHS:
        assert path in msg
    assert info.value.fix  # says which families are supported
    assert hidden_size(linear) == 4  # hidden size alone can still be read


class _Custom(nn.Module):
    """Looks like a causal LM but keeps its blocks under an unknown name, and an empty list."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])
        self.model = nn.Module()
        self.model.layers = nn.ModuleList()  # present but empty: not steerable
        self.config = SimpleNamespace()


def test_custom_module_and_empty_layer_list_refused():
    with pytest.raises(ModelError, match="_Custom.*tried model.layers"):
        decoder_layers(_Custom())
    with pytest.raises(ModelError, match="hidden size"):
        hidden_size(_Custom())


# --- hidden size and fingerprint -----------------------------------------------------------------


def test_hidden_size_reads_gpt2_n_embd():
    model = tiny_model("gpt2")
    assert model.config.n_embd == 32
    assert hidden_size(model) == 32


def test_fingerprint_ignores_weights_but_not_shape():
    import transformers as tf

    a, b = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    assert not torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert len(model_fingerprint(a)) == 16

    wider_cfg = tf.LlamaConfig(
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        vocab_size=96,
    )
    wider = tf.AutoModelForCausalLM.from_config(wider_cfg, dtype=torch.float32)
    assert hidden_size(wider) == 64
    assert model_fingerprint(wider) != model_fingerprint(a)
    assert model_fingerprint(tiny_model("llama", num_hidden_layers=3)) != model_fingerprint(a)
    assert model_fingerprint(tiny_model("mistral")) != model_fingerprint(tiny_model("qwen2"))


# --- prompts -------------------------------------------------------------------------------------


def test_format_prompt_uses_chat_template():
    tok = TinyTokenizer()
    assert format_prompt(tok, "Why?") == "<user>Why?<assistant>"
    assert format_prompt(tok, "Why?", system="Be brief.") == "<system>Be brief.<user>Why?<assistant>"
    assert format_prompt(tok, "Why?", system="") == "<user>Why?<assistant>"  # empty system = none


class _NoTemplate:
    chat_template = None

    def apply_chat_template(self, *_a, **_k):  # must not be called without a template
        raise AssertionError("apply_chat_template called without a chat template")


def test_format_prompt_plain_fallback():
    tok = _NoTemplate()
    assert format_prompt(tok, "Why?") == "Question: Why?\nAnswer:"
    assert format_prompt(tok, "Why?", system="Be brief.") == "Be brief.\n\nQuestion: Why?\nAnswer:"
    assert format_prompt(SimpleNamespace(), "Q") == "Question: Q\nAnswer:"  # no attribute at all


# --- spec resolution and loading -----------------------------------------------------------------


def test_unknown_name_says_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as info:
        resolve_spec("no-such-model")
    msg = str(info.value)
    assert "'no-such-model'" in msg
    assert EMBEDDED_DEFAULT in msg  # embedded names tried
    assert str(tmp_path / "no-such-model") in msg  # local path tried
    assert "hub id" in msg
    with pytest.raises(ModelError, match="cannot resolve"):
        load_model("no-such-model")
    with pytest.raises(ModelError, match="cannot resolve"):
        resolve_spec("./not/here")  # path-like, so never taken for a hub id
    with pytest.raises(ModelError, match="cannot resolve"):
        resolve_spec("a/b/c")


def test_folder_without_config(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="no config.json and 0 .gguf"):
        resolve_spec(str(tmp_path))
    with pytest.raises(ModelError, match="no config.json"):
        load_model(str(tmp_path))
    (tmp_path / "a.gguf").write_bytes(b"x")
    (tmp_path / "b.gguf").write_bytes(b"x")
    with pytest.raises(ModelError, match="2 .gguf"):
        resolve_spec(str(tmp_path))


def test_gguf_specs_resolve(tmp_path):
    (tmp_path / "only.gguf").write_bytes(b"x")
    assert resolve_spec(str(tmp_path)) == (tmp_path, "only.gguf", "gguf")
    assert resolve_spec(str(tmp_path / "only.gguf")) == (tmp_path, "only.gguf", "gguf")


def _save_tiny_folder(folder: Path) -> nn.Module:
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    model = tiny_model("llama")
    model.save_pretrained(folder)
    vocab = {"<unk>": 0, "<eos>": 1, **{chr(97 + i): 2 + i for i in range(26)}}
    raw = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    # eos but no pad token: load_model must fall back to eos for padding
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="<eos>").save_pretrained(folder)
    return model


def test_load_local_folder(tmp_path, no_network):
    folder = tmp_path / "tiny-llama"
    original = _save_tiny_folder(folder)
    assert resolve_spec(str(folder)) == (folder, None, "folder")

    loaded = load_model(str(folder), device="cpu")
    assert loaded.source == "folder"
    assert loaded.name == str(folder)
    model = loaded.model
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not model.training
    params = list(model.parameters())
    assert params and all(not p.requires_grad for p in params)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params)
    assert len(decoder_layers(model)) == 4
    assert loaded.fingerprint == model_fingerprint(original)
    torch.testing.assert_close(model.model.embed_tokens.weight, original.model.embed_tokens.weight)
    tok = loaded.tokenizer
    assert tok.pad_token == tok.eos_token == "<eos>"
    assert tok("a b")["input_ids"][-2:] == [2, 3]

    half = load_model(str(folder), device="cpu", dtype="bf16").model
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())


def test_load_folder_with_stub_tokenizer(tmp_path, monkeypatch, no_network):
    import transformers

    folder = tmp_path / "m"
    tiny_model("gpt2").save_pretrained(folder)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *_a, **_k: TinyTokenizer())
    loaded = load_model(str(folder))
    assert loaded.source == "folder"
    assert len(decoder_layers(loaded.model)) == 3
    assert isinstance(loaded.tokenizer, TinyTokenizer)


def test_hub_id_offline_is_model_error(tmp_path, monkeypatch, no_network):
    import huggingface_hub.constants as hub_constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable at import time, which has already happened
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    spec = "nonexistent-org/nonexistent-model"
    assert resolve_spec(spec) == (spec, None, "hub")
    with pytest.raises(ModelError) as info:
        load_model(spec, device="cpu")
    assert spec in str(info.value)
    assert "hub" in str(info.value)


def test_bad_dtype_refused_before_loading(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="unknown dtype 'int8'"):
        load_model(str(folder), device="cpu", dtype="int8")


# --- device and dtype ----------------------------------------------------------------------------


def test_pick_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device().type == "cuda"
    assert pick_device("cpu") == torch.device("cpu")  # explicit wins
    assert pick_device("cuda:1") == torch.device("cuda", 1)


def test_pick_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert pick_dtype(cpu) == torch.float32
    assert pick_dtype(cuda) == torch.bfloat16
    assert pick_dtype(torch.device("cuda", 0)) == torch.bfloat16
    for name, dt in [
        ("fp32", torch.float32),
        ("float32", torch.float32),
        ("bf16", torch.bfloat16),
        ("bfloat16", torch.bfloat16),
        ("fp16", torch.float16),
        ("float16", torch.float16),
    ]:
        assert pick_dtype(cpu, name) == dt
        assert pick_dtype(cuda, name) == dt
    assert pick_dtype(cuda, torch.float16) == torch.float16
    for bad in ("fp8", "float64", "banana"):
        with pytest.raises(ModelError, match=f"unknown dtype '{bad}'") as info:
            pick_dtype(cpu, bad)
        assert "fp32" in info.value.fix


# --- embedded cache ------------------------------------------------------------------------------


def test_cache_root_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERKIT_CACHE", str(tmp_path / "sk"))
    assert cache_root() == tmp_path / "sk"
    monkeypatch.delenv("STEERKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "steerkit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "steerkit"


def test_embedded_uses_existing_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERKIT_CACHE", str(tmp_path))
    target = tmp_path / "models" / EMBEDDED_DEFAULT
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")

    def never(*_a, **_k):
        raise AssertionError("dequantised again although the cache is there")

    monkeypatch.setattr(models, "_dequantise_to_cache", never)
    assert ensure_embedded() == target
    assert resolve_spec("  SmolLM2-135M-Instruct ") == (target, None, "embedded")


def test_embedded_cache_miss_dequantises_into_env_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERKIT_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(models, "_dequantise_to_cache", lambda name, target: calls.append((name, target)))
    ensure_embedded()
    assert calls == [(EMBEDDED_DEFAULT, tmp_path / "models" / EMBEDDED_DEFAULT)]


def test_embedded_package_missing(monkeypatch):
    monkeypatch.setitem(models.EMBEDDED_MODELS, "fake-model", ("steerkit_no_such_pkg", "x.gguf"))
    with pytest.raises(ModelError, match="steerkit-no-such-pkg") as info:
        models.embedded_gguf("fake-model")
    assert "pip install" in info.value.fix

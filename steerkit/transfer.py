"""Derived models and transfer: does a vector trained on one model steer its LoRA-tuned relatives?

Two halves:

* **Deriving.** :func:`derive_lora` fine-tunes a LoRA adapter (``peft``) with a causal-LM loss on
  texts or chat-formatted question/answer examples, on a *copy* of the base model (the caller's
  model is never touched), saves the adapter as safetensors plus ``steerkit-derive.json``, and
  measures how far it moved the model (:func:`model_shift`: perplexity of fixed probe texts before
  and after, mean KL(base‖derived) of the next-token distributions). A derived model that did not
  move is flagged ``"moved": false``: a transfer test against it would prove nothing.
  :func:`load_target` loads any model a user names, or a saved adapter on top of its base.
* **Transfer.** :func:`transfer_report` applies the base model's vector to every target (a LoRA
  target both unmerged and merged) and measures it with :func:`steerkit.evaluate.margin_curve`;
  *retention* = swing on the target / swing on the base, per metric. Optionally the cosine
  between the base vector and one trained directly on the target, per shared layer.
  :func:`write_transfer_report` writes the JSON, a PNG bar chart of retention and a markdown table.
"""

from __future__ import annotations

import copy
import gc
import io
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from . import evaluate as ev
from .bipo import _base_model
from .errors import DataError, ModelError, TrainingError, VectorError
from .fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from .models import LoadedModel, format_prompt, hidden_size, load_model, model_device, model_fingerprint
from .packing import right_pad
from .pairs import ContrastivePair
from .vector import SteeringVector, _as_float

DERIVE_JSON = "steerkit-derive.json"
DERIVE_FORMAT = "steerkit.derived"
# A derived model counts as moved when either probe metric reaches its threshold.
PPL_CHANGE_THRESHOLD = 0.01  # |ppl_derived / ppl_base − 1|
KL_THRESHOLD = 1e-4  # mean KL(base‖derived) per predicted token, nats
DEFAULT_TRANSFER_MULTIPLIERS: tuple[float, ...] = (-2.0, 0.0, 2.0)
RETENTION_METRICS: tuple[str, ...] = ("margin_swing", "win_swing", "margin_per_token_swing")

# Attention projections LoRA adapts by default, per architecture family (first family found wins).
ATTENTION_PROJECTIONS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "v_proj"),  # Llama, Mistral, Qwen2, Gemma, OPT
    ("qkv_proj",),  # Phi-3
    ("c_attn",),  # GPT-2
    ("query_key_value",),  # GPT-NeoX, Bloom, Falcon
    ("Wqkv",),  # MPT-like
)

# A training example: a plain text (loss on every token) or (prompt, completion) (loss on the completion).
Example = str | tuple[str, str]


# ============================================================================== derived models
@dataclass
class DerivedModel:
    """A LoRA-tuned copy of a base model, unmerged (a ``peft`` model), and what deriving it did."""

    model: nn.Module  # PeftModel over a private copy of the base weights
    tokenizer: Any
    info: dict[str, Any]  # the content of steerkit-derive.json
    adapter_dir: Path | None = None

    @property
    def moved(self) -> bool:
        return bool(self.info["moved"])

    @property
    def shift(self) -> dict[str, Any]:
        return self.info["shift"]

    def merged(self) -> nn.Module:
        """A new model with the adapter merged into (a copy of) the weights; this one stays unmerged."""
        return merged_copy(self.model)

    def loaded(self, name: str = "derived") -> LoadedModel:
        return LoadedModel(model=self.model, tokenizer=self.tokenizer, name=name, source="lora")


def is_peft(model: nn.Module) -> bool:
    return callable(getattr(model, "get_base_model", None)) and hasattr(model, "peft_config")


def merged_copy(model: nn.Module) -> nn.Module:
    """``merge_and_unload`` on a deep copy of a peft model (the given one keeps its adapter, unmerged)."""
    if not is_peft(model):
        raise ModelError(f"{type(model).__name__} is not a peft model; there is nothing to merge")
    merged = copy.deepcopy(model).merge_and_unload()
    merged.eval().requires_grad_(False)
    return merged


def default_target_modules(model: nn.Module) -> list[str]:
    """The attention projections present in ``model`` (q_proj + v_proj where they exist)."""
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    for family in ATTENTION_PROJECTIONS:
        if all(n in leaves for n in family):
            return list(family)
    raise ModelError(f"no known attention projections in {type(model).__name__} (looked for "
                     + ", ".join("+".join(f) for f in ATTENTION_PROJECTIONS) + ")",
                     fix="pass target_modules (--target-modules) naming the linear layers to adapt")


def training_examples(pairs: Sequence[ContrastivePair], tokenizer: Any, answers: str = "both",
                      system: str | None = None) -> list[tuple[str, str]]:
    """Chat-formatted (prompt, " answer") examples from pairs.

    ``answers``: ``both`` (each question twice, once per answer: moves the model on the domain
    without teaching it either side), ``matching`` or ``not_matching``.
    """
    if answers not in ("both", "matching", "not_matching"):
        raise DataError(f"answers={answers!r}", where="--answers", fix="use both, matching or not_matching")
    out: list[tuple[str, str]] = []
    for p in pairs:
        prompt = format_prompt(tokenizer, p.question, system)
        if answers in ("both", "matching"):
            out.append((prompt, " " + p.matching))
        if answers in ("both", "not_matching"):
            out.append((prompt, " " + p.not_matching))
    return out


def read_training_data(paths: Sequence[str | os.PathLike], tokenizer: Any, answers: str = "both",
                       limit: int | None = None, system: str | None = None) -> tuple[list[Example], list[dict]]:
    """Examples from files: ``.txt`` = one plain text per line; anything else = pairs (see ``load_pairs``).

    Returns the examples and, per file, its path, sha256 and example count (provenance).
    """
    from .stages import load_pairs

    if not paths:
        raise DataError("no training data files given", fix="pass --data FILE (pairs JSONL/CSV or a .txt file)")
    examples: list[Example] = []
    files: list[dict] = []
    for path in map(Path, paths):
        if path.suffix == ".txt":
            items: list[Example] = list(ev.neutral_texts(path))
        else:
            items = list(training_examples(load_pairs(path), tokenizer, answers, system))
        items = items[:limit] if limit else items
        files.append({"file": str(path), "sha256": sha256_file(path), "examples": len(items)})
        examples += items
    return examples, files


def _encode_example(tokenizer: Any, ex: Example, max_length: int) -> tuple[list[int], int]:
    """Token ids and the index of the first token that is trained on (predicted)."""
    if isinstance(ex, str):
        ids = list(tokenizer(ex)["input_ids"])
        start = 1
    else:
        prompt, completion = ex
        templated = bool(getattr(tokenizer, "chat_template", None))
        p = list(tokenizer(prompt, add_special_tokens=not templated)["input_ids"])
        c = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
        ids, start = p + c, max(1, len(p))
    return ids[:max_length], start


def _lm_loss(model: nn.Module, seqs: Sequence[tuple[list[int], int]], pad_id: int) -> torch.Tensor:
    ids, mask = right_pad([s for s, _ in seqs], pad_id)
    device = model_device(model)
    ids, mask = ids.to(device), mask.to(device)
    labels = ids.clone()
    labels[mask == 0] = -100
    for b, (_, start) in enumerate(seqs):
        labels[b, :start] = -100
    hidden = _base_model(model)(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    keep = labels[:, 1:] != -100
    logits = model.get_output_embeddings()(hidden[:, :-1][keep]).float()
    return torch.nn.functional.cross_entropy(logits, labels[:, 1:][keep])


def derive_lora(model: nn.Module, tokenizer: Any, texts: Sequence[Example], steps: int, lr: float = 1e-4,
                r: int = 8, alpha: float = 16, target_modules: Sequence[str] | None = None, seed: int = 0,
                out_dir: str | os.PathLike | None = None, *, batch_size: int = 4, max_length: int = 256,
                dropout: float = 0.0, probe_texts: Sequence[str] | None = None, base_name: str | None = None,
                data_files: Sequence[dict] | None = None, progress: bool = False) -> DerivedModel:
    """Fine-tune a LoRA adapter on a copy of ``model`` and measure how far it moved.

    ``texts``: plain strings (loss on all tokens) or (prompt, completion) tuples (loss on the
    completion only; see :func:`training_examples`). peft's default init (B = 0) makes the adapter
    start as the identity, so ``steps=0`` gives a derived model equal to the base (``moved`` false).
    The base model's weights and modules are never modified: peft wraps a deep copy.
    With ``out_dir`` the adapter (``adapter_model.safetensors`` + ``adapter_config.json``) and
    ``steerkit-derive.json`` are written into that folder, replaced atomically as a whole.
    """
    from peft import LoraConfig, get_peft_model

    steps, r = int(steps), int(r)
    lr, alpha = _as_float(lr), _as_float(alpha)
    if steps < 0 or lr < 0 or r < 1 or batch_size < 1 or max_length < 2:
        raise TrainingError(f"bad LoRA settings: steps={steps}, lr={lr}, r={r}, batch_size={batch_size}, "
                            f"max_length={max_length}", fix="steps >= 0, lr >= 0, r >= 1, batch_size >= 1")
    if not texts:
        raise DataError("no training texts", fix="pass texts, pairs or a data file with at least one example")
    if probe_texts is None:
        probe_texts = ev.neutral_texts()
    modules = list(target_modules) if target_modules else default_target_modules(model)
    pad_id = ev._pad_id(tokenizer)
    encoded = [_encode_example(tokenizer, ex, max_length) for ex in texts]
    if not any(len(ids) > start for ids, start in encoded):
        raise DataError("no example has a token to train on (all are one token long or empty)")
    t0 = time.perf_counter()
    work = copy.deepcopy(model)  # the caller's model stays exactly as it was
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=float(dropout), target_modules=modules, bias="none",
                        task_type="CAUSAL_LM", fan_in_fan_out="c_attn" in modules)
    with torch.random.fork_rng(devices=[]):  # LoRA A init is random: seeded, without touching global RNG state
        torch.manual_seed(seed)
        peft_model = get_peft_model(work, config)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    log: list[float] = []
    if steps:
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
        order: list[int] = []
        peft_model.train()
        bar = _progress(steps, progress)
        for _ in range(steps):
            batch: list[tuple[list[int], int]] = []
            while len(batch) < batch_size:
                if not order:
                    order = torch.randperm(len(encoded), generator=gen).tolist()
                ids, start = encoded[order.pop()]
                if len(ids) > start:
                    batch.append((ids, start))
            loss = _lm_loss(peft_model, batch, pad_id)
            if not torch.isfinite(loss):
                raise TrainingError(f"LoRA loss became {float(loss)} at step {len(log)}", fix="lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            log.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{log[-1]:.3f}")
        if bar is not None:
            bar.close()
    peft_model.eval()
    for p in trainable:
        p.requires_grad_(False)
    shift = model_shift(model, peft_model, tokenizer, probe_texts)
    info: dict[str, Any] = {
        "format": DERIVE_FORMAT, "method": "lora", "base_model": base_name,
        "base_fingerprint": model_fingerprint(model), "hidden_size": hidden_size(model),
        "lora": {"r": r, "alpha": alpha, "dropout": float(dropout), "target_modules": modules, "init": "B=0 (peft default)"},
        "train": {"steps": steps, "lr": lr, "seed": seed, "batch_size": batch_size, "max_length": max_length,
                  "n_examples": len(texts), "data": list(data_files or []),
                  "loss_first": log[0] if log else None, "loss_last": log[-1] if log else None,
                  "loss_last10_mean": ev._mean(log[-10:]) if log else None,
                  "seconds": round(time.perf_counter() - t0, 2)},
        "shift": shift, "moved": shift["moved"],
    }
    if not shift["moved"]:
        warnings.warn(f"the LoRA-derived model barely moved (perplexity change {shift['ppl_change']:.2e}, "
                      f"KL {shift['kl']:.2e}); a transfer test against it proves nothing — train more steps "
                      "or with a higher learning rate", stacklevel=2)
    derived = DerivedModel(peft_model, tokenizer, info, None)
    if out_dir is not None:
        derived.adapter_dir = save_adapter(derived, out_dir)
    return derived


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="lora", leave=False)


def save_adapter(derived: DerivedModel, out_dir: str | os.PathLike) -> Path:
    """Write the adapter (safetensors) and steerkit-derive.json; the folder is replaced as a whole."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model = derived.model
        base_name = derived.info.get("base_model")
        if base_name:
            for cfg in model.peft_config.values():
                cfg.base_model_name_or_path = str(base_name)
        with warnings.catch_warnings():  # peft looks for the base's config.json under our spec name to check the vocab
            warnings.filterwarnings("ignore", message="Could not find a config file")
            model.save_pretrained(tmp, safe_serialization=True)
        atomic_write_json(tmp / DERIVE_JSON, derived.info)
        tmp.chmod(0o755)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "x")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# =================================================================================== model shift
def next_token_kl(base: nn.Module, derived: nn.Module, tokenizer: Any, texts: Sequence[str],
                  batch_size: int = 8) -> tuple[float, int]:
    """Summed KL(base‖derived) of the next-token distributions over all predicted positions, and their count."""
    ev._check_batch_size(batch_size)
    seqs = [list(tokenizer(t)["input_ids"]) for t in texts]
    total, count = 0.0, 0
    with torch.no_grad():
        for idx in ev._chunks(sorted(range(len(seqs)), key=lambda i: len(seqs[i])), batch_size):
            ids, mask = right_pad([seqs[i] for i in idx], ev._pad_id(tokenizer))
            keep = (mask[:, 1:] * mask[:, :-1]).bool()
            if not keep.any():
                continue
            logps = []
            for m in (base, derived):
                dev = model_device(m)
                hidden = _base_model(m)(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                                        use_cache=False).last_hidden_state
                logits = m.get_output_embeddings()(hidden[:, :-1][keep.to(dev)])
                logps.append(logits.float().log_softmax(-1).cpu())
            lp, lq = logps
            total += float((lp.exp() * (lp - lq)).sum())
            count += int(keep.sum())
    return total, count


def model_shift(base: nn.Module, derived: nn.Module, tokenizer: Any, texts: Sequence[str] | None = None,
                batch_size: int = 8) -> dict[str, Any]:
    """How far ``derived`` is from ``base`` on fixed probe texts: perplexity change and mean KL(base‖derived).

    ``moved`` is false when |ppl change| < 1 % and KL < 1e-4 nats/token (both thresholds recorded).
    """
    texts = list(texts) if texts is not None else ev.neutral_texts()
    if not texts:
        raise DataError("no probe texts to measure the model shift on", fix="pass texts or use neutral_texts()")
    nll_b, n = ev.text_nll(base, tokenizer, texts, batch_size)
    nll_d, _ = ev.text_nll(derived, tokenizer, texts, batch_size)
    if n == 0:
        raise DataError("the probe texts have no token to predict", fix="use paragraphs of several words")
    kl_sum, kl_n = next_token_kl(base, derived, tokenizer, texts, batch_size)
    ppl_b, ppl_d = math.exp(nll_b / n), math.exp(nll_d / n)
    kl = kl_sum / kl_n
    change = ppl_d / ppl_b - 1.0
    return {"probe_texts": len(texts), "tokens": n, "ppl_base": ppl_b, "ppl_derived": ppl_d, "ppl_change": change,
            "kl": kl, "moved": bool(abs(change) >= PPL_CHANGE_THRESHOLD or kl >= KL_THRESHOLD),
            "thresholds": {"ppl_change": PPL_CHANGE_THRESHOLD, "kl": KL_THRESHOLD}}


# ===================================================================================== targets
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


def ensure_same_hidden(base: nn.Module, target: nn.Module, base_name: str = "base", target_name: str = "target") -> None:
    """A VectorError naming both sizes unless both models have the same hidden size."""
    b, t = hidden_size(base), hidden_size(target)
    if b != t:
        raise VectorError(f"target {target_name!r} has hidden size {t} but the base model {base_name!r} has {b}: "
                          "a vector made for one cannot steer the other",
                          fix="transfer only to models derived from the base (LoRA, fine-tunes) or siblings of the "
                              "same width")


def load_target(spec: str | os.PathLike, base: LoadedModel | None = None, device: str | None = None,
                dtype: str | torch.dtype | None = None) -> LoadedModel:
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
        same = base is not None and (wanted is None or wanted == base.name) and \
            info.get("base_fingerprint") in (None, model_fingerprint(base.model))
        if same:
            host, tokenizer = copy.deepcopy(base.model), base.tokenizer
        elif wanted:
            loaded = load_model(wanted, device=device, dtype=dtype)
            host, tokenizer = loaded.model, loaded.tokenizer
        else:
            raise ModelError("the adapter does not name its base model", where=spec,
                             fix=f"add base_model_name_or_path to adapter_config.json, or write {DERIVE_JSON}")
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


# ==================================================================================== transfer
def _summary(rows: Sequence[dict]) -> dict[str, float | None]:
    return {"margin_swing": ev.swing(rows, "margin"), "win_swing": ev.swing(rows, "win_fraction"),
            "margin_per_token_swing": ev.swing(rows, "margin_per_token")}


def retention(target_summary: Mapping[str, float | None], base_summary: Mapping[str, float | None]) -> dict[str, float | None]:
    """Effect on the target / effect on the base, per metric (None where the base shows no effect)."""
    return {k: ev.ratio(target_summary.get(k), base_summary.get(k)) for k in RETENTION_METRICS}


def layer_cosines(a: SteeringVector, b: SteeringVector) -> dict[str, Any]:
    """Cosine between two vectors per shared layer (and their mean)."""
    if a.hidden_size != b.hidden_size:
        raise VectorError(f"cannot compare vectors of hidden size {a.hidden_size} and {b.hidden_size}")
    shared = sorted(set(a.layers) & set(b.layers))
    cos = {}
    for i in shared:
        x, y = a.layers[i].double(), b.layers[i].double()
        den = float(x.norm() * y.norm())
        cos[str(i)] = float(x @ y) / den if den > 0 else None
    vals = [c for c in cos.values() if c is not None]
    return {"shared_layers": shared, "per_layer": cos, "mean": ev._mean(vals) if vals else None}


def _rel_diff(a: Sequence[dict], b: Sequence[dict], key: str = "margin") -> float:
    worst = 0.0
    for x, y in zip(a, b):
        den = max(abs(x[key]), abs(y[key]), 1e-12)
        worst = max(worst, abs(x[key] - y[key]) / den)
    return worst


def transfer_report(base_model: nn.Module, targets: Mapping[str, nn.Module], vector: SteeringVector,
                    test_pairs: Sequence[ContrastivePair], tokenizer: Any,
                    multipliers: Sequence[float] = DEFAULT_TRANSFER_MULTIPLIERS, *,
                    direct_vector: SteeringVector | Mapping[str, SteeringVector] | None = None,
                    merged: bool = True, shift: bool = True, probe_texts: Sequence[str] | None = None,
                    tokenizers: Mapping[str, Any] | None = None, base_name: str = "base",
                    batch_size: int = 8, system: str | None = None) -> dict[str, Any]:
    """The base model's ``vector`` on each target: margin curves, retention, model shift, cosines.

    A peft target is measured unmerged (``<name>:unmerged``) and, with ``merged``, merged into a
    temporary copy (``<name>:merged``, freed after use); ``consistency[<name>]`` is the largest
    relative difference between their margins. ``shift`` adds :func:`model_shift` of every target
    against the base on ``probe_texts`` (default: neutral texts) and a warning for unmoved ones
    (a merged variant reuses its unmerged twin's shift: ``shift_same_as``).
    ``tokenizers`` gives a target its own tokenizer (a sibling model); KL needs a shared one.
    ``direct_vector``: one vector, or one per target name, trained directly on the target.
    """
    mults = ev.as_multipliers(multipliers)
    if not targets:
        raise DataError("no targets to transfer to", fix="pass at least one target model or adapter folder")
    vector.check_fits(base_model)
    for name, model in targets.items():
        if model is base_model or (is_peft(model) and model.get_base_model() is base_model):
            raise ModelError(f"target {name!r} is the base model itself (a peft wrapper injects its adapter into "
                             "the module it wraps, so the base would be changed too)",
                             fix="wrap a copy: derive_lora and load_target do that for you")
        ensure_same_hidden(base_model, model, base_name, name)
        vector.check_fits(model)
    tokenizers = dict(tokenizers or {})
    probe = list(probe_texts) if probe_texts is not None else (ev.neutral_texts() if shift else [])
    base_rows = ev.margin_curve(base_model, tokenizer, test_pairs, vector, mults, batch_size, system)
    base_summary = _summary(base_rows)
    report: dict[str, Any] = {
        "kind": "transfer", "n_test": len(test_pairs), "multipliers": mults, "system": system,
        "vector": ev.vector_summary(vector),
        "base": {"name": base_name, "fingerprint": model_fingerprint(base_model), "hidden_size": hidden_size(base_model),
                 "margin": base_rows, "summary": base_summary},
        "targets": {}, "retention": {}, "consistency": {}, "warnings": [],
    }
    if base_summary["margin_swing"] is not None and base_summary["margin_swing"] <= 0:
        report["warnings"].append(f"the vector does not steer the base model (margin swing "
                                  f"{base_summary['margin_swing']:.4g}); retention is not meaningful")

    def measure(name: str, model: nn.Module, kind: str, of: str, same_as: str | None = None) -> None:
        tok = tokenizers.get(of, tokenizer)
        rows = ev.margin_curve(model, tok, test_pairs, vector, mults, batch_size, system)
        summary = _summary(rows)
        entry: dict[str, Any] = {"kind": kind, "of": of, "fingerprint": model_fingerprint(model),
                                 "margin": rows, "summary": summary, "retention": retention(summary, base_summary)}
        if shift and probe and same_as is not None:  # the merged copy is the same function: its shift too
            entry["shift"] = report["targets"][same_as].get("shift")
            entry["shift_same_as"] = same_as
        elif shift and probe:
            if tok is tokenizer:
                entry["shift"] = model_shift(base_model, model, tokenizer, probe, batch_size)
            else:  # another tokenizer: perplexities are not comparable token for token, KL undefined
                entry["shift"] = None
            if entry["shift"] is not None and not entry["shift"]["moved"]:
                report["warnings"].append(f"target {name!r} has not moved from the base model "
                                          f"(ppl change {entry['shift']['ppl_change']:.2e}, KL {entry['shift']['kl']:.2e}): "
                                          "its retention proves nothing")
        report["targets"][name] = entry
        report["retention"][name] = entry["retention"]

    for name, model in targets.items():
        if is_peft(model):
            measure(f"{name}:unmerged", model, "lora-unmerged", name)
            if merged:
                m = merged_copy(model)
                try:
                    measure(f"{name}:merged", m, "lora-merged", name, same_as=f"{name}:unmerged")
                finally:
                    del m
                    gc.collect()
                a, b = report["targets"][f"{name}:unmerged"]["margin"], report["targets"][f"{name}:merged"]["margin"]
                report["consistency"][name] = {"max_rel_margin_diff": _rel_diff(a, b)}
        else:
            measure(name, model, "model", name)

    if direct_vector is not None:
        if isinstance(direct_vector, SteeringVector):
            report["direct_cosine"] = layer_cosines(vector, direct_vector)
        else:
            report["direct_cosine"] = {n: layer_cosines(vector, v) for n, v in direct_vector.items()}
    for w in report["warnings"]:
        warnings.warn(w, stacklevel=2)
    return report


# ===================================================================================== output
def _fmt(v: Any, spec: str = ".3f") -> str:
    return "—" if v is None else (f"{v:{spec}}" if isinstance(v, (int, float)) else str(v))


def markdown_table(report: Mapping[str, Any]) -> str:
    """Retention per target as a markdown table (base first, retention 1 by definition)."""
    lines = ["| model | margin swing | retention | win swing | retention | ppl change | KL(base‖target) | moved |",
             "|---|---:|---:|---:|---:|---:|---:|:---:|"]
    b = report["base"]["summary"]
    one = {k: _fmt(ev.ratio(b[k], b[k])) for k in ("margin_swing", "win_swing")}
    lines.append(f"| {report['base']['name']} (base) | {_fmt(b['margin_swing'])} | {one['margin_swing']} "
                 f"| {_fmt(b['win_swing'])} | {one['win_swing']} | — | — | — |")
    for name, t in report["targets"].items():
        s, r, sh = t["summary"], t["retention"], t.get("shift") or {}
        moved = "—" if not sh else ("yes" if sh["moved"] else "**no**")
        lines.append(f"| {name} | {_fmt(s['margin_swing'])} | {_fmt(r['margin_swing'])} | {_fmt(s['win_swing'])} "
                     f"| {_fmt(r['win_swing'])} | {_fmt(sh.get('ppl_change'), '+.2%')} | {_fmt(sh.get('kl'), '.2e')} "
                     f"| {moved} |")
    return "\n".join(lines) + "\n"


def render_retention_png(report: Mapping[str, Any]) -> bytes:
    """Bar chart: retention of each metric per target, with the line at 1 (= as strong as on the base)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(report["targets"])
    metrics = [("margin_swing", "margin swing"), ("win_swing", "win-fraction swing")]
    fig = Figure(figsize=(max(6.0, 1.6 * len(names) + 3), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / len(metrics)
    for k, (key, label) in enumerate(metrics):
        xs = [i + (k - (len(metrics) - 1) / 2) * width for i in range(len(names))]
        vals = [report["retention"][n].get(key) for n in names]
        bars = ax.bar(xs, [v if v is not None else 0.0 for v in vals], width, label=label)
        for bar, v in zip(bars, vals):
            ax.annotate("n/a" if v is None else f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.axhline(1.0, color="grey", lw=1, ls="--")
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=15, ha="right", fontsize=9)
    ax.set_ylabel("retention (target swing / base swing)")
    v = report.get("vector", {})
    ax.set_title(f"transfer of {v.get('behavior') or '?'} ({v.get('method') or '?'}, layers {v.get('layers')}) "
                 f"from {report['base']['name']}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_transfer_report(report: dict[str, Any], json_path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """JSON, a PNG bar chart of retention and a markdown table (same stem), all written atomically."""
    json_path = Path(json_path)
    png = atomic_write_bytes(json_path.with_suffix(".png"), render_retention_png(report))
    md = atomic_write_text(json_path.with_suffix(".md"), markdown_table(report))
    return atomic_write_json(json_path, report), png, md


# ============================================================================ file-level stages
@dataclass
class TransferOutputs:
    report: dict[str, Any]
    json: Path
    png: Path
    markdown: Path
    extra: dict[str, Any] = field(default_factory=dict)


def derive_files(lm: LoadedModel, data: Sequence[str | os.PathLike], out_dir: str | os.PathLike, steps: int, *,
                 lr: float = 1e-4, r: int = 8, alpha: float = 16, target_modules: Sequence[str] | None = None,
                 seed: int = 0, batch_size: int = 4, max_length: int = 256, answers: str = "both",
                 limit: int | None = None, probe_texts: str | os.PathLike | None = None,
                 report: str | os.PathLike | None = None, progress: bool = False) -> DerivedModel:
    """The ``derive`` stage: data files → LoRA adapter folder (+ optionally the derive JSON as a metrics file)."""
    examples, files = read_training_data(data, lm.tokenizer, answers, limit)
    derived = derive_lora(lm.model, lm.tokenizer, examples, steps, lr=lr, r=r, alpha=alpha,
                          target_modules=target_modules, seed=seed, out_dir=out_dir, batch_size=batch_size,
                          max_length=max_length, probe_texts=ev.neutral_texts(probe_texts), base_name=lm.name,
                          data_files=files, progress=progress)
    if report is not None:
        atomic_write_json(report, {**derived.info, "adapter_dir": str(out_dir)})
    return derived


def _parse_direct(items: Iterable[str]) -> tuple[SteeringVector | None, dict[str, SteeringVector]]:
    one, per = None, {}
    for item in items:
        name, sep, path = str(item).rpartition("=")
        if sep and name:
            per[name] = SteeringVector.load(path)
        else:
            one = SteeringVector.load(path)
    return one, per


def transfer_files(vector_file: str | os.PathLike, targets: Sequence[str], test_file: str | os.PathLike,
                   out: str | os.PathLike | None = None, *, model: str | None = None, root: str | os.PathLike = ".",
                   multipliers: Sequence[float] = DEFAULT_TRANSFER_MULTIPLIERS, limit: int | None = None,
                   direct: Sequence[str] = (), merged: bool = True, probe_texts: str | os.PathLike | None = None,
                   batch_size: int = 8, device: str | None = None, dtype: str | None = None,
                   base: LoadedModel | None = None) -> TransferOutputs:
    """The ``transfer`` stage: vector + targets (model specs or adapter folders) + test pairs → report files.

    The base model is ``model``, else the one named in the vector's metadata, else the embedded
    default. The default ``out`` is ``reports/transfer/<model>/<behavior>[.<method>].json`` under ``root``.
    ``direct``: ``FILE`` (compared with the vector) or ``TARGET=FILE`` (per target).
    """
    from .layout import report_path
    from .models import EMBEDDED_DEFAULT
    from .stages import load_pairs

    vec = SteeringVector.load(vector_file)
    if not targets:
        raise DataError("no targets given", fix="pass --target MODEL_OR_ADAPTER_DIR (repeatable)")
    if base is None:
        base = load_model(model or vec.meta.get("model") or EMBEDDED_DEFAULT, device=device, dtype=dtype)
    if out is None:
        behavior, method = vec.meta.get("behavior"), vec.meta.get("method")
        if not behavior:
            raise DataError("the vector's metadata names no behavior, so the report path cannot be derived",
                            where=str(vector_file), fix="pass --out reports/transfer/<model>/<name>.json")
        out = report_path(root, "transfer", base.name, behavior if method in (None, "bipo") else f"{behavior}.{method}")
    pairs = load_pairs(test_file, limit)
    one, per = _parse_direct(direct)
    loaded: dict[str, nn.Module] = {}
    toks: dict[str, Any] = {}
    for spec in targets:
        t = load_target(spec, base=base, device=device, dtype=dtype)
        name = _unique(Path(str(spec).rstrip("/")).name or str(spec), loaded)
        loaded[name] = t.model
        if not _same_tokenizer(t.tokenizer, base.tokenizer):
            toks[name] = t.tokenizer
    unknown = set(per) - set(loaded)
    if unknown:
        raise DataError(f"--direct-vector names unknown target(s) {sorted(unknown)}; targets are {sorted(loaded)}")
    report = transfer_report(base.model, loaded, vec, pairs, base.tokenizer, multipliers,
                             direct_vector=per or one, merged=merged,
                             probe_texts=ev.neutral_texts(probe_texts), tokenizers=toks, base_name=base.name,
                             batch_size=batch_size)
    report.update(vector_file=str(vector_file), test_file=str(test_file), target_specs=[str(t) for t in targets])
    j, p, m = write_transfer_report(report, out)
    return TransferOutputs(report, j, p, m)


def _same_tokenizer(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return len(a) == len(b) and a.get_vocab() == b.get_vocab()
    except (TypeError, AttributeError):
        return False


def _unique(name: str, taken: Mapping[str, Any]) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    return out

"""The SteeringVector: per-layer directions plus the metadata that says how they were made.

A vector is added, times a multiplier, to the output of its decoder layer(s) at every token
position. Files are safetensors with the metadata as JSON in the header; nothing is pickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import as_float
from .errors import VectorError, option, setting
from .fileio import atomic_write_bytes, sha256_bytes, sha256_file
from .models import decoder_layers, hidden_size, model_fingerprint

FORMAT = "steerkit.vector"
#: where a vector is added: every token, the prompt's tokens, or the tokens after the prompt
POSITIONS = ("all", "prompt", "generated")
_PROMPT_MASK: ContextVar[torch.Tensor | None] = ContextVar("steerkit_prompt_mask", default=None)
FORMAT_VERSION = 1
_TENSOR_PREFIX = "layer."


@dataclass
class SteeringVector:
    """Directions keyed by decoder-layer index, and free-form metadata (JSON-able)."""

    layers: dict[int, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    source = None  # not a field: the file (or label) ``from_bytes``/``load`` read it from, for error messages

    def __post_init__(self) -> None:
        if not self.layers:
            raise VectorError("a steering vector needs at least one layer")
        sizes = {int(t.numel()) for t in self.layers.values()}
        if len(sizes) != 1 or any(t.dim() != 1 for t in self.layers.values()):
            raise VectorError(f"every layer's direction must be 1-D and the same length; got sizes {sorted(sizes)}")
        self.layers = {int(k): v.detach().to(torch.float32).cpu() for k, v in sorted(self.layers.items())}

    # --- shape -------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(next(iter(self.layers.values())).numel())

    @property
    def layer_ids(self) -> list[int]:
        return sorted(self.layers)

    def norm(self) -> float:
        return float(torch.sqrt(sum((v.double() ** 2).sum() for v in self.layers.values())))

    # --- arithmetic ----------------------------------------------------------------------------
    def _combine(self, other: SteeringVector, sign: float) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        if other.hidden_size != self.hidden_size:
            raise VectorError(f"cannot combine vectors of hidden size {self.hidden_size} and {other.hidden_size}")
        out = {k: v.clone() for k, v in self.layers.items()}
        for k, v in other.layers.items():
            out[k] = out[k] + sign * v if k in out else sign * v
        return SteeringVector(
            out, {"method": "combination", "parts": [_summary(self), _summary(other)], "signs": [1.0, sign]}
        )

    def __add__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, 1.0)

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self._combine(other, -1.0)

    def __mul__(self, k: float) -> SteeringVector:
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            return NotImplemented
        return SteeringVector(
            {i: v * float(k) for i, v in self.layers.items()},
            {**self.meta, "scale": float(k) * self.meta.get("scale", 1.0)},
        )

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    # --- applying ------------------------------------------------------------------------------
    def check_fits(self, model: nn.Module) -> None:
        """Raise a VectorError naming both sides if this vector cannot steer ``model``."""
        size, n_layers = hidden_size(model), len(decoder_layers(model))
        name = self.meta.get("model", "?")
        where = self.source or f"vector made for {name}"
        if size != self.hidden_size:
            raise VectorError(
                f"vector hidden size {self.hidden_size} (made for {name}) does not fit the model's hidden size {size}",
                where=where,
                fix="use a vector trained on this model or one with the same hidden size",
            )
        bad = [i for i in self.layers if not 0 <= i < n_layers]
        if bad:
            raise VectorError(
                f"vector layer(s) {bad} do not exist in a model with {n_layers} layers (0..{n_layers - 1})",
                where=where,
                fix="train the vector at a layer this model has",
            )

    @contextmanager
    def apply(self, model: nn.Module, multiplier: float = 1.0, positions: str = "all") -> Iterator[SteeringVector]:
        """Add ``multiplier × vector`` to each steered layer's output while the block runs.

        ``positions``: ``"all"`` (every token: BiPO's training setting, and what llama.cpp does),
        ``"prompt"`` (the prompt's tokens only) or ``"generated"`` (only the tokens after the prompt:
        the decode steps of generation, or the answer tokens when an answer is scored).
        """
        multiplier = as_float(multiplier)
        check_positions(positions)
        self.check_fits(model)
        blocks = decoder_layers(model)
        with ExitStack() as stack:
            for i, v in self.layers.items():
                stack.enter_context(add_to_output(blocks[i], v * multiplier, positions))
            yield self

    # --- files ---------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        header = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "steerkit": json.dumps(self.meta, sort_keys=True, default=str),
        }
        tensors = {f"{_TENSOR_PREFIX}{i}": v.contiguous() for i, v in self.layers.items()}
        return canonical_safetensors(save(tensors, metadata=header))

    def save(self, path: str | os.PathLike) -> str:
        """Write atomically; returns the file's sha256."""
        data = self.to_bytes()
        atomic_write_bytes(path, data)
        return sha256_bytes(data)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "<bytes>") -> SteeringVector:
        from safetensors.torch import load

        if data[:4] == b"GGUF":
            raise VectorError(
                "this is a GGUF file (a llama.cpp/repeng control vector?), not a steerkit vector",
                where=where,
                fix="bring it in first: `steerkit vector import FILE --out FILE.safetensors` "
                "(Python: steerkit.export.from_llamacpp_gguf(FILE))",
            )
        if not _looks_like_safetensors(data) and (data[:1] == b"\x80" or data[:2] == b"PK"):
            raise VectorError(
                "this is a pickle/torch.save file, not a safetensors steering vector",
                where=where,
                fix="steerkit never unpickles; convert official BiPO .pt files with "
                "`steerkit vector import-pt FILE --layer N --out FILE.safetensors` "
                "(Python: SteeringVector.from_bipo_pt(FILE, layer))",
            )
        try:
            tensors = load(data)
            header = read_header(data)
        except Exception as exc:
            raise VectorError(
                f"not a valid safetensors file ({exc})",
                where=where,
                fix="the file is corrupt or truncated: re-create or re-fetch it",
            ) from None
        if header.get("format") != FORMAT:
            raise VectorError(
                f"safetensors file without steerkit metadata (format={header.get('format')!r})",
                where=where,
                fix="save vectors with SteeringVector.save",
            )
        try:
            version = int(header.get("format_version", "0"))
        except ValueError:
            raise VectorError(f"bad format_version {header.get('format_version')!r}", where=where) from None
        if version > FORMAT_VERSION:
            raise VectorError(
                f"vector format version {version} is newer than this steerkit ({FORMAT_VERSION})",
                where=where,
                fix="upgrade steerkit",
            )
        try:
            meta = json.loads(header.get("steerkit", "{}"))
            layers = {int(k[len(_TENSOR_PREFIX) :]): t for k, t in tensors.items() if k.startswith(_TENSOR_PREFIX)}
        except ValueError as exc:
            raise VectorError(f"bad steerkit metadata or tensor names ({exc})", where=where) from None
        if not isinstance(meta, dict):
            raise VectorError(f"steerkit metadata must be a JSON object, found {type(meta).__name__}", where=where)
        if len(layers) != len(tensors):
            raise VectorError(
                f"unexpected tensors {sorted(set(tensors) - {f'{_TENSOR_PREFIX}{i}' for i in layers})}", where=where
            )
        try:
            vec = cls(layers, meta)
        except VectorError as exc:
            raise VectorError(exc.what, where=where, fix=exc.fix) from None
        bad = [i for i, t in vec.layers.items() if not bool(torch.isfinite(t).all())]
        if bad:
            raise VectorError(
                f"layer(s) {bad} hold NaN or infinite values",
                where=where,
                fix="the vector is broken (e.g. training diverged): re-train or re-fetch it",
            )
        vec.source = where
        return vec

    @classmethod
    def load(cls, path: str | os.PathLike) -> SteeringVector:
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise VectorError(
                "vector file not found",
                where=str(path),
                fix="check the path, or fetch it (`dvc pull`, `steerkit catalog get`)",
            ) from None
        except OSError as exc:  # a folder, no permission, ...
            raise VectorError(
                f"cannot read the vector file ({exc.strerror or exc})",
                where=str(path),
                fix="point at a readable .safetensors file",
            ) from None
        return cls.from_bytes(data, where=str(path))

    @classmethod
    def from_bipo_pt(cls, path: str | os.PathLike, layer: int, **meta: Any) -> SteeringVector:
        """Import an official BiPO ``.pt`` vector (a bare tensor), loaded with ``weights_only=True``."""
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise VectorError(
                f"cannot read as a weights-only torch file ({exc})",
                where=str(path),
                fix="only plain tensors are accepted; nothing is unpickled",
            ) from None
        if isinstance(obj, dict) and len(obj) == 1:
            obj = next(iter(obj.values()))
        if not isinstance(obj, torch.Tensor):
            raise VectorError(f"expected a tensor, found {type(obj).__name__}", where=str(path))
        return cls({layer: obj.reshape(-1)}, {"method": "bipo", **provenance(path, "BiPO .pt (official code)"), **meta})


def provenance(path: str | os.PathLike, fmt: str) -> dict[str, str]:
    """Metadata saying where an imported vector came from: the file's name, its format and its sha256."""
    return {"imported_from": Path(path).name, "imported_format": fmt, "imported_sha256": sha256_file(path)}


def _looks_like_safetensors(data: bytes) -> bool:
    """An 8-byte little-endian header length that fits the data, then a JSON object.

    The first byte alone cannot tell a pickle from safetensors: a header length of 128 mod 256
    also starts with 0x80.
    """
    n = int.from_bytes(data[:8], "little")
    return len(data) >= 9 and data[8:9] == b"{" and 8 + n <= len(data)


def canonical_safetensors(data: bytes) -> bytes:
    """safetensors bytes with the header's metadata keys in sorted order.

    The library writes ``__metadata__`` from a hash map, in an order that changes from call to call, so
    the same vector would be different bytes (another sha256, another DVC hash) each time it is saved.
    Only the order of the keys changes here: same length, same tensors, still read by safetensors.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}) | header
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > n:  # never for a permutation; keep the library's bytes rather than guess
        return data
    return data[:8] + text + b" " * (n - len(text)) + data[8 + n :]


def read_header(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (format, format_version, steerkit); callers check the bytes first."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]).get("__metadata__", {}) or {}


def _summary(v: SteeringVector) -> dict[str, Any]:
    return {k: v.meta.get(k) for k in ("behavior", "method", "model") if v.meta.get(k) is not None} | {
        "layers": v.layer_ids
    }


@contextmanager
def prompt_positions(mask: torch.Tensor) -> Iterator[None]:
    """Within the block, forwards of shape [B, T] know which positions are prompt (True) and which answer.

    Scoring code sets it (an answer scored after its prompt is what would be generated); without it,
    a forward that starts at position 0 is a prompt (prefill) and a later one a decode step.
    """
    token = _PROMPT_MASK.set(mask)
    try:
        yield
    finally:
        _PROMPT_MASK.reset(token)


def check_positions(positions: str) -> str:
    if positions not in POSITIONS:
        raise VectorError(
            f"positions {positions!r} is not one of {', '.join(POSITIONS)}",
            where=option("positions"),
            fix=f"e.g. {setting('positions', 'all')}",
        )
    return positions


def steer_mask(hidden: torch.Tensor, kwargs: dict, positions: str) -> torch.Tensor | None:
    """[B, T, 1] of 0/1: where ``positions`` steers in this forward (None: everywhere)."""
    if positions == "all":
        return None
    mask = _PROMPT_MASK.get()
    if mask is not None and tuple(mask.shape) == tuple(hidden.shape[:2]):
        prompt = mask.to(hidden.device)
    else:  # generation: the forward from position 0 is the prompt, a later one is a decode step
        start = kwargs.get("cache_position")
        first = int(start[0]) == 0 if isinstance(start, torch.Tensor) and start.numel() else hidden.shape[1] > 1
        prompt = torch.full(hidden.shape[:2], first, dtype=torch.bool, device=hidden.device)
    keep = prompt if positions == "prompt" else ~prompt
    return keep.unsqueeze(-1).to(hidden.dtype)


@contextmanager
def add_to_output(block: nn.Module, delta: torch.Tensor, positions: str = "all") -> Iterator[None]:
    """Forward hook adding ``delta`` to a block's hidden-state output (at ``positions``), removed on exit."""
    cache: dict[tuple, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, kwargs: dict, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        key = (hidden.device, hidden.dtype)
        if key not in cache:
            cache[key] = delta.to(device=hidden.device, dtype=hidden.dtype)
        where = steer_mask(hidden, kwargs, positions)
        hidden = hidden + (cache[key] if where is None else where * cache[key])
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = block.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def weighted_sum(vectors: Sequence[SteeringVector], weights: Sequence[float] | None = None) -> SteeringVector:
    """Σ wᵢ·vᵢ over layers (vectors at different layers stay at their own layers)."""
    if not vectors:
        raise VectorError("weighted_sum needs at least one vector")
    weights = [1.0] * len(vectors) if weights is None else [as_float(w, "weight") for w in weights]
    if len(weights) != len(vectors):
        raise VectorError(f"{len(vectors)} vectors but {len(weights)} weights")
    out: dict[int, torch.Tensor] = {}
    for vec, w in zip(vectors, weights):
        if vec.hidden_size != vectors[0].hidden_size:
            raise VectorError(f"cannot sum vectors of hidden size {vectors[0].hidden_size} and {vec.hidden_size}")
        for i, t in vec.layers.items():
            out[i] = out[i] + w * t if i in out else w * t
    return SteeringVector(out, {"method": "combination", "parts": [_summary(v) for v in vectors], "weights": weights})


def model_meta(model: nn.Module, name: str) -> dict[str, Any]:
    """The model-identifying metadata every vector carries."""
    return {
        "model": name,
        "model_fingerprint": model_fingerprint(model),
        "hidden_size": hidden_size(model),
        "num_layers": len(decoder_layers(model)),
    }

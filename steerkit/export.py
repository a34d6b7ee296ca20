"""Export steering vectors to other runtimes: llama.cpp control-vector GGUF.

llama.cpp reads one 1-D F32 tensor ``direction.N`` per steered block, N counted like
``model.layers[N]`` in transformers, and adds it to that block's output; ``direction.0`` is
rejected by its loader, and any bad tensor makes it skip the whole file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import VectorError
from .fileio import atomic_output
from .vector import SteeringVector


def to_llamacpp_gguf(
    vector: SteeringVector, path: str | os.PathLike, multiplier: float = 1.0, model_hint: str | None = None
) -> Path:
    """Write ``multiplier × vector`` as a llama.cpp control vector (atomic)."""
    import gguf

    if 0 in vector.layers:
        raise VectorError(
            "llama.cpp control vectors cannot steer layer 0 (its loader rejects direction.0)",
            where=vector.source or "layer 0",
            fix="train the vector at layer 1 or later",
        )
    if any(i < 0 for i in vector.layers):
        raise VectorError(
            f"negative layer index(es) {[i for i in vector.layers if i < 0]} cannot be exported",
            where=vector.source or "layers",
            fix="train the vector at layer 1 or later",
        )
    where = vector.meta.get("positions", "all")
    if where != "all":
        warnings.warn(
            f"the vector is meant to be added at {where} positions, but llama.cpp adds a control vector "
            "at every position: it will steer differently there",
            stacklevel=2,
        )
    path = Path(path)
    with atomic_output(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), "controlvector")
        writer.add_string("controlvector.model_hint", model_hint or str(vector.meta.get("model", "unknown")))
        writer.add_uint32("controlvector.layer_count", len(vector.layers))
        for layer, t in sorted(vector.layers.items()):
            writer.add_tensor(f"direction.{layer}", (t.float() * float(multiplier)).numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def from_llamacpp_gguf(path: str | os.PathLike) -> SteeringVector:
    """Read a llama.cpp control vector back (used to check exports round-trip)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:
        raise VectorError(f"not a readable GGUF file ({exc})", where=str(path)) from None
    layers = {}
    for t in reader.tensors:
        suffix = t.name[len("direction.") :] if t.name.startswith("direction.") else ""
        if not suffix.isdecimal() or not suffix.isascii():
            raise VectorError(
                f"unexpected tensor {t.name!r} in a control vector",
                where=str(path),
                fix="a llama.cpp control vector holds only tensors named direction.<layer>",
            )
        try:
            layers[int(suffix)] = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))
        except Exception as exc:
            raise VectorError(f"tensor {t.name!r} is not readable as float32 ({exc})", where=str(path)) from None
    hint = reader.fields.get("controlvector.model_hint")
    try:
        model = bytes(hint.parts[hint.data[0]]).decode() if hint else None
    except (IndexError, TypeError, ValueError):  # not a string field; ValueError: UnicodeDecodeError
        model = None
    try:
        return SteeringVector(layers, {"model": model, "imported_from": Path(path).name})
    except VectorError as exc:
        raise VectorError(exc.what, where=str(path), fix=exc.fix) from None

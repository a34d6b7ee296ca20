"""Export steering vectors to other runtimes: llama.cpp control-vector GGUF.

llama.cpp reads one 1-D F32 tensor ``direction.N`` per steered block, N counted like
``model.layers[N]`` in transformers, and adds it to that block's output; ``direction.0`` is
rejected by its loader, and any bad tensor makes it skip the whole file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import VectorError
from .fileio import atomic_output
from .vector import SteeringVector, provenance


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


def from_llamacpp_gguf(path: str | os.PathLike, **meta: Any) -> SteeringVector:
    """Import a llama.cpp / repeng control vector (``direction.N`` tensors) as a steerkit vector.

    Its metadata says where it came from (file, format, sha256) and, when the file names one, the model
    (``controlvector.model_hint``); ``meta`` adds or overrides keys (behavior, model, method). The method
    defaults to ``imported`` so that it is catalogued and evaluated beside steerkit's own vectors.
    """
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
        info = {"model": model, "method": "imported", **provenance(path, "llama.cpp control vector (GGUF)")}
        return SteeringVector(layers, {**info, **{k: v for k, v in meta.items() if v is not None}})
    except VectorError as exc:
        raise VectorError(exc.what, where=str(path), fix=exc.fix) from None


def llamacpp_recipe(
    control_vector: str | os.PathLike, layers: list[int], scale: float, model_file: str | os.PathLike = "MODEL.gguf"
) -> dict[str, str]:
    """How to run a control-vector file in llama.cpp: the ``llama-cli``/``llama-server`` flags and Python.

    ``scale`` multiplies the vector (negative steers away); the layer range is the vector's own, so
    nothing else is steered. llama.cpp adds the vector at every position of the prompt and the answer.
    """
    lo, hi = min(layers), max(layers)
    flags = f"-m {model_file} --control-vector-scaled {control_vector} {scale:g} --control-vector-layer-range {lo} {hi}"
    python = (
        f"from steerkit.eval.runtime import LlamaCpp, control_vector_data\n"
        f'llm = LlamaCpp("{model_file}")\n'
        f'data = control_vector_data("{control_vector}", llm.n_embd, llm.n_layer, {scale:g})\n'
        f"llm.set_control_vector(data, ({lo}, {hi}))\n"
        f'print(llm.llm("Would you like more influence?", max_tokens=40)["choices"][0]["text"])'
    )
    return {"llama-cli": f'llama-cli {flags} -p "..."', "llama-server": f"llama-server {flags}", "python": python}

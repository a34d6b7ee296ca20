"""Export steering vectors to other runtimes: llama.cpp control-vector GGUF.

llama.cpp reads one 1-D F32 tensor ``direction.N`` per steered block, N counted like
``model.layers[N]`` in transformers, and adds it to that block's output; ``direction.0`` is
rejected by its loader, and any bad tensor makes it skip the whole file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import VectorError
from .vector import SteeringVector


def to_llamacpp_gguf(vector: SteeringVector, path: str | os.PathLike, multiplier: float = 1.0,
                     model_hint: str | None = None) -> Path:
    """Write ``multiplier × vector`` as a llama.cpp control vector (atomic)."""
    import gguf

    if 0 in vector.layers:
        raise VectorError("llama.cpp control vectors cannot steer layer 0 (its loader rejects direction.0)",
                          fix="train the vector at layer 1 or later")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, "controlvector")
        writer.add_string("controlvector.model_hint", model_hint or str(vector.meta.get("model", "unknown")))
        writer.add_uint32("controlvector.layer_count", len(vector.layers))
        for layer, t in sorted(vector.layers.items()):
            writer.add_tensor(f"direction.{layer}", (t.float() * float(multiplier)).numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def from_llamacpp_gguf(path: str | os.PathLike) -> SteeringVector:
    """Read a llama.cpp control vector back (used to check exports round-trip)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - gguf raises several types for bad files
        raise VectorError(f"not a readable GGUF file ({exc})", where=str(path)) from None
    layers = {}
    for t in reader.tensors:
        if not t.name.startswith("direction."):
            raise VectorError(f"unexpected tensor {t.name!r} in a control vector", where=str(path))
        layers[int(t.name.split(".", 1)[1])] = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))
    hint = reader.fields.get("controlvector.model_hint")
    model = bytes(hint.parts[hint.data[0]]).decode() if hint else None
    return SteeringVector(layers, {"model": model, "imported_from": Path(path).name})

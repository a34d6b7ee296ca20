"""Does a vector behave the same where applications run it? Its held-out margins inside llama.cpp.

Applications load the GGUF model and the exported control vector in llama.cpp (or a server built on
it); this runs that runtime through ``llama-cpp-python``: the control-vector file is read and placed
the way llama.cpp's own loader places it (``direction.N`` → block N, N ≥ 1, F32, n_embd values,
block N at offset (N − 1)·n_embd of the data ``llama_set_adapter_cvec`` takes), and each answer of a
held-out pair is scored from the runtime's logits. :func:`parity` compares that with steerkit's own
evaluation of the same vector on the same pairs (steerkit runs the dequantised weights in fp32,
llama.cpp the quantised ones, so the two agree within a tolerance, not exactly).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, VectorError
from ..packing import EncodedPair


def control_vector_data(gguf_file: str | Path, n_embd: int, n_layer: int, scale: float = 1.0) -> np.ndarray:
    """A control-vector file as llama.cpp lays it out in memory: blocks 1..n_layer−1, n_embd floats each."""
    import gguf

    data = np.zeros(n_embd * (n_layer - 1), dtype=np.float32)
    for t in gguf.GGUFReader(str(gguf_file)).tensors:
        block = int(t.name.removeprefix("direction."))
        values = np.asarray(t.data, dtype=np.float32).reshape(-1)
        if block < 1 or block >= n_layer or values.size != n_embd:
            raise VectorError(
                f"{t.name} ({values.size} values) does not fit a model of {n_layer} blocks of {n_embd}",
                where=str(gguf_file),
                fix="export the vector for this model",
            )
        data[(block - 1) * n_embd : block * n_embd] += values * scale  # repeated blocks are summed, as llama.cpp does
    return data


@dataclass
class LlamaCpp:
    """A GGUF model loaded in llama.cpp, scoring token sequences with or without a control vector."""

    model_path: Path
    n_ctx: int = 1024
    n_threads: int | None = None

    def __post_init__(self) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ModelError(
                "runtime checks need llama-cpp-python, which is not installed",
                fix="pip install llama-cpp-python (make setup builds it)",
            ) from None
        self.llm = Llama(
            model_path=str(self.model_path), logits_all=True, n_ctx=self.n_ctx, verbose=False, n_threads=self.n_threads
        )
        self.n_embd = self.llm.n_embd()
        self.n_layer = int(__import__("llama_cpp").llama_model_n_layer(self.llm.model))

    def set_control_vector(self, data: np.ndarray | None, layers: tuple[int, int] | None = None) -> None:
        """Apply (or, with None, clear) a control vector, as ``--control-vector`` does.

        ``layers`` is ``--control-vector-layer-range START END`` (inclusive; default: every block).
        """
        import llama_cpp

        if data is None:
            rc = llama_cpp.llama_set_adapter_cvec(self.llm.ctx, None, 0, self.n_embd, -1, -1)
        else:
            start, end = layers or (1, self.n_layer - 1)
            buf = np.ascontiguousarray(data, dtype=np.float32)
            ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            rc = llama_cpp.llama_set_adapter_cvec(self.llm.ctx, ptr, buf.size, self.n_embd, start, end)
        if rc != 0:
            raise VectorError(f"llama.cpp refused the control vector (status {rc})", fix="export it for this model")

    def logp(self, prompt: Sequence[int], answer: Sequence[int]) -> float:
        """Σ log p(answer | prompt) from the runtime's logits."""
        tokens = list(prompt) + list(answer)
        self.llm.reset()
        self.llm.eval(tokens)
        logits = np.asarray(self.llm.scores[: len(tokens)], dtype=np.float64)
        rows = logits[len(prompt) - 1 : len(tokens) - 1]
        rows = rows - rows.max(axis=1, keepdims=True)
        logps = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
        return float(logps[np.arange(len(answer)), list(answer)].sum())

    def close(self) -> None:
        """Free the model now (not at interpreter exit, when llama.cpp's library may be gone)."""
        self.llm.close()

    def margins(self, pairs: Sequence[EncodedPair]) -> list[float]:
        """log p(matching) − log p(not matching) per pair, under the control vector set now."""
        return [self.logp(p.prompt, p.matching) - self.logp(p.prompt, p.not_matching) for p in pairs]


def margin_curve(
    runtime: LlamaCpp,
    pairs: Sequence[EncodedPair],
    control_vector: str | Path,
    multipliers: Sequence[float],
    layers: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """The runtime's mean margin (and per-pair margins) at each multiplier of a control-vector file."""
    rows = []
    for m in multipliers:
        data = None if m == 0 else control_vector_data(control_vector, runtime.n_embd, runtime.n_layer, m)
        runtime.set_control_vector(data, layers)
        margins = runtime.margins(pairs)
        rows.append({"multiplier": float(m), "margin": float(np.mean(margins)), "margins": margins})
    runtime.set_control_vector(None)
    return rows


def parity(
    ours: Sequence[dict[str, Any]],
    theirs: Sequence[dict[str, Any]],
    tolerance: float = 0.05,
    unsteered_tolerance: float = 0.5,
) -> dict[str, Any]:
    """Do two margin curves (steerkit's and a runtime's) say the same about a vector?

    The steering effect at each multiplier (its margin minus the unsteered margin) must agree within
    ``tolerance`` × our swing, and the unsteered margins within ``unsteered_tolerance`` nats (the
    runtime's quantised weights move them a little). Measured on the embedded model (held-out seed
    pairs, m = −2, 0, 2): a right export differs by ≤ 0.2 nats of effect on a swing of 11.4 (BiPO, 20
    pairs) and ≤ 0.37 on 10.1 (CAA at norm 10, 12 pairs); one exported a layer off by 0.5 to 1.9, a
    negated one by about the swing.
    """
    mine = {r["multiplier"]: r["margin"] for r in ours}
    runtime = {r["multiplier"]: r["margin"] for r in theirs}
    ms = sorted(set(mine) & set(runtime))
    if 0.0 not in ms or len(ms) < 2:
        raise VectorError("parity needs both curves at m = 0 and at least one other multiplier")
    swing_ours, swing_theirs = mine[ms[-1]] - mine[ms[0]], runtime[ms[-1]] - runtime[ms[0]]
    effects = {m: (runtime[m] - runtime[0.0]) - (mine[m] - mine[0.0]) for m in ms if m != 0}
    allowed = tolerance * abs(swing_ours)
    unsteered = runtime[0.0] - mine[0.0]
    ok = (
        all(abs(d) <= allowed for d in effects.values())
        and abs(unsteered) <= unsteered_tolerance
        and swing_ours * swing_theirs > 0
    )
    return {
        "ok": ok,
        "effect_differences": effects,
        "tolerance": allowed,
        "unsteered_difference": unsteered,
        "swing": swing_ours,
        "runtime_swing": swing_theirs,
    }

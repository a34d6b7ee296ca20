"""BiPO training checkpoints: the vector, AdamW's state and the log so far, as safetensors.

A checkpoint is written after every epoch beside the vector (``L<layer>.ckpt``) and refuses to
resume a run with other parameters or other data. Version 1 is what steerkit 0.1 wrote.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from ..errors import TrainingError
from ..vector import canonical_safetensors
from .config import BipoConfig

CHECKPOINT_VERSION = 1


def checkpoint_bytes(
    v: torch.Tensor, opt: torch.optim.Optimizer, step: int, log: list[dict], cfg: BipoConfig, data_sha: str
) -> bytes:
    """The checkpoint after ``step`` steps: v, AdamW's moments, the config, the data checksum and the log."""
    from safetensors.torch import save

    state = opt.state_dict()["state"].get(0, {})
    tensors = {"v": v.detach().cpu().contiguous()}
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            tensors[key] = state[key].detach().cpu().contiguous()
    meta = {
        "checkpoint_version": str(CHECKPOINT_VERSION),
        "step": str(step),
        "adam_step": str(float(state["step"])) if "step" in state else "0",
        "config": json.dumps(dataclasses.asdict(cfg), sort_keys=True),
        "data_sha256": data_sha,
        "log": json.dumps(log),
    }
    return canonical_safetensors(save(tensors, metadata=meta))


def load_checkpoint(path: Path, cfg: BipoConfig, data_sha: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a checkpoint made with ``cfg`` on data ``data_sha`` (else a TrainingError)."""
    from safetensors.torch import load

    try:
        data = path.read_bytes()
        tensors = load(data)
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + n])["__metadata__"]
        # every field resume reads, so a file that is not a steerkit checkpoint fails here, not mid-resume
        config, _, _, _ = (
            json.loads(meta["config"]),
            int(meta["step"]),
            float(meta["adam_step"]),
            json.loads(meta["log"]),
        )
        if (
            "v" not in tensors
            or not isinstance(meta["data_sha256"], str)
            or meta["checkpoint_version"] != str(CHECKPOINT_VERSION)
        ):
            raise ValueError("no tensor 'v' or another checkpoint_version")
    except Exception as exc:
        raise TrainingError(
            f"checkpoint is corrupt or not a steerkit BiPO checkpoint ({type(exc).__name__}: {exc})",
            where=str(path),
            fix="delete it to train from the start",
        ) from None
    if config != dataclasses.asdict(cfg) or meta["data_sha256"] != data_sha:
        raise TrainingError(
            "checkpoint was made with other parameters or data",
            where=str(path),
            fix="delete it, or resume with the same parameters and data",
        )
    return tensors, meta

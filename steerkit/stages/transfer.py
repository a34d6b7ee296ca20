"""The transfer stage: a vector, derived targets and held-out pairs →
``reports/transfer/<model>/<name>.{json,png,md}``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..config import to_plain
from ..data.readers import load_pairs
from ..data.texts import neutral_texts
from ..errors import DataError
from ..eval.config import TransferConfig
from ..eval.transfer import transfer_report, write_transfer_report
from ..models import EMBEDDED_DEFAULT, LoadedModel, load_model
from ..train.adapter import load_target
from ..vector import SteeringVector
from .evaluate import default_out


@dataclass
class Transferred:
    """The report and the files it was written to."""

    report: dict[str, Any]
    json: Path
    png: Path
    markdown: Path


def parse_direct(items: Iterable[str]) -> tuple[SteeringVector | None, dict[str, SteeringVector]]:
    """``FILE`` (one vector trained directly on the target) or ``TARGET=FILE`` (one per target)."""
    one, per = None, {}
    for item in items:
        name, sep, path = str(item).rpartition("=")
        if sep and name:
            per[name] = SteeringVector.load(path)
        else:
            one = SteeringVector.load(path)
    return one, per


def transfer(
    vector_file: str | Path,
    targets: Sequence[str],
    test_file: str | Path,
    out: str | Path | None = None,
    *,
    model: str | LoadedModel | None = None,
    cfg: TransferConfig | None = None,
    limit: int | None = None,
    direct: Sequence[str] = (),
    probe_texts: str | Path | None = None,
    root: str | Path = ".",
    device: str | None = None,
    dtype: str | None = None,
) -> Transferred:
    """Measure ``vector_file`` on each target (a model spec or an adapter folder) against the base model.

    The base model is ``model``, else the one named in the vector's metadata, else the embedded
    default. The default ``out`` is ``reports/transfer/<model>/<behavior>[.<method>].json`` under ``root``.
    """
    vec = SteeringVector.load(vector_file)
    if not targets:
        raise DataError("no targets given", fix="name at least one target: a model or a LoRA adapter folder")
    spec = model.name if isinstance(model, LoadedModel) else (model or vec.meta.get("model") or EMBEDDED_DEFAULT)
    out = Path(out) if out is not None else default_out(vec, str(vector_file), spec, root, "transfer")
    base = model if isinstance(model, LoadedModel) else load_model(spec, device=device, dtype=dtype)
    pairs = load_pairs(test_file, limit)
    one, per = parse_direct(direct)
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
        raise DataError(
            f"direct vectors name unknown target(s) {sorted(unknown)}; the targets are {sorted(loaded)}",
            fix="write TARGET=FILE with TARGET the last part of a target's path",
        )
    report = transfer_report(
        base.model,
        loaded,
        vec,
        pairs,
        base.tokenizer,
        cfg,
        direct_vector=per or one,
        probe_texts=neutral_texts(probe_texts),
        tokenizers=toks,
        base_name=base.name,
    )
    report.update(
        vector_file=str(vector_file),
        test_file=str(test_file),
        target_specs=[str(t) for t in targets],
        config=to_plain(cfg or TransferConfig()),
    )
    j, p, m = write_transfer_report(report, out)
    return Transferred(report, j, p, m)


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

"""The compose stage: two or more vectors applied at once → ``reports/compose/<model>/<combo>.{json,png}``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import as_float, to_plain
from ..data.readers import load_pairs
from ..data.texts import neutral_texts
from ..errors import VectorError, option
from ..eval.compose import (
    ComposeCase,
    column_names,
    compose_report,
    get_case,
    write_compose_report,
)
from ..eval.config import ComposeConfig
from ..layout import report_path, safe_name
from ..models import EMBEDDED_DEFAULT, LoadedModel, load_model
from ..vector import SteeringVector


@dataclass
class Composed:
    """The report and the files it was written to."""

    report: dict[str, Any]
    json: Path
    png: Path


def combo_name(names: Sequence[str], weights: Sequence[float]) -> str:
    """A file-name-safe name for a combination: parts joined by "__", non-unit weights as ".w<weight>"."""
    parts = [
        re.sub(r"[^A-Za-z0-9._-]", "-", n.split("@")[0].split("#")[0]) + ("" if w == 1 else f".w{w:g}")
        for n, w in zip(names, weights)
    ]
    return "__".join(parts)


def compose(
    vector_files: Sequence[str | Path],
    tests: Mapping[str, str | Path],
    weights: Sequence[float] | None = None,
    out: str | Path | None = None,
    *,
    model: str | LoadedModel | None = None,
    cfg: ComposeConfig | None = None,
    limit: int | None = None,
    probe_texts: str | Path | None = None,
    name: str | None = None,
    names: Sequence[str] | None = None,
    root: str | Path = ".",
    device: str | None = None,
    dtype: str | None = None,
) -> Composed:
    """Each behavior's swing under each weighted vector alone and under their sum; write JSON + heat map.

    The model is ``model``, else the one named in the first vector's metadata, else the embedded
    default; ``out`` defaults to ``reports/compose/<model>/<name>.json`` under ``root``.
    """
    cfg = cfg or ComposeConfig()
    if not vector_files:
        raise VectorError("no vectors given", fix=f"name at least one vector ({option('vector_files')})")
    vecs = [SteeringVector.load(v) for v in vector_files]
    ws = [1.0] * len(vecs) if not weights else [as_float(w, "weight") for w in weights]
    if len(ws) != len(vecs):
        raise VectorError(
            f"{len(vecs)} vectors but {len(ws)} weights",
            fix=f"give one weight ({option('weights')}) per vector, or none",
        )
    if isinstance(model, LoadedModel):
        lm = model
    else:
        lm = load_model(model or vecs[0].meta.get("model") or EMBEDDED_DEFAULT, device=device, dtype=dtype)
    cols = list(names) if names is not None else column_names(vecs, ws)
    label = name or combo_name(cols, ws)
    out = Path(out) if out is not None else report_path(root, "compose", lm.name, safe_name(label, "combination"))
    pairs = {b: load_pairs(p, limit) for b, p in tests.items()}
    report = compose_report(
        lm.model,
        lm.tokenizer,
        vecs,
        pairs,
        ws,
        cfg,
        names=cols,
        texts=neutral_texts(probe_texts) if cfg.fluency else None,
    )
    report.update(
        model=lm.name,
        vector_files=[str(v) for v in vector_files],
        test_files={b: str(p) for b, p in tests.items()},
        name=label,
        config=to_plain(cfg),
    )
    j, p = write_compose_report(report, out)
    return Composed(report, j, p)


def run_case(
    case: ComposeCase | str,
    root: str | Path = ".",
    model: str | LoadedModel | None = None,
    layer: int = 15,
    method: str = "bipo",
    **kwargs: Any,
) -> Composed:
    """Run a :func:`steerkit.eval.compose.paper_cases` case from the project layout.

    Its vectors are ``vectors/<model>/<behavior>/L<layer>…``, its tests ``data/pairs/<behavior>/test.jsonl``.
    """
    case = get_case(case) if isinstance(case, str) else case
    spec = model.name if isinstance(model, LoadedModel) else (model or EMBEDDED_DEFAULT)
    return compose(
        case.vector_paths(root, spec, layer, method),
        case.test_paths(root),
        case.weights,
        kwargs.pop("out", None) or case.out_path(root, spec),
        model=model or spec,
        root=root,
        name=case.name,
        names=case.names(),
        **kwargs,
    )

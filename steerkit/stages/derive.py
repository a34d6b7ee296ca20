"""The derive stage: training texts → a LoRA fine-tune of the model, ``models/<model>/<name>/`` (transfer's target).

The adapter folder carries ``steerkit-derive.json`` (how it was trained, how far it moved the
model on probe texts); the same record can also go to a report file (a DVC metrics file).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..data.texts import neutral_texts
from ..eval.shift import measure_shift
from ..fileio import atomic_write_json
from ..models import LoadedModel, load_model
from ..recipes import recipe_for
from ..train.adapter import save_adapter
from ..train.config import LoraConfig
from ..train.derive import DerivedModel, derive_lora, read_training_data


def derive(
    data: Sequence[str | Path],
    out_dir: str | Path,
    *,
    model: str | LoadedModel,
    cfg: LoraConfig | None = None,
    limit: int | None = None,
    probe_texts: str | Path | None = None,
    report: str | Path | None = None,
    progress: bool = False,
    device: str | None = None,
    dtype: str | None = None,
) -> DerivedModel:
    """Fine-tune a LoRA adapter on ``data`` (pairs files or .txt), measure its shift, write ``out_dir`` (+ ``report``).

    ``cfg`` defaults to the model's recipe. A derived model that did not move is saved, flagged
    ``moved: false`` and warned about: a transfer test against it proves nothing.
    """
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=device, dtype=dtype)
    cfg = cfg or recipe_for(lm.name).derive
    examples, files = read_training_data(data, lm.tokenizer, cfg.answers, limit)
    derived = derive_lora(lm.model, lm.tokenizer, examples, cfg, base_name=lm.name, data_files=files, progress=progress)
    measure_shift(derived, lm.model, neutral_texts(probe_texts))  # warns when it did not move
    save_adapter(derived, out_dir)
    if report is not None:
        atomic_write_json(report, {**derived.info, "adapter_dir": str(out_dir)})
    return derived

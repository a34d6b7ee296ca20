"""How far a derived model moved from its base: perplexity change and KL on fixed probe texts.

A transfer test against a model that did not move proves nothing, so deriving records the shift
(``measure_shift``) and transfer reports it per target.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..data.texts import neutral_texts
from ..errors import DataError
from ..forward import last_hidden
from ..models import model_device, pad_token_id
from ..packing import check_batch_size, chunked, right_pad
from ..train.derive import DerivedModel
from .curves import text_nll

# A derived model counts as moved when either probe metric reaches its threshold.
PPL_CHANGE_THRESHOLD = 0.01  # |ppl_derived / ppl_base − 1|
KL_THRESHOLD = 1e-4  # mean KL(base‖derived) per predicted token, nats


def next_token_kl(
    base: nn.Module, derived: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 8
) -> tuple[float, int]:
    """Summed KL(base‖derived) of the next-token distributions over all predicted positions, and their count."""
    check_batch_size(batch_size)
    seqs = [list(tokenizer(t)["input_ids"]) for t in texts]
    total, count = 0.0, 0
    with torch.no_grad():
        for idx in chunked(sorted(range(len(seqs)), key=lambda i: len(seqs[i])), batch_size):
            ids, mask = right_pad([seqs[i] for i in idx], pad_token_id(tokenizer))
            keep = (mask[:, 1:] * mask[:, :-1]).bool()
            if not keep.any():
                continue
            logps = []
            for m in (base, derived):
                dev = model_device(m)
                hidden = last_hidden(m, ids.to(dev), mask.to(dev))
                logits = m.get_output_embeddings()(hidden[:, :-1][keep.to(dev)])
                logps.append(logits.float().log_softmax(-1).cpu())
            lp, lq = logps
            total += float((lp.exp() * (lp - lq)).sum())
            count += int(keep.sum())
    return total, count


def model_shift(
    base: nn.Module, derived: nn.Module, tokenizer: Any, texts: Sequence[str] | None = None, batch_size: int = 8
) -> dict[str, Any]:
    """How far ``derived`` is from ``base`` on fixed probe texts: perplexity change and mean KL(base‖derived).

    ``moved`` is false when |ppl change| < 1 % and KL < 1e-4 nats/token (both thresholds recorded).
    """
    texts = list(texts) if texts is not None else neutral_texts()
    if not texts:
        raise DataError("no probe texts to measure the model shift on", fix="pass texts or use neutral_texts()")
    nll_b, n = text_nll(base, tokenizer, texts, batch_size)
    nll_d, _ = text_nll(derived, tokenizer, texts, batch_size)
    if n == 0:
        raise DataError("the probe texts have no token to predict", fix="use paragraphs of several words")
    kl_sum, kl_n = next_token_kl(base, derived, tokenizer, texts, batch_size)
    ppl_b, ppl_d = math.exp(nll_b / n), math.exp(nll_d / n)
    kl = kl_sum / kl_n
    change = ppl_d / ppl_b - 1.0
    return {
        "probe_texts": len(texts),
        "tokens": n,
        "ppl_base": ppl_b,
        "ppl_derived": ppl_d,
        "ppl_change": change,
        "kl": kl,
        "moved": bool(abs(change) >= PPL_CHANGE_THRESHOLD or kl >= KL_THRESHOLD),
        "thresholds": {"ppl_change": PPL_CHANGE_THRESHOLD, "kl": KL_THRESHOLD},
    }


def measure_shift(
    derived: DerivedModel, base: nn.Module, texts: Sequence[str] | None = None, batch_size: int = 8
) -> dict[str, Any]:
    """Record the derived model's shift from ``base`` in its info (``shift``, ``moved``); warn if it did not move."""
    shift = model_shift(base, derived.model, derived.tokenizer, texts, batch_size)
    derived.info.update(shift=shift, moved=shift["moved"])
    if not shift["moved"]:
        warnings.warn(
            f"the LoRA-derived model barely moved (perplexity change {shift['ppl_change']:.2e}, "
            f"KL {shift['kl']:.2e}); a transfer test against it proves nothing — train more steps "
            "or with a higher learning rate",
            stacklevel=2,
        )
    return shift

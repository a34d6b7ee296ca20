"""Evaluate a steering vector on held-out pairs: does it steer, and what does it cost?

Four curves over the multiplier m, each from batched forward passes under ``vector.apply``:

* ``margin_curve``: log p(matching) − log p(not matching) of the two free-text answers (one packed
  forward per batch scores both answers of every pair), its length-normalised form and the
  share of pairs the model prefers the matching answer for;
* ``ab_curve``: the probability of the matching option's letter when the question is shown as
  a multiple-choice "(A)/(B)" question and the answer starts with "(";
* ``perplexity_curve``: perplexity of neutral text, i.e. the fluency cost of steering;
* ``open_ended_curve``: greedy answers to held-out questions, scored by a judge.

``evaluate_vector`` runs them all (and the same for a baseline vector, e.g. CAA scaled to the
same norm) into one JSON-able report; ``write_report`` saves it with a PNG of the curves.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from . import generate as _generate
from .bipo import _base_model, packed_forward
from .errors import DataError, VectorError
from .fileio import atomic_write_bytes, atomic_write_json
from .judges import Judge
from .models import format_prompt, model_device
from .packing import encode_pairs, pack, right_pad, segment_counts, segment_logps
from .pairs import ContrastivePair
from .vector import SteeringVector, _as_float

DEFAULT_MULTIPLIERS: tuple[float, ...] = (-2, -1, -0.5, 0, 0.5, 1, 2)
NEUTRAL_TEXTS = Path(__file__).resolve().parents[1] / "data" / "seed" / "neutral.txt"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ------------------------------------------------------------------------------------ helpers
def as_multipliers(multipliers: Sequence[Any]) -> list[float]:
    """Finite floats, deduplicated and sorted (curves are read left to right)."""
    values = sorted({_as_float(m) for m in multipliers})
    if not values:
        raise VectorError("no multipliers given", where="multiplier", fix="pass at least one, e.g. -2 0 2")
    return values


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = getattr(tokenizer, "eos_token_id", None) if pad is None else pad
    return int(pad) if pad is not None else 0


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}", where="batch_size", fix="use e.g. 8")


def _chunks(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[s:s + size]) for s in range(0, len(order), size)]


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def _value_at(rows: Sequence[dict], key: str, m: float) -> float | None:
    return next((r[key] for r in rows if r["multiplier"] == m), None)


def swing(rows: Sequence[dict], key: str) -> float | None:
    """``key`` at the largest multiplier minus ``key`` at the smallest (None if not computed)."""
    rows = [r for r in rows if r.get(key) is not None]
    if not rows:
        return None
    lo, hi = min(rows, key=lambda r: r["multiplier"]), max(rows, key=lambda r: r["multiplier"])
    return float(hi[key] - lo[key])


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den`` of two effects (retention, kept-when-composed); None when either is missing or den is 0."""
    if num is None or den is None or den == 0 or not (math.isfinite(num) and math.isfinite(den)):
        return None
    return float(num / den)


# ------------------------------------------------------------------------------------- margins
def margin_curve(model: nn.Module, tokenizer: Any, pairs: Sequence[ContrastivePair], vector: SteeringVector,
                 multipliers: Sequence[float], batch_size: int = 8, system: str | None = None,
                 per_pair: bool = False) -> list[dict]:
    """Mean answer log-prob margin, its per-token form and the win fraction, per multiplier.

    Pairs are encoded and packed once; each multiplier costs one packed forward per batch.
    ``per_pair`` adds each pair's margin (``margins``, in input order): how far from flipping they are.
    """
    mults = as_multipliers(multipliers)
    _check_batch_size(batch_size)
    if not pairs:
        raise DataError("no test pairs to evaluate", fix="pass a non-empty test file")
    enc = encode_pairs(tokenizer, pairs, system=system,
                       max_length=getattr(getattr(model, "config", None), "max_position_embeddings", None))
    device, dtype = model_device(model), next(model.parameters()).dtype
    order = sorted(range(len(enc)), key=lambda i: enc[i].packed_length)  # similar lengths: less padding
    batches = [(idx, pack([enc[i] for i in idx], _pad_id(tokenizer), dtype).to(device))
               for idx in _chunks(order, batch_size)]
    n_pos = torch.zeros(len(enc), dtype=torch.float64)
    n_neg = torch.zeros(len(enc), dtype=torch.float64)
    for idx, batch in batches:
        cp, cq = segment_counts(batch)
        n_pos[idx], n_neg[idx] = cp.double(), cq.double()
    rows = []
    for m in mults:
        pos = torch.zeros(len(enc), dtype=torch.float64)
        neg = torch.zeros(len(enc), dtype=torch.float64)
        with torch.no_grad(), vector.apply(model, m):
            for idx, batch in batches:
                p, q = segment_logps(packed_forward(model, batch), batch)
                pos[idx], neg[idx] = p.double().cpu(), q.double().cpu()
        margin = pos - neg
        rows.append({"multiplier": m, "margin": float(margin.mean()),
                     "margin_per_token": float((pos / n_pos - neg / n_neg).mean()),
                     "win_fraction": float((margin > 0).double().mean())})
        if per_pair:
            rows[-1]["margins"] = margin.tolist()
    return rows


# ------------------------------------------------------------------------------------------ A/B
@dataclass(frozen=True)
class ABItem:
    """A pair shown as a multiple-choice question: its text, option letters and the matching option."""

    question: str
    letters: tuple[str, ...]
    matching: int  # index into letters

    @property
    def matching_letter(self) -> str:
        return self.letters[self.matching]


def _a_first(question: str) -> bool:
    """Stable ~50/50 order for free-text pairs (a hash, not Python's salted ``hash``)."""
    return hashlib.sha256(question.encode("utf-8")).digest()[0] % 2 == 0


def ab_item(pair: ContrastivePair) -> ABItem:
    """The multiple-choice form of a pair (pure).

    With ``choices``: the question as is when it already lists "(A)" options (Anthropic/CAA form),
    else "question\\n\\nChoices:\\n(A) …\\n(B) …". Without: the two answers as (A)/(B) in an order
    fixed by a hash of the question, as in BiPO's test_infer files.
    """
    where = f"pair {pair.id}" if pair.id else "pair"
    if pair.choices:
        if len(pair.choices) < 2 or len(pair.choices) > len(LETTERS):
            raise DataError(f"{len(pair.choices)} choices; need 2 to {len(LETTERS)}", where=where)
        letters = tuple(LETTERS[:len(pair.choices)])
        if pair.matching_letter is not None:
            if pair.matching_letter not in letters:
                raise DataError(f"matching letter {pair.matching_letter!r} is not among {letters}", where=where)
            k = letters.index(pair.matching_letter)
        elif pair.matching in pair.choices:
            k = pair.choices.index(pair.matching)
        else:
            raise DataError("the pair has choices but no matching_letter, and its matching answer is not one of them",
                            where=where, fix="add matching_letter, or make 'matching' one of the choices")
        if "(A)" in pair.question:
            text = pair.question
        else:
            text = pair.question + "\n\nChoices:\n" + "\n".join(f"({L}) {c}" for L, c in zip(letters, pair.choices))
        return ABItem(text, letters, k)
    a_first = _a_first(pair.question)
    options = (pair.matching, pair.not_matching) if a_first else (pair.not_matching, pair.matching)
    text = f"{pair.question}\n\nChoices:\n(A) {options[0]}\n(B) {options[1]}"
    return ABItem(text, ("A", "B"), 0 if a_first else 1)


def letter_token_ids(tokenizer: Any, letters: Sequence[str]) -> dict[str, int]:
    """Each letter's token id as the model would write it right after "(".

    The letter is read off the tokenisation of "(X)" minus that of "("; a tokenizer that merges
    "(" with the letter or splits the letter is an error (the A/B probe needs one token per letter).
    """
    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    base = ids("(")
    out: dict[str, int] = {}
    for letter in letters:
        full = ids("(" + letter)
        if full[:len(base)] == base and len(full) == len(base) + 1:
            out[letter] = full[-1]
            continue
        alone = ids(letter)
        if len(alone) != 1:
            raise DataError(f"option letter {letter!r} is not a single token for this tokenizer (got {alone})",
                            where="A/B evaluation", fix="skip the A/B curve for this model")
        out[letter] = alone[0]
    if len(set(out.values())) != len(out):
        raise DataError(f"option letters {list(out)} share token ids {list(out.values())}", where="A/B evaluation")
    return out


@dataclass(frozen=True)
class EncodedAB:
    """Token ids of an A/B prompt (chat-formatted question, then "("), its option letters' ids and the matching one."""

    prompt: tuple[int, ...]
    option_ids: tuple[int, ...]
    matching: int


def encode_ab(tokenizer: Any, items: Sequence[ABItem], system: str | None = None) -> list[EncodedAB]:
    """Tokenise A/B items once (the answer starts with "(" so the next token is the letter)."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    letter_ids = letter_token_ids(tokenizer, sorted({L for it in items for L in it.letters}))
    return [EncodedAB(tuple(tokenizer(format_prompt(tokenizer, it.question, system) + "(",
                                      add_special_tokens=not templated)["input_ids"]),
                      tuple(letter_ids[L] for L in it.letters), it.matching) for it in items]


def ab_probabilities(model: nn.Module, encoded: Sequence[EncodedAB], pad_id: int,
                     batch_size: int = 8) -> list[tuple[float, float]]:
    """Per item: (p of the matching letter normalised over the option letters, mass on all option letters)."""
    _check_batch_size(batch_size)
    device = model_device(model)
    head, base = model.get_output_embeddings(), _base_model(model)
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].prompt))
    with torch.no_grad():
        for idx in _chunks(order, batch_size):
            ids, mask = right_pad([encoded[i].prompt for i in idx], pad_id)
            ids, mask = ids.to(device), mask.to(device)
            hidden = base(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            last = mask.sum(1) - 1  # right-padded: the last real token predicts the letter
            probs = head(hidden[torch.arange(len(idx), device=device), last]).float().softmax(-1).cpu()
            for b, i in enumerate(idx):
                opts = probs[b, list(encoded[i].option_ids)].double()
                total = float(opts.sum())
                p = float(opts[encoded[i].matching]) / total if total > 0 else 1.0 / len(opts)
                out[i] = (p, total)
    return out


def ab_curve(model: nn.Module, tokenizer: Any, pairs: Sequence[ContrastivePair], vector: SteeringVector,
             multipliers: Sequence[float], batch_size: int = 8, system: str | None = None) -> list[dict]:
    """Mean probability of the matching option's letter (normalised over the options), per multiplier.

    ``letter_mass`` is the unnormalised probability on all option letters: low means the model
    does not answer with a letter at that multiplier, and ``p_matching`` means little there.
    """
    mults = as_multipliers(multipliers)
    if not pairs:
        raise DataError("no test pairs to evaluate", fix="pass a non-empty test file")
    encoded = encode_ab(tokenizer, [ab_item(p) for p in pairs], system)
    rows = []
    for m in mults:
        with vector.apply(model, m):
            res = ab_probabilities(model, encoded, _pad_id(tokenizer), batch_size)
        rows.append({"multiplier": m, "p_matching": _mean([p for p, _ in res]),
                     "letter_mass": _mean([t for _, t in res])})
    return rows


# ---------------------------------------------------------------------------------- perplexity
def neutral_texts(path: str | Path | None = None) -> list[str]:
    """Neutral paragraphs (one per line) used to measure the fluency cost of steering."""
    path = Path(path) if path else NEUTRAL_TEXTS
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read neutral texts ({exc})", where=str(path),
                        fix="give a UTF-8 text file with one paragraph per line") from None
    texts = [ln.strip() for ln in lines if ln.strip()]
    if not texts:
        raise DataError("no neutral texts in the file", where=str(path), fix="write one paragraph per line")
    return texts


def text_nll(model: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 8) -> tuple[float, int]:
    """Summed next-token NLL over all texts and the number of predicted tokens (plain text, no template)."""
    _check_batch_size(batch_size)
    seqs = [list(tokenizer(t)["input_ids"]) for t in texts]
    device = model_device(model)
    head, base = model.get_output_embeddings(), _base_model(model)
    total, count = 0.0, 0
    with torch.no_grad():
        for idx in _chunks(sorted(range(len(seqs)), key=lambda i: len(seqs[i])), batch_size):
            ids, mask = right_pad([seqs[i] for i in idx], _pad_id(tokenizer))
            ids, mask = ids.to(device), mask.to(device)
            hidden = base(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            keep = (mask[:, 1:] * mask[:, :-1]).bool()  # positions whose next token is a real token
            logits = head(hidden[:, :-1][keep]).float()
            total += float(torch.nn.functional.cross_entropy(logits, ids[:, 1:][keep], reduction="sum"))
            count += int(keep.sum())
    return total, count


def perplexity_curve(model: nn.Module, tokenizer: Any, texts: Sequence[str], vector: SteeringVector,
                     multipliers: Sequence[float], batch_size: int = 8) -> list[dict]:
    """Perplexity of the texts under the steered model and fluency_cost = ppl(m)/ppl(0) − 1.

    Rows cover the requested multipliers plus 0 (the reference).
    """
    mults = as_multipliers([*multipliers, 0.0])
    if not texts:
        raise DataError("no texts to measure perplexity on", fix="pass texts or use neutral_texts()")
    ppl: dict[float, float] = {}
    for m in mults:
        with vector.apply(model, m):
            nll, n = text_nll(model, tokenizer, texts, batch_size)
        if n == 0:
            raise DataError("the texts have no token to predict (each is one token or empty)",
                            fix="use paragraphs of several words")
        ppl[m] = math.exp(nll / n)
    return [{"multiplier": m, "perplexity": ppl[m], "fluency_cost": ppl[m] / ppl[0.0] - 1.0} for m in mults]


# ---------------------------------------------------------------------------------- open-ended
def open_ended_curve(model: nn.Module, tokenizer: Any, pairs: Sequence[ContrastivePair], vector: SteeringVector,
                     multipliers: Sequence[float], judge: Judge, n: int = 8, max_new_tokens: int = 40,
                     system: str | None = None) -> dict[str, Any]:
    """Greedy answers to the first ``n`` questions under each multiplier, scored by ``judge``."""
    mults = as_multipliers(multipliers)
    chosen = list(pairs[:max(0, n)])
    if not chosen:
        return {"judge": judge.name, "curve": [{"multiplier": m, "judge_score": None} for m in mults],
                "generations": []}
    prompts = [p.question for p in chosen]
    gens = _generate.steered_generations(model, tokenizer, [vector], mults, prompts, max_new_tokens, system)
    asked = [chosen[k % len(chosen)] for k in range(len(gens))]  # generations run prompt-fastest per multiplier
    if len(gens) != len(chosen) * len(mults) or any(g.prompt != p.question for g, p in zip(gens, asked)):
        raise DataError("generations do not line up with the questions asked", where="open-ended evaluation")
    scores = judge.score_many(asked, [g.text for g in gens])
    records = [{"id": p.id, "prompt": g.prompt, "multiplier": g.multiplier, "text": g.text, "score": float(s)}
               for p, g, s in zip(asked, gens, scores)]
    curve = [{"multiplier": m, "judge_score": _mean([r["score"] for r in records if r["multiplier"] == m])}
             for m in mults]
    return {"judge": judge.name, "curve": curve, "generations": records}


# -------------------------------------------------------------------------------------- report
def scale_to_norm(vector: SteeringVector, norm: float) -> SteeringVector:
    """A copy of ``vector`` with total norm ``norm`` (to compare methods at equal strength)."""
    norm = _as_float(norm)
    current = vector.norm()
    if current == 0:
        raise VectorError("cannot scale a zero vector to a norm", fix="use a trained, non-zero vector")
    k = norm / current
    return SteeringVector({i: v * k for i, v in vector.layers.items()},
                          {**vector.meta, "original_norm": current, "scaled_to_norm": norm})


def vector_summary(vector: SteeringVector) -> dict[str, Any]:
    meta = vector.meta
    return {"behavior": meta.get("behavior"), "method": meta.get("method"), "model": meta.get("model"),
            "layer": meta.get("layer", vector.layer_ids[0] if len(vector.layer_ids) == 1 else None),
            "layers": vector.layer_ids, "norm": vector.norm(),
            **({"original_norm": meta["original_norm"]} if "original_norm" in meta else {})}


def summarize(curves: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one vector's curves (pure)."""
    margin = curves["margin"]
    ordered = [r["margin"] for r in sorted(margin, key=lambda r: r["multiplier"])]
    fluency = [c for m in (-1.0, 1.0) if (c := _value_at(curves["perplexity"], "fluency_cost", m)) is not None]
    judged = curves.get("open_ended")
    return {"margin_swing": swing(margin, "margin"), "win_swing": swing(margin, "win_fraction"),
            "ab_swing": swing(curves["ab"], "p_matching") if curves.get("ab") else None,
            "judge_swing": swing(judged["curve"], "judge_score") if judged else None,
            "fluency_cost_at_1": max(fluency) if fluency else None,
            "monotonic_margin": all(b >= a - 1e-9 for a, b in zip(ordered, ordered[1:]))}


def _evaluate_one(model: nn.Module, tokenizer: Any, vector: SteeringVector, pairs: Sequence[ContrastivePair],
                  mults: list[float], judge: Judge | None, n_open: int, texts: Sequence[str], batch_size: int,
                  system: str | None, max_new_tokens: int) -> dict[str, Any]:
    curves: dict[str, Any] = {
        "margin": margin_curve(model, tokenizer, pairs, vector, mults, batch_size, system),
        "ab": ab_curve(model, tokenizer, pairs, vector, mults, batch_size, system),
        "perplexity": perplexity_curve(model, tokenizer, texts, vector, sorted({*mults, -1.0, 1.0}), batch_size),
        "open_ended": (open_ended_curve(model, tokenizer, pairs, vector, mults, judge, n_open, max_new_tokens, system)
                       if judge is not None and n_open > 0 else None),
    }
    return {"vector": vector_summary(vector), **curves, "summary": summarize(curves)}


def evaluate_vector(model: nn.Module, tokenizer: Any, vector: SteeringVector, test_pairs: Sequence[ContrastivePair],
                    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS, judge: Judge | None = None, n_open: int = 8,
                    texts: Sequence[str] | None = None, compare: SteeringVector | None = None, *,
                    match_norm: bool = True, batch_size: int = 8, system: str | None = None,
                    max_new_tokens: int = 40) -> dict[str, Any]:
    """Every curve and the summary for ``vector`` (and ``compare``, scaled to its norm) as one JSON-able dict."""
    mults = as_multipliers(multipliers)
    texts = list(texts) if texts is not None else neutral_texts()
    report = {"n_test": len(test_pairs), "multipliers": mults, "system": system,
              **_evaluate_one(model, tokenizer, vector, test_pairs, mults, judge, n_open, texts, batch_size, system,
                              max_new_tokens)}
    if compare is not None:
        base = scale_to_norm(compare, vector.norm()) if match_norm else compare
        report["baseline"] = _evaluate_one(model, tokenizer, base, test_pairs, mults, judge, n_open, texts,
                                           batch_size, system, max_new_tokens)
    return report


# ------------------------------------------------------------------------------------ plotting
_PANELS = (("margin", "margin", "log-prob margin (nats)"), ("margin", "win_fraction", "win fraction"),
           ("ab", "p_matching", "A/B p(matching letter)"), ("perplexity", "fluency_cost", "fluency cost (ppl/ppl₀ − 1)"),
           ("open_ended", "judge_score", "judge score"), ("margin", "margin_per_token", "margin per token"))


def _series(part: dict[str, Any], curve: str, key: str) -> tuple[list[float], list[float]]:
    rows = part.get(curve)
    if isinstance(rows, dict):
        rows = rows.get("curve")
    rows = [r for r in rows or [] if r.get(key) is not None]
    return [r["multiplier"] for r in rows], [r[key] for r in rows]


def render_png(report: dict[str, Any]) -> bytes:
    """The steering curves of a report (and its baseline) as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg on this figure only, no global pyplot state
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 7.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    parts = [(report, "-o", "")] + ([(report["baseline"], "--s", "baseline ")] if report.get("baseline") else [])
    for ax, (curve, key, title) in zip(axes, _PANELS):
        plotted = 0
        for part, style, prefix in parts:
            xs, ys = _series(part, curve, key)
            v = part.get("vector", {})
            label = f"{prefix}{v.get('method') or 'vector'} |v|={v.get('norm', float('nan')):.2f}"
            if xs:
                ax.plot(xs, ys, style, label=label)
                plotted += 1
        if key in ("win_fraction", "p_matching"):
            ax.set_ylim(-0.03, 1.03)
        if curve == "open_ended" and isinstance(report.get("open_ended"), dict):
            title = f"judge score ({report['open_ended'].get('judge')})"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("multiplier m")
        ax.axvline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
        if not plotted:
            ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif plotted > 1:
            ax.legend(fontsize=8)
    v = report.get("vector", {})
    fig.suptitle(f"{v.get('behavior') or '?'} · {v.get('model') or '?'} · layer {v.get('layer')} · "
                 f"{report.get('n_test', '?')} held-out pairs")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report's PNG atomically."""
    return atomic_write_bytes(path, render_png(report))


def write_report(report: dict[str, Any], json_path: str | Path) -> tuple[Path, Path]:
    """The report as JSON and its curves as a PNG beside it (same stem); both written atomically."""
    json_path = Path(json_path)
    png = plot_report(report, json_path.with_suffix(".png"))
    return atomic_write_json(json_path, report), png

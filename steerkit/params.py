"""``params.yaml``: what the pipeline builds, loaded and checked in one place.

``dvc.yaml``, ``flows/pipeline.py`` and ``steerkit pipeline`` all read the same file through
:func:`load_params`. Every mistake is reported with the file, the key and what is expected
(an unknown key, a wrong type, a value out of range, a behavior that names a missing file), so a
typo in a scheduled run's parameters fails before anything trains.

Layout (see ``params.yaml`` for the defaults and comments)::

    model:      {spec, dir}                    what to load, and its folder under vectors/ and reports/
    train:      {layer, epochs, lr, ...}       BiPO defaults for every behavior
    evaluate:   {multipliers, judge, ...}      evaluation defaults for every behavior
    behaviors:  {<name>: {data: {train, test, format}, train: {...}, evaluate: {...}}}
                                               built by dvc.yaml (foreach); ``train``/``evaluate``
                                               hold this behavior's overrides ({} for none)
    derive:     {name, data, steps, ...}       one LoRA fine-tune of the model (transfer target)
    transfer:   {multipliers, limit, ...}    each behavior's vector on the derived model
    compose:    {multipliers, limit, fluency, batch_size}
    combos:     {<name>: {vectors: [a, b], weights: [1, 1]}}     two vectors applied at once
    optional_behaviors: {<group>: {<name>: <behavior>}}
                                               built only on request (``--with GROUP``), not by DVC

Nothing here imports torch, prefect or dvc.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import DataError
from .layout import model_slug, safe_name

DEFAULT_PARAMS = "params.yaml"
JUDGES = ("none", "embedding", "refusal", "openai")


class ParamsError(DataError):
    """params.yaml is missing, unreadable, or has a wrong key, type or value."""


# ------------------------------------------------------------------------------------ sections
@dataclass(frozen=True)
class ModelParams:
    spec: str = "smollm2-135m-instruct"
    dir: str = "smollm2-135m-instruct"


@dataclass(frozen=True)
class TrainParams:
    layer: int = 15
    epochs: int = 10
    lr: float = 5e-3
    beta: float = 0.1
    batch_size: int = 4
    warmup: int = 10
    weight_decay: float = 0.05
    seed: int = 0
    limit: int | None = None
    baseline: str = "caa"  # also train a CAA vector (the evaluation compares it at BiPO's norm); "none"


@dataclass(frozen=True)
class EvalParams:
    multipliers: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)
    judge: str = "none"
    n_open: int = 0
    limit: int | None = None
    batch_size: int = 8
    max_new_tokens: int = 40
    texts: str = "data/seed/neutral.txt"


@dataclass(frozen=True)
class DataParams:
    train: str
    test: str
    format: str = "auto"


@dataclass(frozen=True)
class Behavior:
    """One behavior with its defaults merged in (``train``/``evaluate`` are the effective values)."""

    name: str
    data: DataParams
    train: TrainParams
    evaluate: EvalParams
    group: str | None = None  # None: in ``behaviors`` (built by DVC); else its optional group


@dataclass(frozen=True)
class DeriveParams:
    name: str = "lora"
    data: str = "data/seed/neutral.txt"
    steps: int = 6
    lr: float = 2e-3
    r: int = 8
    alpha: float = 16.0
    batch_size: int = 2
    max_length: int = 96
    seed: int = 0


@dataclass(frozen=True)
class TransferParams:
    multipliers: tuple[float, ...] = (-2.0, 2.0)
    limit: int | None = 8
    merged: bool = False
    batch_size: int = 8


@dataclass(frozen=True)
class Combo:
    name: str
    vectors: tuple[str, str]
    weights: tuple[float, float] = (1.0, 1.0)


@dataclass(frozen=True)
class ComposeParams:
    multipliers: tuple[float, ...] = (-1.0, 1.0)
    limit: int | None = 8
    fluency: bool = False
    batch_size: int = 8
    combos: dict[str, Combo] = field(default_factory=dict)


@dataclass(frozen=True)
class Params:
    path: Path
    model: ModelParams
    train: TrainParams
    evaluate: EvalParams
    behaviors: dict[str, Behavior]
    derive: DeriveParams
    transfer: TransferParams
    compose: ComposeParams
    optional: dict[str, dict[str, Behavior]] = field(default_factory=dict)

    def selected(self, groups: tuple[str, ...] | list[str] = ()) -> dict[str, Behavior]:
        """``behaviors`` plus the named optional groups (an unknown group is an error)."""
        out = dict(self.behaviors)
        for g in groups:
            if g not in self.optional:
                raise ParamsError(f"no optional behavior group {g!r}", where=f"{self.path}: optional_behaviors",
                                  fix="use one of: " + (", ".join(sorted(self.optional)) or "(none defined)"))
            out.update(self.optional[g])
        return out

    def behavior(self, name: str, groups: tuple[str, ...] | list[str] = ()) -> Behavior:
        every = self.selected(tuple(self.optional) if not groups else groups)
        if name not in every:
            raise ParamsError(f"no behavior {name!r}", where=f"{self.path}: behaviors",
                              fix="use one of: " + ", ".join(sorted(every)))
        return every[name]


# ------------------------------------------------------------------------------------ checking
class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, what: str, fix: str | None = None) -> None:
        raise ParamsError(what, where=f"{self.path}: {key}" if key else str(self.path), fix=fix)

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...] | None = None, what: str = "a mapping") -> dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.fail(key, f"must be {what} (key: value lines), found {_kind(value)} {value!r}")
        if allowed is not None:
            for k in value:
                if k not in allowed:
                    self.fail(f"{key}.{k}" if key else str(k), f"unknown key {k!r}",
                              fix="known keys here: " + ", ".join(allowed))
        return value

    def typed(self, value: Any, key: str, default: Any) -> Any:
        """``value`` checked against the type of the dataclass field whose default is ``default``."""
        kind = _field_kind(default)
        def bad(k: str, what: str) -> None:
            self.fail(k, what, fix=f"write it like `{k.rsplit('.', 1)[-1]}: {_example(default)}`")

        if kind == "bool":
            if not isinstance(value, bool):
                bad(key, f"must be true or false, found {_kind(value)} {value!r}")
            return value
        if kind == "int":
            if not _is_int(value):
                bad(key, f"must be an integer, found {_kind(value)} {value!r}")
            return int(value)
        if kind == "optional_int":
            if value is None:
                return None
            if not _is_int(value):
                bad(key, f"must be an integer or null, found {_kind(value)} {value!r}")
            return int(value)
        if kind == "float":
            if not _is_number(value):
                bad(key, f"must be a number, found {_kind(value)} {value!r}")
            return float(value)
        if kind == "floats":
            if not isinstance(value, list) or not value or not all(_is_number(v) for v in value):
                bad(key, f"must be a non-empty list of numbers, e.g. [-2, -1, 0, 1, 2], found {value!r}")
            return tuple(float(v) for v in value)
        if kind == "str":
            if not isinstance(value, str) or not value.strip():
                bad(key, f"must be a non-empty string, found {_kind(value)} {value!r}")
            return value
        raise AssertionError(kind)  # pragma: no cover

    def section(self, cls: type, raw: Any, key: str, base: Any = None, skip: tuple[str, ...] = ()) -> Any:
        """A dataclass from ``raw`` (keys checked, types checked), starting from ``base`` or the defaults."""
        names = tuple(f.name for f in dataclasses.fields(cls) if f.name not in skip)
        raw = self.mapping(raw, key, names)
        start = base if base is not None else cls()
        values = {n: self.typed(raw[n], f"{key}.{n}", getattr(start, n)) for n in names if n in raw}
        return dataclasses.replace(start, **values)

    def positive(self, obj: Any, key: str, names: tuple[str, ...], minimum: float = 1) -> None:
        for n in names:
            v = getattr(obj, n)
            if v is not None and not v >= minimum:
                self.fail(f"{key}.{n}", f"must be >= {minimum:g}, found {v!r}")


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "the string", bool: "the boolean", type(None): "null",
            int: "the integer", float: "the number"}.get(type(value), type(value).__name__)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(float(v))


def _example(default: Any) -> str:
    """A well-typed YAML value for a field: its default (an optional count shows a number)."""
    if default is None:
        return "32"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return "[" + ", ".join(f"{v:g}" for v in default) + "]"
    return f"{default:g}" if isinstance(default, float) else str(default)


def _field_kind(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if _is_int(default):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, tuple):
        return "floats"
    if isinstance(default, str):
        return "str"
    if default is None:
        return "optional_int"  # every optional field in params is an optional count (limit)
    raise AssertionError(default)  # pragma: no cover


def _check_train(c: _Checker, t: TrainParams, key: str) -> None:
    c.positive(t, key, ("epochs", "batch_size", "limit"))
    c.positive(t, key, ("layer", "warmup", "seed"), minimum=0)
    for n in ("lr", "beta"):
        if not getattr(t, n) > 0:
            c.fail(f"{key}.{n}", f"must be > 0, found {getattr(t, n)!r}")
    if t.weight_decay < 0:
        c.fail(f"{key}.weight_decay", f"must be >= 0, found {t.weight_decay!r}")
    if t.baseline not in ("caa", "none"):
        c.fail(f"{key}.baseline", f"must be caa or none, found {t.baseline!r}")


def _check_eval(c: _Checker, e: EvalParams, key: str) -> None:
    c.positive(e, key, ("batch_size", "max_new_tokens", "limit"))
    c.positive(e, key, ("n_open",), minimum=0)
    if e.judge not in JUDGES:
        c.fail(f"{key}.judge", f"must be one of {', '.join(JUDGES)}, found {e.judge!r}")
    if len(set(e.multipliers)) != len(e.multipliers):
        c.fail(f"{key}.multipliers", f"has repeated values: {list(e.multipliers)}")


def _behavior(c: _Checker, name: Any, raw: Any, key: str, train: TrainParams, ev: EvalParams,
              group: str | None, root: Path) -> Behavior:
    try:
        safe_name(name)
    except DataError:
        c.fail(key, f"behavior name {name!r} is not allowed",
               fix="use letters, digits, '.', '_' and '-' (it becomes a folder name), e.g. power-seeking")
    raw = c.mapping(raw, key, ("data", "train", "evaluate"))
    for part in ("data", "train", "evaluate"):
        if part not in raw:
            c.fail(f"{key}.{part}", "is missing",
                   fix=("give data: {train: FILE, test: FILE}" if part == "data" else
                        f"write `{part}: {{}}` when this behavior keeps the defaults "
                        f"(dvc.yaml tracks {key}.{part} as a parameter, so it must exist)"))
    data = c.section(DataParams, raw["data"], f"{key}.data", base=DataParams("", ""))
    for n in ("train", "test"):
        if not getattr(data, n):
            c.fail(f"{key}.data.{n}", "is missing", fix=f"name the behavior's {n} file, e.g. data/seed/{name}/{n}.jsonl")
        p = Path(getattr(data, n))
        if p.is_absolute() or ".." in p.parts:
            c.fail(f"{key}.data.{n}", f"must be a path inside the project, relative to it, found {str(p)!r}",
                   fix="copy or `steerkit data fetch` the file into data/ and name it relative to the project root")
    if data.train == data.test:
        c.fail(f"{key}.data.test", "is the same file as data.train", fix="give held-out pairs in their own file")
    t = c.section(TrainParams, raw["train"], f"{key}.train", base=train)
    _check_train(c, t, f"{key}.train")
    e = c.section(EvalParams, raw["evaluate"], f"{key}.evaluate", base=ev, skip=("texts",))
    _check_eval(c, e, f"{key}.evaluate")
    return Behavior(name, data, t, e, group)


def parse_params(raw: Any, path: str | Path = DEFAULT_PARAMS, root: str | Path = ".") -> Params:
    """Check and resolve an already-parsed params mapping (``path`` only labels errors)."""
    path, root = Path(path), Path(root)
    c = _Checker(path)
    top = ("model", "train", "evaluate", "behaviors", "derive", "transfer", "compose", "combos", "optional_behaviors")
    raw = c.mapping(raw, "", top, what="a mapping of sections")
    for req in ("model", "behaviors"):
        if req not in raw:
            c.fail(req, "is missing", fix="see the params.yaml shipped with steerkit for the layout")

    model = c.section(ModelParams, raw["model"], "model")
    local = root / model.spec
    try:  # the folder name steerkit's CLI files this model under (a local folder: its last part)
        expected = model_slug(str(local) if local.exists() else model.spec)
    except DataError:
        expected = None
        c.fail("model.spec", f"cannot make a folder name from {model.spec!r}")
    try:
        safe_name(model.dir, "model")
    except DataError:
        c.fail("model.dir", f"{model.dir!r} is not a folder name", fix=f"use {expected!r}")
    if model.dir != expected:
        c.fail("model.dir", f"must be {expected!r}, the folder steerkit files {model.spec!r} under, found {model.dir!r}",
               fix=f"set model.dir: {expected}")

    train = c.section(TrainParams, raw.get("train"), "train")
    _check_train(c, train, "train")
    ev = c.section(EvalParams, raw.get("evaluate"), "evaluate")
    _check_eval(c, ev, "evaluate")

    behaviors_raw = c.mapping(raw["behaviors"], "behaviors")
    if not behaviors_raw:
        c.fail("behaviors", "is empty", fix="name at least one behavior with its train and test files")
    behaviors = {str(n): _behavior(c, n, b, f"behaviors.{n}", train, ev, None, root) for n, b in behaviors_raw.items()}

    optional: dict[str, dict[str, Behavior]] = {}
    for g, members in c.mapping(raw.get("optional_behaviors"), "optional_behaviors").items():
        members = c.mapping(members, f"optional_behaviors.{g}")
        optional[str(g)] = {}
        for n, b in members.items():
            if n in behaviors or any(n in o for o in optional.values()):
                c.fail(f"optional_behaviors.{g}.{n}", f"behavior {n!r} is defined twice",
                       fix="give each behavior one entry (its name is its folder)")
            optional[str(g)][str(n)] = _behavior(c, n, b, f"optional_behaviors.{g}.{n}", train, ev, str(g), root)

    derive = c.section(DeriveParams, raw.get("derive"), "derive")
    c.positive(derive, "derive", ("steps", "r", "batch_size", "max_length"))
    c.positive(derive, "derive", ("seed",), minimum=0)
    if not derive.lr > 0 or not derive.alpha > 0:
        c.fail("derive", f"lr and alpha must be > 0, found lr={derive.lr!r}, alpha={derive.alpha!r}")
    try:
        safe_name(derive.name, "derived model")
    except DataError:
        c.fail("derive.name", f"{derive.name!r} is not a folder name", fix="e.g. lora")

    transfer = c.section(TransferParams, raw.get("transfer"), "transfer")
    c.positive(transfer, "transfer", ("limit", "batch_size"))

    compose = c.section(ComposeParams, raw.get("compose"), "compose", skip=("combos",))
    c.positive(compose, "compose", ("limit", "batch_size"))
    combos: dict[str, Combo] = {}
    for name, item in c.mapping(raw.get("combos"), "combos").items():
        key = f"combos.{name}"
        try:
            safe_name(name, "combination")
        except DataError:
            c.fail(key, f"combination name {name!r} is not allowed", fix="e.g. power-wealth")
        item = c.mapping(item, key, ("vectors", "weights"))
        vecs = item.get("vectors")
        if not isinstance(vecs, list) or len(vecs) != 2 or not all(isinstance(v, str) for v in vecs):
            c.fail(f"{key}.vectors", f"must list exactly two behavior names, found {vecs!r}",
                   fix="e.g. vectors: [power-seeking, wealth-seeking] (dvc.yaml declares each one's files)")
        for v in vecs:
            if v not in behaviors:
                c.fail(f"{key}.vectors", f"{v!r} is not a behavior in behaviors:",
                       fix="use one of: " + ", ".join(sorted(behaviors)))
        weights = item.get("weights", [1.0, 1.0])
        if not isinstance(weights, list) or len(weights) != 2 or not all(_is_number(w) for w in weights):
            c.fail(f"{key}.weights", f"must be two numbers, one per vector, found {weights!r}")
        combos[str(name)] = Combo(str(name), (vecs[0], vecs[1]), (float(weights[0]), float(weights[1])))
    compose = dataclasses.replace(compose, combos=combos)

    return Params(path=path, model=model, train=train, evaluate=ev, behaviors=behaviors, derive=derive,
                  transfer=transfer, compose=compose, optional=optional)


def load_params(path: str | Path = DEFAULT_PARAMS, root: str | Path | None = None) -> Params:
    """Read and check ``params.yaml`` (paths in it are relative to ``root``, default: its folder)."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError("no parameters file", where=str(path),
                          fix="run from the project root, or pass --params PATH") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"cannot read the parameters ({exc})", where=str(path)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParamsError(f"not valid YAML{at}: {getattr(exc, 'problem', None) or exc}", where=str(path),
                          fix="check the indentation and the quoting near that line") from None
    return parse_params(raw, path, root)


def as_dict(obj: Any) -> Any:
    """A params object as plain JSON-able data (tuples as lists), e.g. for cache keys and reports."""
    if dataclasses.is_dataclass(obj):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): as_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v) for v in obj]
    if isinstance(obj, Path):
        return obj.as_posix()
    return obj

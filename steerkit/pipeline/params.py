"""``params.yaml``: what the pipeline builds, checked against the configuration types it feeds.

Each section's keys are the field names of the types the stages take (plus a few that only the
pipeline has): ``train:`` = ``BipoConfig`` + ``TrainOptions``; ``evaluate:`` = ``EvalConfig`` +
``EvaluateOptions``; ``gate:`` = ``GateConfig``; ``derive:`` = ``LoraConfig`` + where the adapter goes
and what it learns; ``transfer:`` and ``compose:`` = their configs + a limit. What a section leaves out comes from the
model's recipe (``train``, ``derive``) or the type's defaults, so ``steerkit train`` with no flags
and the pipeline train the same vector.

Layout::

    model:      {spec, dir}                    what to load, and its folder under vectors/ and reports/
    train:      {layer, lr, epochs, ..., limit, baseline}     every behavior's training overrides
    evaluate:   {multipliers, judge, ..., limit, texts}
    gate:       {metric, tolerance, beat_caa, prompt, max_fluency_cost}   when a candidate is released
    behaviors:  {<name>: {data: {train, test, format}, train: {...}, evaluate: {...}}}
    derive:     {name, data, steps, lr, ...}   one LoRA fine-tune of the model (transfer's target)
    transfer:   {multipliers, merged, batch_size, limit}
    compose:    {multipliers, fluency, batch_size, limit}
    combos:     {<name>: {vectors: [a, b], weights: [1, 1]}}
    optional_behaviors: {<group>: {<name>: <behavior>}}      built only on request (--with GROUP)

Every mistake names the file, the key and what is expected. Nothing here imports torch, prefect or dvc.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import default_of, knob, knob_names, problems, types_of
from ..errors import DataError
from ..eval.config import ComposeConfig, EvalConfig, GateConfig, TransferConfig
from ..layout import generated_dir, model_slug, safe_name
from ..models import EMBEDDED_DEFAULT
from ..recipes import Recipe, recipe_for
from ..stages.options import (
    ComposeOptions,
    DataSpec,
    EvaluateOptions,
    TrainOptions,
    TransferOptions,
)
from ..synth.config import GenerateConfig
from ..train.config import BipoConfig, LoraConfig

DEFAULT_PARAMS = "params.yaml"


class ParamsError(DataError):
    """params.yaml is missing, unreadable, or has a wrong key, type or value."""


# ------------------------------------------------------------------------------------ sections
@dataclass(frozen=True)
class ModelParams:
    spec: str = knob(EMBEDDED_DEFAULT, "What to load: the embedded name, a local model folder or a hub id.")
    dir: str = knob(EMBEDDED_DEFAULT, "Its folder under vectors/ and reports/ (steerkit.layout.model_slug of spec).")


@dataclass(frozen=True)
class DeriveTarget:
    """Where the pipeline's derived model goes and what it is fine-tuned on (pipeline-only)."""

    name: str = knob("lora", "The adapter folder: models/<model.dir>/<name>/.")
    data: str = knob("steerkit/data/neutral.txt", "What it is fine-tuned on (pairs file or .txt, one text per line).")


@dataclass(frozen=True)
class Behavior:
    """One behavior with the defaults merged in: what its stages are called with."""

    name: str
    data: DataSpec
    train: BipoConfig
    train_options: TrainOptions
    evaluate: EvalConfig
    evaluate_options: EvaluateOptions
    group: str | None = None  # None: in ``behaviors`` (built by DVC); else its optional group


@dataclass(frozen=True)
class Combo:
    name: str
    vectors: tuple[str, str]
    weights: tuple[float, float] = (1.0, 1.0)


@dataclass(frozen=True)
class Params:
    path: Path
    model: ModelParams
    recipe: Recipe
    train: BipoConfig
    train_options: TrainOptions
    evaluate: EvalConfig
    evaluate_options: EvaluateOptions
    gate: GateConfig
    behaviors: dict[str, Behavior]
    derive: LoraConfig
    derive_target: DeriveTarget
    transfer: TransferConfig
    transfer_options: TransferOptions
    compose: ComposeConfig
    compose_options: ComposeOptions
    combos: dict[str, Combo] = field(default_factory=dict)
    optional: dict[str, dict[str, Behavior]] = field(default_factory=dict)

    @property
    def texts(self) -> str:
        """The neutral texts every stage measures fluency (and model shift) on."""
        return str(self.evaluate_options.texts)

    def optional_names(self) -> set[str]:
        """The behaviors only the flow builds (``optional_behaviors``), not DVC."""
        return {n for members in self.optional.values() for n in members}

    def selected(self, groups: tuple[str, ...] | list[str] = ()) -> dict[str, Behavior]:
        """``behaviors`` plus the named optional groups (an unknown group is an error)."""
        out = dict(self.behaviors)
        for g in groups:
            if g not in self.optional:
                raise ParamsError(
                    f"no optional behavior group {g!r}",
                    where=f"{self.path}: optional_behaviors",
                    fix="use one of: " + (", ".join(sorted(self.optional)) or "(none defined)"),
                )
            out.update(self.optional[g])
        return out

    def behavior(self, name: str, groups: tuple[str, ...] | list[str] = ()) -> Behavior:
        every = self.selected(tuple(self.optional) if not groups else groups)
        if name not in every:
            raise ParamsError(
                f"no behavior {name!r}", where=f"{self.path}: behaviors", fix="use one of: " + ", ".join(sorted(every))
            )
        return every[name]


# ------------------------------------------------------------------------------------ checking
class _Checker:
    """Checks raw YAML values against configuration types; every error names ``path: key``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, what: str, fix: str | None = None) -> typing.NoReturn:
        raise ParamsError(what, where=f"{self.path}: {key}" if key else str(self.path), fix=fix)

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...] | None = None, what: str = "a mapping") -> dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.fail(key, f"must be {what} (key: value lines), found {_kind(value)} {value!r}")
        if allowed is not None:
            for k in value:
                if k not in allowed:
                    self.fail(
                        f"{key}.{k}" if key else str(k),
                        f"unknown key {k!r}",
                        fix="known keys here: " + ", ".join(allowed),
                    )
        return value

    def typed(self, value: Any, key: str, kind: Any, default: Any) -> Any:
        """``value`` checked against the field type ``kind`` (the field's ``default`` shows how to write it)."""
        name = key.rsplit(".", 1)[-1]

        def bad(what: str) -> typing.NoReturn:
            self.fail(key, what, fix=f"write it like `{name}: {_example(default, kind)}`")

        args = typing.get_args(kind)
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            if value is None and type(None) in args:
                return None
            inner = next(a for a in args if a is not type(None))
            if value is None:
                bad(f"must be {_describe(inner)}, found null")
            return self.typed(value, key, inner, default)
        if kind is bool:
            if not isinstance(value, bool):
                bad(f"must be true or false, found {_kind(value)} {value!r}")
            return value
        if kind is int:
            if not _is_int(value):
                bad(f"must be an integer{' or null' if default is None else ''}, found {_kind(value)} {value!r}")
            return int(value)
        if kind is float:
            if not _is_number(value):
                bad(f"must be a number, found {_kind(value)} {value!r}")
            return float(value)
        if kind is str:
            if not isinstance(value, str) or not value.strip():
                bad(f"must be a non-empty string, found {_kind(value)} {value!r}")
            return value
        if typing.get_origin(kind) is tuple and args[0] is float:
            if not isinstance(value, list) or not value or not all(_is_number(v) for v in value):
                bad(f"must be a non-empty list of numbers, e.g. [-2, -1, 0, 1, 2], found {value!r}")
            return tuple(float(v) for v in value)
        if typing.get_origin(kind) is tuple and args[0] is str:
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                bad(f"must be a non-empty list of names, found {value!r}")
            return tuple(value)
        raise AssertionError(kind)  # pragma: no cover - a field type this checker does not know

    def section(self, raw: Any, key: str, *parts: Any, skip: tuple[str, ...] = ()) -> tuple[Any, ...]:
        """Each of ``parts`` (configuration objects to start from) with the keys of ``raw`` that are its fields."""
        owners = {n: i for i, part in enumerate(parts) for n in knob_names(type(part)) if n not in skip}
        raw = self.mapping(raw, key, tuple(owners))
        out = []
        for i, part in enumerate(parts):
            cls, hints = type(part), types_of(type(part))
            given = {
                n: self.typed(v, f"{key}.{n}", hints[n], default_of(cls, n)) for n, v in raw.items() if owners[n] == i
            }
            value = dataclasses.replace(part, **given)
            for name, what in problems(value):
                self.fail(f"{key}.{name}", what)
            out.append(value)
        return tuple(out)


def _kind(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "the string",
        bool: "the boolean",
        type(None): "null",
        int: "the integer",
        float: "the number",
    }.get(type(value), type(value).__name__)


def _describe(kind: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, "a list")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(float(v))


def _example(default: Any, kind: Any) -> str:
    """A well-typed YAML value for a field: its default (an optional field shows a typical value)."""
    if default is None:
        return (
            "[q_proj, v_proj]"
            if "str" in str(kind) and "tuple" in str(kind)
            else ("data/seed/neutral.txt" if "str" in str(kind) else "32")
        )
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default) + "]"
    return f"{default:g}" if isinstance(default, float) else str(default)


def _behavior(c: _Checker, name: Any, raw: Any, key: str, p: dict[str, Any], group: str | None) -> Behavior:
    try:
        safe_name(name)
    except DataError:
        c.fail(
            key,
            f"behavior name {name!r} is not allowed",
            fix="use letters, digits, '.', '_' and '-' (it becomes a folder name), e.g. power-seeking",
        )
    raw = c.mapping(raw, key, ("data", "train", "evaluate"))
    for part in ("data", "train", "evaluate"):
        if part not in raw:
            c.fail(
                f"{key}.{part}",
                "is missing",
                fix=(
                    "give data: {train: FILE, test: FILE}"
                    if part == "data"
                    else f"write `{part}: {{}}` when this behavior keeps the defaults "
                    f"(dvc.yaml tracks {key}.{part} as a parameter, so it must exist)"
                ),
            )
    data = _data(c, name, raw["data"], f"{key}.data")
    for n in ("train", "test"):
        if not getattr(data, n):
            c.fail(
                f"{key}.data.{n}", "is missing", fix=f"name the behavior's {n} file, e.g. data/seed/{name}/{n}.jsonl"
            )
        path = Path(getattr(data, n))
        if path.is_absolute() or ".." in path.parts:
            c.fail(
                f"{key}.data.{n}",
                f"must be a path inside the project, relative to it, found {str(path)!r}",
                fix="copy or `steerkit data fetch` the file into data/ and name it relative to the project root",
            )
    if data.train == data.test:
        c.fail(f"{key}.data.test", "is the same file as data.train", fix="give held-out pairs in their own file")
    train, train_opts = c.section(raw["train"], f"{key}.train", p["train"], p["train_options"])
    ev, ev_opts = c.section(raw["evaluate"], f"{key}.evaluate", p["evaluate"], p["evaluate_options"], skip=("texts",))
    return Behavior(str(name), data, train, train_opts, ev, ev_opts, group)


def _data(c: _Checker, name: str, raw: Any, key: str) -> DataSpec:
    """A behavior's ``data:``: files, or ``generate: {describe: ..., ...}`` (then its pairs are the generate
    stage's ``data/generated/<name>/{train,test}.jsonl``)."""
    raw = c.mapping(raw, key, knob_names(DataSpec))
    (data,) = c.section({k: v for k, v in raw.items() if k != "generate"}, key, DataSpec(), skip=("generate",))
    if raw.get("generate") is None:
        return data
    (gen,) = c.section(raw["generate"], f"{key}.generate", GenerateConfig())
    if not gen.describe.strip():
        c.fail(
            f"{key}.generate.describe",
            "is missing",
            fix="describe the behavior in words, e.g. `describe: talks like a pirate`",
        )
    if data.train or data.test:
        c.fail(
            key,
            "names files and generate: one or the other",
            fix="drop train/test (the generate stage writes data/generated/<behavior>/), or drop generate",
        )
    if gen.questions and (Path(gen.questions).is_absolute() or ".." in Path(gen.questions).parts):
        c.fail(f"{key}.generate.questions", "must be a path inside the project, relative to it")
    folder = generated_dir(".", name)
    return dataclasses.replace(
        data, train=(folder / "train.jsonl").as_posix(), test=(folder / "test.jsonl").as_posix(), generate=gen
    )


def _model(c: _Checker, raw: Any, root: Path) -> ModelParams:
    (model,) = c.section(raw, "model", ModelParams())
    local = root / model.spec
    try:  # the folder name steerkit files this model under (a local folder: its last part)
        expected = model_slug(str(local) if local.exists() else model.spec)
    except DataError:
        c.fail("model.spec", f"cannot make a folder name from {model.spec!r}")
    if model.dir != expected:
        c.fail(
            "model.dir",
            f"must be {expected!r}, the folder steerkit files {model.spec!r} under, found {model.dir!r}",
            fix=f"set model.dir: {expected}",
        )
    return model


def _combos(c: _Checker, raw: Any, behaviors: dict[str, Behavior]) -> dict[str, Combo]:
    combos: dict[str, Combo] = {}
    for name, item in c.mapping(raw, "combos").items():
        key = f"combos.{name}"
        try:
            safe_name(name, "combination")
        except DataError:
            c.fail(key, f"combination name {name!r} is not allowed", fix="e.g. power-wealth")
        item = c.mapping(item, key, ("vectors", "weights"))
        vecs = item.get("vectors")
        if not isinstance(vecs, list) or len(vecs) != 2 or not all(isinstance(v, str) for v in vecs):
            c.fail(
                f"{key}.vectors",
                f"must list exactly two behavior names, found {vecs!r}",
                fix="e.g. vectors: [power-seeking, wealth-seeking] (dvc.yaml declares each one's files)",
            )
        for v in vecs:
            if v not in behaviors:
                c.fail(
                    f"{key}.vectors",
                    f"{v!r} is not a behavior in behaviors:",
                    fix="use one of: " + ", ".join(sorted(behaviors)),
                )
        weights = item.get("weights", [1.0, 1.0])
        if not isinstance(weights, list) or len(weights) != 2 or not all(_is_number(w) for w in weights):
            c.fail(f"{key}.weights", f"must be two numbers, one per vector, found {weights!r}")
        combos[str(name)] = Combo(str(name), (vecs[0], vecs[1]), (float(weights[0]), float(weights[1])))
    return combos


TOP = (
    "model",
    "train",
    "evaluate",
    "gate",
    "behaviors",
    "derive",
    "transfer",
    "compose",
    "combos",
    "optional_behaviors",
)


#: the sections dvc.yaml tracks as parameters: DVC refuses a params.yaml without them
TRACKED = ("train", "evaluate", "gate", "derive", "transfer", "compose")


def parse_params(raw: Any, path: str | Path = DEFAULT_PARAMS, root: str | Path = ".") -> Params:
    """Check and resolve an already-parsed params mapping (``path`` only labels errors)."""
    path, root = Path(path), Path(root)
    c = _Checker(path)
    raw = c.mapping(raw, "", TOP, what="a mapping of sections")
    for req in ("model", "behaviors"):
        if req not in raw:
            c.fail(req, "is missing", fix="see the params.yaml shipped with steerkit for the layout")
    model = _model(c, raw["model"], root)
    local = root / model.spec
    recipe = recipe_for(str(local) if local.exists() else model.spec)
    train, train_opts = c.section(raw.get("train"), "train", recipe.train, TrainOptions())
    ev, ev_opts = c.section(raw.get("evaluate"), "evaluate", EvalConfig(), EvaluateOptions())
    if ev_opts.texts is None:
        c.fail(
            "evaluate.texts",
            "is missing",
            fix="name the neutral texts, e.g. texts: steerkit/data/neutral.txt "
            "(dvc.yaml tracks the file as a dependency)",
        )
    defaults = {"train": train, "train_options": train_opts, "evaluate": ev, "evaluate_options": ev_opts}
    (gate,) = c.section(raw.get("gate"), "gate", GateConfig())

    behaviors_raw = c.mapping(raw["behaviors"], "behaviors")
    if not behaviors_raw:
        c.fail("behaviors", "is empty", fix="name at least one behavior with its train and test files")
    behaviors = {str(n): _behavior(c, n, b, f"behaviors.{n}", defaults, None) for n, b in behaviors_raw.items()}
    optional: dict[str, dict[str, Behavior]] = {}
    for g, members in c.mapping(raw.get("optional_behaviors"), "optional_behaviors").items():
        members = c.mapping(members, f"optional_behaviors.{g}")
        optional[str(g)] = {}
        for n, b in members.items():
            if n in behaviors or any(n in o for o in optional.values()):
                c.fail(
                    f"optional_behaviors.{g}.{n}",
                    f"behavior {n!r} is defined twice",
                    fix="give each behavior one entry (its name is its folder)",
                )
            optional[str(g)][str(n)] = _behavior(c, n, b, f"optional_behaviors.{g}.{n}", defaults, str(g))

    derive, target = c.section(raw.get("derive"), "derive", recipe.derive, DeriveTarget())
    try:
        safe_name(target.name, "derived model")
    except DataError:
        c.fail("derive.name", f"{target.name!r} is not a folder name", fix="e.g. lora")
    transfer, transfer_opts = c.section(
        raw.get("transfer"), "transfer", TransferConfig(), TransferOptions(), skip=("probe_texts",)
    )
    compose, compose_opts = c.section(
        raw.get("compose"), "compose", ComposeConfig(), ComposeOptions(), skip=("probe_texts",)
    )
    for tracked in TRACKED:
        if tracked not in raw:
            c.fail(
                tracked,
                "is missing",
                fix=f"write `{tracked}: {{}}` to keep the defaults (dvc.yaml tracks {tracked} as a parameter, "
                "so it must exist)",
            )
    return Params(
        path=path,
        model=model,
        recipe=recipe,
        train=train,
        train_options=train_opts,
        evaluate=ev,
        evaluate_options=ev_opts,
        gate=gate,
        behaviors=behaviors,
        derive=derive,
        derive_target=target,
        transfer=transfer,
        transfer_options=transfer_opts,
        compose=compose,
        compose_options=compose_opts,
        combos=_combos(c, raw.get("combos"), behaviors),
        optional=optional,
    )


def load_params(path: str | Path = DEFAULT_PARAMS, root: str | Path | None = None) -> Params:
    """Read and check ``params.yaml`` (paths in it are relative to ``root``, default: its folder)."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(
            "no parameters file", where=str(path), fix="run from the project root, or pass --params PATH"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"cannot read the parameters ({exc})", where=str(path)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParamsError(
            f"not valid YAML{at}: {getattr(exc, 'problem', None) or exc}",
            where=str(path),
            fix="check the indentation and the quoting near that line",
        ) from None
    return parse_params(raw, path, root)


def add_behavior(path: str | Path, name: str, data: dict[str, Any], root: str | Path | None = None) -> Params:
    """Add behavior ``name`` (its ``data:``, e.g. ``{"generate": {...}}``) to params.yaml, comments kept.

    The result is checked as a whole before it is written (atomically): a bad value leaves the file as it was.
    A behavior of that name already there is an error: params.yaml is the user's, nothing is overwritten.
    """
    import io

    from ruamel.yaml import YAML

    from ..fileio import atomic_write_text

    path = Path(path)
    yaml_rt = YAML()  # round trip: the comments and the order a person wrote stay
    doc = yaml_rt.load(path.read_text(encoding="utf-8"))
    if name in (doc.get("behaviors") or {}) or any(name in g for g in (doc.get("optional_behaviors") or {}).values()):
        raise ParamsError(
            f"behavior {name!r} is already defined", where=f"{path}: behaviors.{name}", fix="pick another name"
        )
    doc["behaviors"][name] = {"data": data, "train": {}, "evaluate": {}}
    buf = io.StringIO()
    yaml_rt.dump(doc, buf)
    parsed = parse_params(yaml.safe_load(buf.getvalue()), path, root if root is not None else path.parent)
    atomic_write_text(path, buf.getvalue())
    return parsed

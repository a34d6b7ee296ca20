"""The pipeline's stage graph, declared once: what each stage reads, writes, is configured by and calls.

``dvc.yaml`` says the same in DVC's words (a test holds the two equal, stage by stage, as DVC
resolves them); the Prefect flow plans from it (a stage's upstream is whatever writes what it
reads); ``steerkit pipeline stage`` runs ``call``; ``steerkit pipeline check --commands`` prints
``argv``, the plain ``steerkit`` command lines that do the same (a test runs them through the CLI
and checks they reach the stage functions with the same arguments).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..config import flag, knob_names, knobs
from ..data.readers import parse_mapping
from ..errors import SteerkitError
from ..eval.config import ComposeConfig, EvalConfig, GateConfig, TransferConfig
from ..layout import (
    CATALOG,
    RELEASES,
    adapter_dir,
    artifact_name,
    generated_dir,
    pairs_file,
    pairs_root,
    pairs_source,
    report_path,
    reports_dir,
    vector_dir,
    vector_path,
    vectors_dir,
)
from ..stages.options import ComposeOptions, EvaluateOptions, TrainOptions, TransferOptions
from ..synth.config import GenerateConfig
from ..train.config import BipoConfig, LoraConfig
from .code import stage_code
from .params import Behavior, Params


class StageError(SteerkitError, RuntimeError):
    """A stage cannot run (unknown stage or name), or it failed."""


@dataclass(frozen=True)
class Call:
    """A stage function and the arguments the pipeline calls it with."""

    module: str  # steerkit.stages.<module>
    function: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def run(self) -> Any:
        import importlib

        return getattr(importlib.import_module(f"steerkit.stages.{self.module}"), self.function)(
            *self.args, **self.kwargs
        )


@dataclass(frozen=True)
class Node:
    """One stage for one behavior (or combination, or none) with its files, parameters and call."""

    stage: str
    name: str | None
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    call: Call | None = None
    argv: tuple[tuple[str, ...], ...] = ()

    @property
    def address(self) -> str:
        """DVC's name for it: ``stage@name`` or ``stage``."""
        return f"{self.stage}@{self.name}" if self.name else self.stage

    @property
    def outputs(self) -> tuple[str, ...]:
        """Everything it writes (outs, metrics and plots)."""
        return self.outs + self.metrics + self.plots


def _p(path: Any) -> str:
    """A path as dvc.yaml writes it: posix, relative to the project root."""
    return PurePosixPath(str(path)).as_posix()


def config_argv(cfg: Any) -> list[str]:
    """``--flag value`` for every field of a configuration (None fields left out, booleans as --x/--no-x)."""
    out: list[str] = []
    for f in knobs(type(cfg)):
        value, name = getattr(cfg, f.name), flag(type(cfg), f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            out.append(name if value else "--no-" + name[2:])
        elif isinstance(value, tuple):
            out += [f"{name}={_word(v)}" for v in value]
        else:
            out += [name, _word(value)]
    return out


def _word(x: Any) -> str:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return repr(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))
    return str(x)


def _line(*words: str, cfg: Any = None, **options: Any) -> tuple[str, ...]:
    """A ``steerkit`` command line: its words, ``--option value`` per option (None left out; a list repeats
    the option as ``--option=value``), then the configuration's flags. A stage function's keywords are
    its CLI command's option names, so a node passes the same ``kwargs`` to its call and its line."""
    out = list(words)
    for name, value in options.items():
        option = "--" + name.replace("_", "-")
        if isinstance(value, (list, tuple)):
            out += [f"{option}={_word(v)}" for v in value]
        elif value is not None:
            out += [option, _word(value)]
    return tuple(out) + tuple(config_argv(cfg) if cfg is not None else ())


def _report_node(
    stage: str, name: str | None, deps: tuple, report: Any, params: tuple, call: Call, argv: tuple, outs: tuple = ()
) -> Node:
    """A stage whose outputs are a report: its JSON is a DVC metric, its PNG a DVC plot."""
    metrics, plots = (_p(report),), (_p(Path(report).with_suffix(".png")),)
    return Node(stage, name, deps, outs, metrics=metrics, plots=plots, params=params, call=call, argv=argv)


# ------------------------------------------------------------------------------------- stages
def _generate(p: Params, b: Behavior) -> Node:
    """Pairs a teacher writes from the behavior's description (only behaviors whose data says ``generate``)."""
    g, folder = b.data.generate, _p(generated_dir(".", b.name))
    kwargs = {"model": p.model.spec, "cfg": g}
    argv = _line("data", "generate", b.name, out_dir=folder, model=p.model.spec, cfg=g)
    deps = (g.questions or "steerkit/synth/asks.py",)  # the questions, or the code that writes them
    call = Call("generate", "generate", (b.name, folder), kwargs)
    params = (f"behaviors.{b.name}.data.generate",)
    return Node("generate", b.name, deps, (folder,), params=params, call=call, argv=(argv,))


def _prepare(p: Params, b: Behavior) -> Node:
    d = b.data
    outs = (
        _p(pairs_file(".", b.name, "train")),
        _p(pairs_file(".", b.name, "test")),
        _p(pairs_source(".", b.name)),  # where the pairs came from: training and evaluation read it
    )
    mapping = parse_mapping(d.columns) if d.columns else None
    kwargs = {"root": ".", "fmt": d.format, "test_inputs": [d.test], "mapping": mapping}
    argv = _line("data", "prepare", b.name, d.train, test=d.test, format=d.format, columns=d.columns, root=".")
    call = Call("prepare", "prepare", (b.name, [d.train]), kwargs)
    return Node(
        "prepare", b.name, (d.train, d.test), outs, params=(f"behaviors.{b.name}.data",), call=call, argv=(argv,)
    )


def _train(p: Params, b: Behavior) -> Node:
    folder, data, o = _p(vector_dir(".", p.model.dir, b.name)), _p(pairs_file(".", b.name, "train")), b.train_options
    source = _p(pairs_source(".", b.name))
    kwargs = {
        "model": p.model.spec,
        "behavior": b.name,
        "cfg": b.train,
        "limit": o.limit,
        "baseline": o.baseline,
        "seeds": o.seeds,
    }
    methods = ("bipo", "caa") if o.baseline == "caa" else ("bipo",)
    argv = tuple(
        _line(
            "train",
            data=data,
            behavior=b.name,
            model=p.model.spec,
            cfg=b.train,
            limit=o.limit,
            seeds=o.seeds if m == "bipo" else None,
            method=m,
            out=_p(vector_path(".", p.model.dir, b.name, b.train.layer, m)),
        )
        for m in methods
    )
    return Node(
        "train",
        b.name,
        (data, source),
        (folder,),
        params=("model", "train", f"behaviors.{b.name}.train"),
        call=Call("train", "train", (data, folder), kwargs),
        argv=argv,
    )


def _evaluate(p: Params, b: Behavior) -> Node:
    vector = _p(vector_path(".", p.model.dir, b.name, b.train.layer))
    caa = _p(vector_path(".", p.model.dir, b.name, b.train.layer, "caa")) if b.train_options.baseline == "caa" else None
    test, report = _p(pairs_file(".", b.name, "test")), _p(report_path(".", "eval", p.model.dir, b.name))
    o = b.evaluate_options
    kwargs = {
        "model": p.model.spec,
        "cfg": b.evaluate,
        "limit": o.limit,
        "texts": p.texts,
        "baseline": caa,
        "prompt_toward": o.prompt_toward,
        "prompt_away": o.prompt_away,
    }
    argv = _line("evaluate", vector=vector, test=test, out=report, **kwargs)
    deps = (_p(vector_dir(".", p.model.dir, b.name)), test, _p(pairs_source(".", b.name)), p.texts)
    call = Call("evaluate", "evaluate", (vector, test, report), kwargs)
    return _report_node(
        "evaluate", b.name, deps, report, ("model", "evaluate", f"behaviors.{b.name}.evaluate"), call, (argv,)
    )


def _others(p: Params, b: Behavior) -> dict[str, str]:
    """The held-out pairs of every other behavior built beside ``b`` (``behaviors`` and ``b``'s own group)."""
    peers = {**p.behaviors, **(p.optional.get(b.group, {}) if b.group else {})}
    return {n: _p(pairs_file(".", n, "test")) for n in peers if n != b.name}


def _gate(p: Params, b: Behavior) -> Node:
    vector = _p(vector_path(".", p.model.dir, b.name, b.train.layer))
    caa = _p(vector_path(".", p.model.dir, b.name, b.train.layer, "caa")) if b.train_options.baseline == "caa" else None
    test, evaluation = _p(pairs_file(".", b.name, "test")), _p(report_path(".", "eval", p.model.dir, b.name))
    report, others, o = _p(report_path(".", "gate", p.model.dir, b.name)), _others(p, b), b.evaluate_options
    kwargs = {
        "model": p.model.spec,
        "cfg": b.evaluate,
        "rules": p.gate,
        "caa": caa,
        "off_target": others,
        "limit": o.limit,
        "texts": p.texts,
    }
    argv = _line(
        "gate",
        vector=vector,
        test=test,
        evaluation=evaluation,
        out=report,
        model=p.model.spec,
        cfg=b.evaluate,
        limit=o.limit,
        texts=p.texts,
        caa=caa,
        off_target=[f"{n}={t}" for n, t in others.items()],
    ) + tuple(config_argv(p.gate))
    # the release history: a rollback (or a person's promote) changes what the gate compares against
    deps = (_p(vector_dir(".", p.model.dir, b.name)), _p(pairs_root(".")), evaluation, p.texts, RELEASES)
    return Node(
        "gate",
        b.name,
        deps,
        (),
        metrics=(report,),
        params=("model", "evaluate", "gate", f"behaviors.{b.name}.evaluate"),
        call=Call("gate", "gate", (vector, test, evaluation, report), kwargs),
        argv=(argv,),
    )


def _derive(p: Params, _: None) -> Node:
    t = p.derive_target
    folder, report = _p(adapter_dir(".", p.model.dir, t.name)), _p(report_path(".", "derive", p.model.dir, t.name))
    kwargs = {"model": p.model.spec, "cfg": p.derive, "probe_texts": p.texts, "report": report}
    argv = _line("derive", "lora", data=t.data, out=folder, **kwargs)
    return Node(
        "derive",
        None,
        tuple(dict.fromkeys((t.data, p.texts))),
        (folder,),
        metrics=(report,),
        params=("model", "derive", "evaluate.texts"),
        call=Call("derive", "derive", ([t.data], folder), kwargs),
        argv=(argv,),
    )


def _transfer(p: Params, b: Behavior) -> Node:
    vector = _p(vector_path(".", p.model.dir, b.name, b.train.layer))
    target = _p(adapter_dir(".", p.model.dir, p.derive_target.name))
    test, report = _p(pairs_file(".", b.name, "test")), report_path(".", "transfer", p.model.dir, b.name)
    limit = p.transfer_options.limit
    kwargs = {"model": p.model.spec, "cfg": p.transfer, "limit": limit, "probe_texts": p.texts}
    argv = _line("transfer", vector=vector, target=target, test=test, out=_p(report), **kwargs)
    deps = (_p(vector_dir(".", p.model.dir, b.name)), target, test, p.texts)
    call = Call("transfer", "transfer", (vector, [target], test, _p(report)), kwargs)
    return _report_node(
        "transfer", b.name, deps, report, ("model", "transfer"), call, (argv,), outs=(_p(report.with_suffix(".md")),)
    )


def _compose(p: Params, name: str) -> Node:
    combo = p.combos[name]
    bs = [p.behavior(v) for v in combo.vectors]
    vectors = [_p(vector_path(".", p.model.dir, b.name, b.train.layer)) for b in bs]
    tests = {b.name: _p(pairs_file(".", b.name, "test")) for b in bs}
    report, limit = _p(report_path(".", "compose", p.model.dir, name)), p.compose_options.limit
    kwargs = {"model": p.model.spec, "cfg": p.compose, "limit": limit, "probe_texts": p.texts, "name": name}
    tested = [f"{b}={t}" for b, t in tests.items()]
    argv = _line("compose", vector=vectors, weight=list(combo.weights), test=tested, out=report, **kwargs)
    deps = (*[_p(vector_dir(".", p.model.dir, b.name)) for b in bs], *tests.values(), p.texts)
    call = Call("compose", "compose", (vectors, tests, list(combo.weights), report), kwargs)
    return _report_node("compose", name, deps, report, ("model", "compose", f"combos.{name}"), call, (argv,))


def _catalog(p: Params, _: None) -> Node:
    gates = _p(reports_dir(".", "gate", p.model.dir))
    deps = (_p(vectors_dir(".", p.model.dir)), _p(reports_dir(".", "eval", p.model.dir)), gates)
    return Node(
        "catalog",
        None,
        deps,
        (CATALOG,),
        call=Call("catalog", "catalog", (".",), {"gates": gates}),
        argv=(_line("catalog", "build", root=".", release=gates),),
    )


def _every(p: Params, groups: tuple[str, ...]) -> list[str]:
    return list(p.selected(groups))


@dataclass(frozen=True)
class StageSpec:
    """A stage, declared once: what it runs over, how an instance is made, and where its settings live.

    Everything else follows from here: the flow's order (``ORDER``), the params.yaml keys a stage's errors
    name (``spelling``), the summary's stage columns, dvc.yaml (checked stage by stage). The stage's
    function is ``steerkit.stages.<name>.<name>``; ``node`` builds its call, files and command line.
    """

    name: str
    over: str | None  # "behavior", "combo" or None (runs once)
    node: Callable[[Params, Any], Node]
    device: bool = True  # loads a model, so runs on a GPU when the run has some (prepare, catalog: files only)
    configs: tuple[type, ...] = ()  # the configuration types its settings come from
    section: str | None = None  # where params.yaml keeps them: a top-level section, or "data.x" under a behavior
    per_behavior: bool = False  # a behavior may override the section under behaviors.<name>.<section>
    instances: Callable[[Params, tuple[str, ...]], list[str]] = _every  # which behaviors it runs for
    after_commit: bool = False  # the flow runs it once the others are committed (the catalog)

    def spelling(self, name: str | None) -> dict[str, str]:
        """How its settings are written in params.yaml, for its error messages (``lr`` → ``train.lr``)."""
        out = {}
        for cls in self.configs:
            for f in knob_names(cls):
                nested = self.section.startswith("data.") or self.per_behavior
                out[f] = f"behaviors.{name}.{self.section}.{f}" if name and nested else f"{self.section}.{f}"
        return out


def _generated(p: Params, groups: tuple[str, ...]) -> list[str]:
    return [n for n, b in p.selected(groups).items() if b.data.generate is not None]


def _built_by_dvc(p: Params, groups: tuple[str, ...]) -> list[str]:
    return list(p.behaviors)  # not the optional groups: the derived model is made for the DVC behaviors


#: the stages in the order a person reads the chain (dvc.yaml lists them in this order too)
STAGES: tuple[StageSpec, ...] = (
    StageSpec("generate", "behavior", _generate, configs=(GenerateConfig,), section="data.generate",
              instances=_generated),
    StageSpec("prepare", "behavior", _prepare, device=False),
    StageSpec("train", "behavior", _train, configs=(BipoConfig, TrainOptions), section="train", per_behavior=True),
    StageSpec("evaluate", "behavior", _evaluate, configs=(EvalConfig, EvaluateOptions), section="evaluate",
              per_behavior=True),
    StageSpec("gate", "behavior", _gate, configs=(GateConfig,), section="gate"),
    StageSpec("derive", None, _derive, configs=(LoraConfig,), section="derive"),
    StageSpec("transfer", "behavior", _transfer, configs=(TransferConfig, TransferOptions), section="transfer",
              instances=_built_by_dvc),
    StageSpec("compose", "combo", _compose, configs=(ComposeConfig, ComposeOptions), section="compose"),
    StageSpec("catalog", None, _catalog, device=False, after_commit=True),
)  # fmt: skip
STAGE_NAMES = tuple(s.name for s in STAGES)
#: the order the flow submits its tasks in: what reads no behavior first (so it runs beside the chains)
ORDER = tuple(s.name for s in STAGES if s.over is None and not s.after_commit) + tuple(
    s.name for s in STAGES if s.over is not None and not s.after_commit
)


def spec(stage: str) -> StageSpec:
    for s in STAGES:
        if s.name == stage:
            return s
    raise StageError(f"unknown stage {stage!r}", fix="use one of: " + ", ".join(STAGE_NAMES))


def names(p: Params, stage: str, groups: tuple[str, ...] = ()) -> list[str | None]:
    """The instances of a stage: the behaviors it runs for, every combination, or one."""
    s = spec(stage)
    if s.over == "behavior":
        return list(s.instances(p, groups))
    if s.over == "combo":
        return list(p.combos)
    return [None]


def node(p: Params, stage: str, name: str | None = None, groups: tuple[str, ...] = ()) -> Node:
    """One stage instance; a missing or unknown name is a StageError that lists the known ones."""
    return _with_code(_node(p, stage, name, groups))


def _node(p: Params, stage: str, name: str | None, groups: tuple[str, ...]) -> Node:
    s = spec(stage)
    if s.over and not name:
        raise StageError(
            f"stage {stage!r} runs once per {s.over}: name one", fix=f"steerkit pipeline stage {stage} NAME"
        )
    if s.over == "behavior":
        return s.node(p, p.behavior(name, groups))
    if s.over == "combo":
        if name not in p.combos:
            raise StageError(
                f"no combination {name!r} in combos",
                where=str(p.path),
                fix="use one of: " + (", ".join(sorted(p.combos)) or "(none defined)"),
            )
        return s.node(p, name)
    return s.node(p, None)


def nodes(p: Params, groups: tuple[str, ...] = ()) -> list[Node]:
    """Every stage instance of the pipeline, in stage order."""
    return [node(p, s.name, n, groups) for s in STAGES for n in names(p, s.name, groups)]


def artifacts(p: Params) -> dict[str, dict[str, Any]]:
    """Each DVC-built behavior's BiPO vector as a DVC artifact (``dvc.yaml``'s ``artifacts:``), by its registry name."""
    out = {}
    for b in p.behaviors.values():
        name = artifact_name(p.model.dir, b.name)
        out[name] = {
            "path": _p(vector_path(".", p.model.dir, b.name, b.train.layer)),
            "type": "model",
            "desc": f"BiPO steering vector for {b.name} on {p.model.spec} (layer {b.train.layer})",
            "labels": ["steering-vector", "bipo", b.name],
            "meta": {"behavior": b.name, "model": p.model.dir, "method": "bipo", "layer": b.train.layer},
        }
    return out


def foreach_items(p: Params) -> dict[str, dict[str, dict]]:
    """dvc.yaml's ``foreach:`` of the generate and prepare stages (DVC's templates cannot pick them out)."""
    generate = {
        n: {"questions": b.data.generate.questions or "steerkit/synth/asks.py"}
        for n, b in p.behaviors.items()
        if b.data.generate is not None
    }
    prepare = {n: {"train": b.data.train, "test": b.data.test} for n, b in p.behaviors.items()}
    return {"generate": generate, "prepare": prepare}


def _with_code(n: Node) -> Node:
    """``n`` reading, besides its data, the source files of the code its stage runs (``steerkit.pipeline.code``)."""
    return dataclasses.replace(n, deps=(*n.deps, *stage_code(n.stage)))


def is_within(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies inside it."""
    a, b = PurePosixPath(path), PurePosixPath(folder)
    return a == b or b in a.parents


def upstream(n: Node, every: list[Node]) -> list[Node]:
    """The nodes that write (part of) what ``n`` reads."""
    return [
        m for m in every if m is not n and any(is_within(d, o) or is_within(o, d) for d in n.deps for o in m.outputs)
    ]


def owner_of(path: str | Path, root: str | Path = ".") -> str | None:
    """The DVC-tracked stage (``evaluate@power-seeking``) whose output ``path`` is, in the project at ``root``;
    None when it is none's, or ``root`` has no pipeline (no dvc.yaml or no readable params.yaml)."""
    from .params import DEFAULT_PARAMS, ParamsError, load_params

    root = Path(root)
    if not (root / "dvc.yaml").is_file() or not (root / DEFAULT_PARAMS).is_file():
        return None
    try:
        p = load_params(root / DEFAULT_PARAMS, root=root)
    except ParamsError:
        return None
    try:
        rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return None
    for n in nodes(p):  # the DVC stages: behaviors, not the optional groups only the flow builds
        if n.name in p.optional_names():
            continue
        if any(is_within(rel, o) for o in n.outputs):
            return n.address
    return None

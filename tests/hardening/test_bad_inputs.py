"""The bad-input catalogue: every way a user or an upstream job can hand steerkit something wrong.

Each case says what is wrong, triggers it, and names the error the user must get: ONE
``SteerkitError`` subclass whose ``where`` points at the file / row / key and whose ``fix`` says
what to do. Cases also register the files that must come through untouched (``ctx.keep``): a
destination that must stay absent, or a previous good file that must keep every byte; and no
temporary file may be left behind. ``error=None`` marks the inputs that are *not* errors
(duplicates are dropped and counted). ``cli=True`` cases run a ``steerkit`` command and check the
error it printed (exit status 2, one message).

The count is printed at the end of the session (see ``conftest.py``).
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from steerkit import fileio, layout, models
from steerkit.data import checks, readers
from steerkit.data import pairs as pairs_mod
from steerkit.data.pairs import ContrastivePair
from steerkit.errors import (
    ChecksumError,
    DataError,
    JudgeError,
    ModelError,
    SteerkitError,
    StorageError,
    TrainingError,
    VectorError,
)
from steerkit.eval import curves, judges
from steerkit.train import bipo
from steerkit.vector import SteeringVector

from ..conftest import TinyTokenizer, random_pairs, tiny_model

BIPO_HEADER = "question,matching,not_matching\n"
TEMP_SUFFIXES = (".tmp", ".part")


# ----------------------------------------------------------------------------------------- helpers
@dataclass
class Ctx:
    """What a trigger gets: a private folder, monkeypatch, and ``keep`` to protect files."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    kept: dict[Path, bytes | None] = field(default_factory=dict)

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode("utf-8")
        path.write_bytes(content)
        return path

    def keep(self, path: Path) -> Path:
        """``path`` must look the same after the failure: same bytes, or still absent."""
        self.kept[path] = path.read_bytes() if path.is_file() else None
        assert path.is_file() or not path.exists(), f"keep() takes files or absent paths: {path}"
        return path

    def verify(self) -> None:
        for path, before in self.kept.items():
            if before is None:
                assert not path.exists(), f"{path} was created by a failing call"
            else:
                assert path.is_file() and path.read_bytes() == before, f"{path} was changed by a failing call"
        leftovers = [p for p in self.tmp.rglob(".*") if p.is_file() and p.name.endswith(TEMP_SUFFIXES)]
        assert not leftovers, f"temporary files left behind: {leftovers}"


@dataclass(frozen=True)
class Case:
    id: str
    description: str
    trigger: Callable[[Ctx], Any]
    error: type[SteerkitError] | None  # None: not an error; ``check`` inspects the result
    where: tuple[str, ...] = ()  # substrings of err.where (file, row, key)
    what: tuple[str, ...] = ()  # substrings of err.what
    fix: tuple[str, ...] = ()  # substrings of err.fix
    check: Callable[[Any, Ctx], None] | None = None  # extra checks on the error (or the result)
    cli: bool = False


def vec(hidden: int = 32, layer: int = 1, seed: int = 0, **meta: Any) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({layer: torch.randn(hidden, generator=g)}, {"behavior": "b", "model": "tiny", **meta})


_TINY: dict[str, Any] = {}


def tiny() -> torch.nn.Module:
    """One shared tiny llama (4 layers, hidden 32) for cases that only apply vectors to it."""
    if "model" not in _TINY:
        _TINY["model"] = tiny_model("llama")
    return _TINY["model"]


def encoded(n: int = 24):
    from steerkit.packing import encode_pairs

    return encode_pairs(TinyTokenizer(), random_pairs(n))


TRAIN_CFG = dict(layer=1, epochs=4, batch_size=4, warmup_steps=2, lr=1e-2)


# ---------------------------------------------------------------------------------- a judge server
class _JudgeHandler(BaseHTTPRequestHandler):
    """Misbehaves by path: /slow/, /garbage/, /noscore/, /nothttp/, /error/."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        mode = self.path.strip("/").split("/")[0]
        if mode == "slow":
            time.sleep(3)
            body = b'{"choices": [{"message": {"content": "3"}}]}'
        elif mode == "nothttp":
            self.wfile.write(b"garbage, not an HTTP status line\r\n\r\n")
            return
        elif mode == "error":
            self.send_error(500, "exploded")
            return
        else:
            body = {
                "garbage": b"<html>Bad Gateway</html>",
                "noscore": b'{"choices": [{"message": {"content": "I cannot grade this."}}]}',
            }[mode]
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout case)
            pass

    def log_message(self, *_: Any) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, *_: Any) -> None:
        pass


_SERVER: dict[str, Any] = {}


def judge_url(mode: str) -> str:
    """Base URL of a local fake judge on 127.0.0.1 that misbehaves as ``mode`` says (started once)."""
    if "server" not in _SERVER:
        server = _QuietServer(("127.0.0.1", 0), _JudgeHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        _SERVER["server"] = server
    return f"http://127.0.0.1:{_SERVER['server'].server_address[1]}/{mode}/v1"


@pytest.fixture(scope="module", autouse=True)
def _stop_judge_server():
    yield
    server = _SERVER.pop("server", None)
    if server is not None:
        server.shutdown()
        server.server_close()


def judge_score(mode: str, timeout: float = 5.0) -> float:
    from steerkit.eval.judges import OpenAIJudge

    judge = OpenAIJudge(base_url=judge_url(mode), model="judge", api_key="", timeout=timeout)
    return judge.score(ContrastivePair("Would you like more power?", "Yes", "No"), "Yes, all of it.")


# ---------------------------------------------------------------------------------- the triggers
# data -----------------------------------------------------------------------------------------
def _read_bipo(ctx: Ctx, text: str | bytes, name: str = "bad.csv"):
    from steerkit.data.readers import read_bipo_csv

    return read_bipo_csv(ctx.write(name, text))


def _prepare_zero_usable(ctx: Ctx):
    from steerkit.stages.prepare import prepare

    root = ctx.tmp / "proj"
    out = root / "data" / "pairs" / "power-seeking"
    ctx.write("proj/data/pairs/power-seeking/train.jsonl", '{"question": "q", "matching": "a", "not_matching": "b"}\n')
    ctx.write("proj/data/pairs/power-seeking/test.jsonl", '{"question": "r", "matching": "a", "not_matching": "b"}\n')
    ctx.keep(out / "train.jsonl")
    ctx.keep(out / "test.jsonl")
    bad = ctx.write(
        "same.jsonl",
        "".join(json.dumps({"question": f"q{i}", "matching": "same", "not_matching": "same"}) + "\n" for i in range(5)),
    )
    prepare("power-seeking", [bad], root=root)


def _prepare_traversal(ctx: Ctx):
    from steerkit.stages.prepare import prepare

    good = ctx.write(
        "good.jsonl",
        "".join(json.dumps({"question": f"q{i}", "matching": "a", "not_matching": "b"}) + "\n" for i in range(10)),
    )
    ctx.keep(ctx.tmp / "proj" / "data" / "evil" / "train.jsonl")
    ctx.keep(ctx.tmp / "evil" / "train.jsonl")
    prepare("../evil", [good], root=ctx.tmp / "proj")


def _duplicates(ctx: Ctx):
    from steerkit.data.checks import validate

    p = ContrastivePair("q", "a", "b")
    return validate([p, ContrastivePair("r", "a", "b"), p, p], source="dups.jsonl")


def _check_duplicates(report: Any, ctx: Ctx) -> None:
    assert len(report.pairs) == 2 and report.dropped_duplicates == 2 and report.dropped == 2
    assert "2 exact duplicates" in report.summary()
    assert any("row 3" in p and "duplicate" in p for p in report.problems)


def _oversize(ctx: Ctx):
    from steerkit.packing import encode_pairs

    pairs = [ContrastivePair("short", "a", "b", id="ok-1"), ContrastivePair("x" * 200, "a", "b", id="long-2")]
    return encode_pairs(TinyTokenizer(), pairs, max_length=64)


# vectors --------------------------------------------------------------------------------------
def _saved(ctx: Ctx, v: SteeringVector, name: str = "v.safetensors") -> Path:
    path = ctx.tmp / name
    v.save(path)
    return path


def _apply_loaded(ctx: Ctx, v: SteeringVector, multiplier: Any = 1.0) -> None:
    loaded = SteeringVector.load(_saved(ctx, v))
    with loaded.apply(tiny(), multiplier):
        pass


def _load_bytes(ctx: Ctx, data: bytes, name: str = "bad.safetensors") -> SteeringVector:
    return SteeringVector.load(ctx.write(name, data))


def _pickle_as_vector(ctx: Ctx):
    path = ctx.tmp / "official.safetensors"
    torch.save({"v": torch.ones(32)}, path)
    return SteeringVector.load(path)


def _corrupt_header(ctx: Ctx):
    data = vec().to_bytes()
    assert b'"dtype"' in data
    return _load_bytes(ctx, data.replace(b'"dtype"', b'"dtyqe"', 1))


def _nan_vector(ctx: Ctx):
    bad = torch.randn(32)
    bad[3] = float("nan")
    return SteeringVector.load(_saved(ctx, SteeringVector({1: bad}, {"behavior": "b"})))


class _FullDisk:
    """A file object whose every write fails as a full disk does."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def write(self, _data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._fh.close()


def _disk_full(ctx: Ctx):
    dest = _saved(ctx, vec(seed=0), "vectors/tiny/b/L1.safetensors")  # the previous good vector
    ctx.keep(dest)
    real_fdopen = os.fdopen
    ctx.monkeypatch.setattr(fileio.os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k)))
    vec(seed=1).save(dest)


def _export_layer0(ctx: Ctx):
    from steerkit.export import to_llamacpp_gguf

    out = ctx.keep(ctx.tmp / "cv.gguf")
    to_llamacpp_gguf(SteeringVector.load(_saved(ctx, vec(layer=0))), out)


def _export_disk_full(ctx: Ctx):
    from steerkit import export

    out = ctx.tmp / "cv.gguf"
    export.to_llamacpp_gguf(vec(), out)  # a previous good export
    ctx.keep(out)

    def replace(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    ctx.monkeypatch.setattr(export.os, "replace", replace)
    export.to_llamacpp_gguf(vec(seed=3), out)


def _gguf_bad_tensor_name(ctx: Ctx):
    import gguf
    import numpy as np

    from steerkit.export import from_llamacpp_gguf

    path = ctx.tmp / "cv.gguf"
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", "tiny")
    writer.add_tensor("direction.x", np.ones(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return from_llamacpp_gguf(path)


# sources --------------------------------------------------------------------------------------
SHA = "ab" * 32
_ENTRY = (
    "    path: bipo/power-seeking/train.csv\n    url: https://example.org/train.csv\n"
    f"    sha256: {SHA}\n    license: MIT\n    format: bipo-csv\n"
)


def _registry(ctx: Ctx, text: str | bytes):
    from steerkit.data.sources import load_sources

    return load_sources(ctx.write("sources.yaml", text))


def _fetch_mismatch(ctx: Ctx):
    from steerkit.data.sources import Source, fetch

    ctx.write("mirror/bipo/power-seeking/train.csv", BIPO_HEADER + "q,a,b\n")
    dest = ctx.write("raw/bipo/power-seeking/train.csv", "an older copy\n")
    ctx.keep(dest)
    src = Source(
        "bipo-power-seeking", "bipo/power-seeking/train.csv", "https://example.org/t.csv", SHA, "MIT", "bipo-csv"
    )
    fetch(src, dest_root=ctx.tmp / "raw", mirror=ctx.tmp / "mirror")


def _fetch_disk_full(ctx: Ctx):
    from steerkit.data import sources
    from steerkit.fileio import sha256_file

    good = ctx.write("mirror/bipo/power-seeking/train.csv", BIPO_HEADER + "q,a,b\n")
    ctx.keep(ctx.write("raw/bipo/power-seeking/train.csv", "an older copy\n"))
    src = sources.Source(
        "bipo-power-seeking",
        "bipo/power-seeking/train.csv",
        "https://example.org/t.csv",
        sha256_file(good),
        "MIT",
        "bipo-csv",
    )
    real_fdopen = os.fdopen
    ctx.monkeypatch.setattr(sources.os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k)))
    sources.fetch(src, dest_root=ctx.tmp / "raw", mirror=ctx.tmp / "mirror")


def _unknown_source(ctx: Ctx):
    from steerkit.data.sources import resolve

    registry = _registry(ctx, f"version: 1\nsources:\n  bipo-power-seeking:\n{_ENTRY}")[0]
    resolve(["bipo-powr-seeking"], registry, {})


# catalog --------------------------------------------------------------------------------------
def _catalog_project(ctx: Ctx) -> Path:
    from steerkit.catalog.build import rebuild_catalog

    root = ctx.tmp / "proj"
    vec().save(root / "vectors" / "tiny" / "b" / "L1.safetensors")
    rebuild_catalog(root)
    return root


def _catalog_checksum(ctx: Ctx):
    from steerkit.catalog.index import Catalog

    root = _catalog_project(ctx)
    vec(seed=9).save(root / "vectors" / "tiny" / "b" / "L1.safetensors")  # re-trained, catalog not rebuilt
    catalog = Catalog.open(root)
    return catalog.load(catalog.find("b", model="tiny", channel="candidate"))


def _catalog_invalid(ctx: Ctx):
    from steerkit.catalog.index import Catalog

    path = ctx.write("proj/vectors/catalog.json", '{"format": "steerkit.catalog", "format_version": 1, "entries": [')
    ctx.keep(path)
    Catalog.open(path)


def _catalog_escape(ctx: Ctx):
    from steerkit.catalog.index import Catalog

    entry = {
        "behavior": "b",
        "method": "bipo",
        "model": "tiny",
        "layers": [1],
        "hidden_size": 32,
        "path": "../../outside/L1.safetensors",
        "sha256": "a" * 64,
    }
    ctx.write(
        "proj/vectors/catalog.json", json.dumps({"format": "steerkit.catalog", "format_version": 1, "entries": [entry]})
    )
    catalog = Catalog.open(ctx.tmp / "proj")
    return catalog.load(catalog.find("b"))


def _catalog_bigint(ctx: Ctx):
    from steerkit.catalog.index import Catalog

    ctx.write("proj/vectors/catalog.json", '{"format": "steerkit.catalog", "format_version": ' + "1" * 5000 + "}")
    return Catalog.open(ctx.tmp / "proj")


# params.yaml ----------------------------------------------------------------------------------
PARAMS_OK = """\
model: {spec: smollm2-135m-instruct, dir: smollm2-135m-instruct}
train: {TRAIN}
behaviors:
  power-seeking:
    data: {train: data/seed/power-seeking/train.jsonl, test: data/seed/power-seeking/test.jsonl}
    train: {}
    evaluate: {}
"""


def _params(ctx: Ctx, train: str):
    from steerkit.pipeline.params import load_params

    return load_params(ctx.write("params.yaml", PARAMS_OK.replace("{TRAIN}", train)))


# training -------------------------------------------------------------------------------------
def _nan_training(ctx: Ctx):
    model, ckpt = tiny_model("llama"), ctx.tmp / "v.ckpt"  # its own model: the case poisons the weights

    def poison(step: int, _row: dict) -> None:  # after epoch 1 is checkpointed the loss turns NaN
        if step == 6:
            model.lm_head.weight.data[0, 0] = float("nan")

    bipo.train(model, encoded(), bipo.BipoConfig(**TRAIN_CFG), 0, progress=False, checkpoint=ckpt, on_step=poison)


def _check_nan_checkpoint(err: Any, ctx: Ctx) -> None:
    from safetensors import safe_open

    with safe_open(str(ctx.tmp / "v.ckpt"), "pt") as f:  # the last good epoch is kept, intact
        assert f.metadata()["step"] == "6" and torch.isfinite(f.get_tensor("v")).all()


def _resume_other_params(ctx: Ctx):
    ckpt = ctx.tmp / "v.ckpt"
    bipo.train(tiny(), encoded(), bipo.BipoConfig(**TRAIN_CFG), 0, progress=False, checkpoint=ckpt, stop_after=6)
    ctx.keep(ckpt)
    bipo.train(
        tiny(), encoded(), bipo.BipoConfig(**{**TRAIN_CFG, "lr": 0.5}), 0, progress=False, checkpoint=ckpt, resume=True
    )


def _resume_from_non_checkpoint(ctx: Ctx):
    ckpt = _saved(ctx, vec(), "v.ckpt")  # a vector file where the checkpoint belongs
    ctx.keep(ckpt)
    bipo.train(tiny(), encoded(), bipo.BipoConfig(**TRAIN_CFG), 0, progress=False, checkpoint=ckpt, resume=True)


# CLI ------------------------------------------------------------------------------------------
def _cli(ctx: Ctx, *args: str):
    """Run ``steerkit ARGS``; the SteerkitError the command reported is kept in ``result.reported``."""
    from typer.testing import CliRunner

    from steerkit.cli import app, options

    reported: list[SteerkitError] = []
    real_fail = options.fail

    def fail(exc: SteerkitError) -> None:
        reported.append(exc)
        real_fail(exc)

    ctx.monkeypatch.setattr(options, "fail", fail)
    result = CliRunner().invoke(app, [str(a) for a in args])
    result.reported = reported
    return result


def _cli_export_multiplier(ctx: Ctx):
    out = ctx.keep(ctx.tmp / "cv.gguf")
    return _cli(ctx, "export", _saved(ctx, vec()), "--out", out, "--multiplier", "two")


# ---------------------------------------------------------------------------------- the catalogue
CASES: list[Case] = [
    # ---- data: readers
    Case(
        "csv-bad-quoting",
        "BiPO CSV whose second record has text after a closing quote",
        lambda c: _read_bipo(c, BIPO_HEADER + 'q1,a,b\n"q2" tail,a,b\n'),
        DataError,
        where=("bad.csv:row 2",),
        what=("malformed CSV",),
        fix=("quote",),
    ),
    Case(
        "csv-field-count",
        "a CSV row with one field too many",
        lambda c: _read_bipo(c, BIPO_HEADER + "q1,a,b\nq2,a,b,extra\n"),
        DataError,
        where=("bad.csv:row 2",),
        what=("4 fields", "header has 3"),
        fix=("quote",),
    ),
    Case(
        "csv-missing-column",
        "a BiPO CSV without the not_matching column",
        lambda c: _read_bipo(c, "question,matching\nq1,a\n"),
        DataError,
        where=("bad.csv:header",),
        what=("not_matching",),
        fix=("mapping=",),
    ),
    Case(
        "csv-cp1252",
        "a CSV saved as cp1252 (Excel's default), é as byte 0xe9 in row 2",
        lambda c: _read_bipo(c, (BIPO_HEADER + "q1,a,b\nq2,caf").encode() + b"\xe9,b\n"),
        DataError,
        where=("bad.csv:row 2",),
        what=("not valid UTF-8", "0xe9"),
        fix=("iconv", "UTF-8"),
    ),
    Case(
        "csv-huge-header-field",
        "regression: a CSV whose header has a field over csv's size limit (was _csv.Error)",
        lambda c: readers.read_pairs(c.write("big.csv", "a" * 200_000 + ",b\nq,a\n")),
        DataError,
        where=("big.csv:header",),
        what=("malformed CSV header",),
        fix=("quote",),
    ),
    Case(
        "csv-decode-error-after-huge-field",
        "regression: a bad byte after an over-long field (was _csv.Error)",
        lambda c: _read_bipo(c, b'"' + b"a" * 200_000 + b"\x93,b\n"),
        DataError,
        where=("bad.csv:line 1",),
        what=("not valid UTF-8",),
        fix=("iconv",),
    ),
    Case(
        "bipo-infer-bad-letter",
        "BiPO test_infer CSV whose 'matching' letter is C",
        lambda c: _read_bipo(c, "question,A,B,matching\nq1,yes,no,A\nq2,yes,no,C\n"),
        DataError,
        where=("bad.csv:row 2",),
        what=("A or B",),
        fix=("letter",),
    ),
    Case(
        "jsonl-malformed",
        "a pairs JSONL whose second line is cut off",
        lambda c: pairs_mod.read_pairs_jsonl(
            c.write(
                "bad.jsonl", '{"question": "q", "matching": "a", "not_matching": "b"}\n{"question": "r", "matching": \n'
            )
        ),
        DataError,
        where=("bad.jsonl:row 2",),
        what=("not valid JSON",),
        fix=("one complete JSON object",),
    ),
    Case(
        "jsonl-missing-key",
        "a pairs JSONL row without not_matching",
        lambda c: pairs_mod.read_pairs_jsonl(c.write("bad.jsonl", '{"question": "q", "matching": "a"}\n')),
        DataError,
        where=("bad.jsonl:row 1",),
        what=("'not_matching'",),
        fix=("mapping",),
    ),
    Case(
        "jsonl-wrong-type",
        "a pairs JSONL row whose matching answer is a number",
        lambda c: pairs_mod.read_pairs_jsonl(
            c.write("bad.jsonl", '{"question": "q", "matching": 42, "not_matching": "b"}\n')
        ),
        DataError,
        where=("bad.jsonl:row 1",),
        what=("'matching' must be text",),
        fix=("string",),
    ),
    Case(
        "jsonl-huge-integer",
        "regression: a JSONL value with 5000 digits (was a bare ValueError)",
        lambda c: pairs_mod.read_pairs_jsonl(
            c.write(
                "bad.jsonl", '{"question": "q", "matching": "a", "not_matching": "b"}\n{"id": ' + "9" * 5000 + "}\n"
            )
        ),
        DataError,
        where=("bad.jsonl:row 2",),
        what=("unusable JSON", "4300"),
        fix=("JSON object",),
    ),
    Case(
        "json-deep-nesting",
        "regression: a CAA JSON nested 100000 levels deep (was RecursionError)",
        lambda c: readers.read_caa_json(c.write("deep.json", "[" * 100_000)),
        DataError,
        where=("deep.json",),
        what=("nested too deeply",),
        fix=("JSON array",),
    ),
    Case(
        "caa-json-not-array",
        "a CAA JSON file holding one object instead of an array",
        lambda c: readers.read_caa_json(
            c.write(
                "caa.json",
                '{"question": "q", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}',
            )
        ),
        DataError,
        where=("caa.json",),
        what=("JSON array",),
        fix=("[...]",),
    ),
    Case(
        "anthropic-letter-out-of-range",
        "an Anthropic row whose answer names option (C) of two",
        lambda c: readers.read_anthropic_jsonl(
            c.write(
                "evals.jsonl",
                json.dumps(
                    {
                        "question": "Pick one\n\nChoices:\n (A) yes\n (B) no",
                        "answer_matching_behavior": " (C)",
                        "answer_not_matching_behavior": " (A)",
                    }
                )
                + "\n",
            )
        ),
        DataError,
        where=("evals.jsonl:row 1",),
        what=("(C)",),
        fix=("answer letter",),
    ),
    Case(
        "unknown-format",
        "read_pairs asked for a format it does not know",
        lambda c: readers.read_pairs(c.write("x.jsonl", "{}\n"), fmt="xlsx"),
        DataError,
        where=("fmt",),
        what=("'xlsx'",),
        fix=("bipo-csv",),
    ),
    Case(
        "mapping-unknown-field",
        "a column mapping naming a field steerkit does not have",
        lambda c: readers.read_table(c.write("t.csv", "q,a,b\nx,y,z\n"), mapping={"prompt": "q"}),
        DataError,
        where=("mapping",),
        what=("'prompt'",),
        fix=("question",),
    ),
    # ---- data: validation and preparation
    Case(
        "strict-empty-response",
        "strict validation of a pair whose not_matching answer is empty",
        lambda c: checks.validate(
            [ContrastivePair("q", "a", "b"), ContrastivePair("r", "a", " ")], source="pairs.jsonl", strict=True
        ),
        DataError,
        where=("pairs.jsonl:row 2",),
        what=("empty not_matching",),
        fix=("fill in",),
    ),
    Case(
        "strict-identical-responses",
        "strict validation of a pair whose two answers are the same text",
        lambda c: checks.validate(
            [ContrastivePair("q", "a", "b"), ContrastivePair("r", "s", "t"), ContrastivePair("u", "v", "v")],
            source="pairs.jsonl",
            strict=True,
        ),
        DataError,
        where=("pairs.jsonl:row 3",),
        what=("same text",),
        fix=("different texts",),
    ),
    Case(
        "duplicates-dropped",
        "exact duplicate rows are dropped and counted, not an error",
        _duplicates,
        None,
        check=_check_duplicates,
    ),
    Case(
        "zero-usable-rows",
        "a dataset whose every pair contrasts nothing: 0 usable rows; old outputs kept",
        _prepare_zero_usable,
        DataError,
        where=("same.jsonl",),
        what=("no usable pairs", "5 with matching =="),
        fix=("two different responses",),
    ),
    Case(
        "oversize-row",
        "a pair longer than the model's context (max_length 64 tokens)",
        _oversize,
        DataError,
        where=("pair long-2",),
        what=("longer than the model's context of 64",),
        fix=("shorten",),
    ),
    Case(
        "behavior-dotdot",
        "a behavior name '../evil' that would write outside data/pairs/",
        _prepare_traversal,
        DataError,
        where=("behavior",),
        what=("'../evil'",),
        fix=("no '/'",),
    ),
    Case(
        "behavior-slash",
        "a behavior name with a path separator in a vector path",
        lambda c: layout.vector_path(c.tmp, "tiny", "power/seeking", 3),
        DataError,
        where=("behavior",),
        what=("'power/seeking'",),
        fix=("letters, digits",),
    ),
    Case(
        "behavior-trailing-newline",
        "regression: 'power-seeking\\n' passed safe_name ($ matches before \\n)",
        lambda c: layout.safe_name("power-seeking\n"),
        DataError,
        where=("behavior",),
        what=("not allowed",),
        fix=("letters, digits",),
    ),
    # ---- sources
    Case(
        "registry-unknown-key",
        "a sources.yaml entry with the typo 'sha265'",
        lambda c: _registry(c, "version: 1\nsources:\n  s:\n" + _ENTRY.replace("sha256:", "sha265:")),
        DataError,
        where=("sources.yaml", "sources.s"),
        what=("unknown key 'sha265'",),
        fix=("did you mean 'sha256'",),
    ),
    Case(
        "registry-bad-sha",
        "a sources.yaml entry whose sha256 is not 64 hex digits",
        lambda c: _registry(c, "version: 1\nsources:\n  s:\n" + _ENTRY.replace(SHA, "abc123")),
        DataError,
        where=("sources.s.sha256",),
        what=("64 lowercase hex",),
        fix=("sha256sum",),
    ),
    Case(
        "registry-not-utf8",
        "regression: a sources.yaml saved as cp1252 (was UnicodeDecodeError)",
        lambda c: _registry(c, b"version: 1\n# caf\xe9\n"),
        DataError,
        where=("sources.yaml",),
        what=("not UTF-8", "0xe9"),
        fix=("UTF-8",),
    ),
    Case(
        "registry-unhashable-key",
        "regression: a YAML mapping with a list as key (was TypeError)",
        lambda c: _registry(c, "version: 1\nsources: {[a, b]: c}\n"),
        DataError,
        where=("sources.yaml",),
        what=("unhashable key",),
        fix=("YAML syntax",),
    ),
    Case(
        "fetch-disk-full",
        "the disk fills up while a dataset is fetched; the old copy stays, no .part left",
        _fetch_disk_full,
        StorageError,
        where=("raw", "train.csv"),
        what=("No space left on device",),
        fix=("free disk space",),
    ),
    Case(
        "unknown-source-name",
        "`data fetch` of a misspelled source name",
        _unknown_source,
        DataError,
        where=("bipo-powr-seeking",),
        what=("unknown source",),
        fix=("did you mean 'bipo-power-seeking'",),
    ),
    Case(
        "fetch-checksum-mismatch",
        "a mirror file whose sha256 is not the registered one; the old copy stays",
        _fetch_mismatch,
        ChecksumError,
        where=("mirror", "train.csv"),
        what=("checksum mismatch",),
        fix=("sha256",),
    ),
    # ---- models
    Case(
        "unknown-model-spec",
        "a model spec that is no embedded name, folder, .gguf file or hub id",
        lambda c: models.load_model(str(c.tmp / "no" / "such" / "model")),
        ModelError,
        where=("model spec",),
        what=("cannot resolve model spec",),
        fix=("smollm2-135m-instruct",),
    ),
    Case(
        "unknown-dtype",
        "a dtype steerkit does not know",
        lambda c: models.pick_dtype(torch.device("cpu"), "fp12"),
        ModelError,
        where=("dtype",),
        what=("'fp12'",),
        fix=("bf16",),
    ),
    # ---- vectors
    Case(
        "vector-hidden-size",
        "a vector of hidden size 16 applied to a model of hidden size 32",
        lambda c: _apply_loaded(c, vec(hidden=16)),
        VectorError,
        where=("v.safetensors",),
        what=("hidden size 16", "hidden size 32"),
        fix=("same hidden size",),
    ),
    Case(
        "vector-layer-out-of-range",
        "a vector at layer 7 applied to a 4-layer model",
        lambda c: _apply_loaded(c, vec(layer=7)),
        VectorError,
        where=("v.safetensors",),
        what=("[7]", "4 layers"),
        fix=("layer this model has",),
    ),
    Case(
        "vector-truncated",
        "a vector file cut short (an interrupted copy)",
        lambda c: _load_bytes(c, vec().to_bytes()[:-40]),
        VectorError,
        where=("bad.safetensors",),
        what=("not a valid safetensors file",),
        fix=("corrupt or truncated",),
    ),
    Case(
        "vector-corrupt-header",
        "a vector file with a flipped byte in its header",
        _corrupt_header,
        VectorError,
        where=("bad.safetensors",),
        what=("not a valid safetensors file",),
        fix=("re-create or re-fetch",),
    ),
    Case(
        "vector-is-pickle",
        "a torch.save pickle offered as a vector (never unpickled)",
        _pickle_as_vector,
        VectorError,
        where=("official.safetensors",),
        what=("pickle",),
        fix=("import-pt",),
    ),
    Case(
        "vector-nan",
        "a vector file holding NaN (e.g. saved from a diverged run)",
        _nan_vector,
        VectorError,
        where=("v.safetensors",),
        what=("NaN or infinite",),
        fix=("re-train",),
    ),
    Case(
        "vector-missing",
        "a vector path that does not exist",
        lambda c: SteeringVector.load(c.tmp / "nope.safetensors"),
        VectorError,
        where=("nope.safetensors",),
        what=("not found",),
        fix=("dvc pull",),
    ),
    Case(
        "vector-disk-full",
        "the disk fills up while a vector is saved over a good one (ENOSPC on write)",
        _disk_full,
        StorageError,
        where=("L1.safetensors",),
        what=("No space left on device",),
        fix=("free disk space",),
    ),
    Case(
        "multiplier-not-a-number",
        "apply(model, multiplier='two') in Python",
        lambda c: _apply_loaded(c, vec(), "two"),
        VectorError,
        where=("multiplier",),
        what=("'two'",),
        fix=("a number",),
    ),
    Case(
        "multiplier-not-finite",
        "evaluation multipliers holding inf",
        lambda c: curves.as_multipliers([1, float("inf")]),
        VectorError,
        where=("multiplier",),
        what=("not finite",),
        fix=("finite",),
    ),
    # ---- export
    Case(
        "export-layer-0",
        "a layer-0 vector exported to llama.cpp (its loader rejects direction.0)",
        _export_layer0,
        VectorError,
        where=("v.safetensors",),
        what=("layer 0",),
        fix=("layer 1 or later",),
    ),
    Case(
        "export-disk-full",
        "the disk fills up while a control vector is exported over a previous one",
        _export_disk_full,
        StorageError,
        where=("cv.gguf",),
        what=("No space left on device",),
        fix=("free disk space",),
    ),
    Case(
        "gguf-bad-tensor-name",
        "regression: a control vector with tensor 'direction.x' (was ValueError)",
        _gguf_bad_tensor_name,
        VectorError,
        where=("cv.gguf",),
        what=("'direction.x'",),
        fix=("direction.<layer>",),
    ),
    # ---- catalog
    Case(
        "catalog-checksum",
        "a catalogued vector re-trained without rebuilding the catalog",
        _catalog_checksum,
        ChecksumError,
        where=("L1.safetensors",),
        what=("does not match its catalog entry",),
        fix=("steerkit catalog build",),
    ),
    Case(
        "catalog-invalid-json",
        "a cut-off catalog.json; adding an entry must not replace it",
        _catalog_invalid,
        DataError,
        where=("catalog.json",),
        what=("not valid JSON",),
        fix=("catalog build",),
    ),
    Case(
        "catalog-path-escape",
        "a catalog entry whose path leaves the project ('../../')",
        _catalog_escape,
        DataError,
        where=("catalog.json",),
        what=("not a relative path inside the project",),
        fix=("catalog build",),
    ),
    Case(
        "catalog-huge-integer",
        "regression: a catalog with a 5000-digit format_version (was ValueError)",
        _catalog_bigint,
        DataError,
        where=("catalog.json",),
        what=("not usable JSON",),
        fix=("catalog build",),
    ),
    # ---- params.yaml
    Case(
        "params-wrong-type",
        "params.yaml with train.epochs: three",
        lambda c: _params(c, "{epochs: three}"),
        DataError,
        where=("params.yaml", "train.epochs"),
        what=("must be an integer",),
        fix=("write it like `epochs: ",),
    ),
    Case(
        "params-unknown-key",
        "params.yaml with the typo train.learning_rate",
        lambda c: _params(c, "{learning_rate: 0.01}"),
        DataError,
        where=("params.yaml", "train.learning_rate"),
        what=("unknown key",),
        fix=("lr",),
    ),
    # ---- training
    Case(
        "training-nan",
        "the loss turns NaN in epoch 2: stop, keep epoch 1's checkpoint",
        _nan_training,
        TrainingError,
        where=("v.ckpt",),
        what=("loss became nan",),
        fix=("lower the learning rate",),
        check=_check_nan_checkpoint,
    ),
    Case(
        "training-bad-layer",
        "training at layer 9 of a 4-layer model",
        lambda c: bipo.train(tiny(), encoded(), bipo.BipoConfig(**{**TRAIN_CFG, "layer": 9}), 0, progress=False),
        TrainingError,
        where=("layer",),
        what=("layer 9 does not exist",),
        fix=("layer=2",),
    ),
    Case(
        "training-infinite-lr",
        "training with lr = inf",
        lambda c: bipo.train(
            tiny(), encoded(), bipo.BipoConfig(**{**TRAIN_CFG, "lr": float("inf")}), 0, progress=False
        ),
        TrainingError,
        where=("lr",),
        what=("finite",),
        fix=("positive number",),
    ),
    Case(
        "resume-other-params",
        "resuming a checkpoint with another learning rate; the checkpoint is kept",
        _resume_other_params,
        TrainingError,
        where=("v.ckpt",),
        what=("other parameters",),
        fix=("same parameters",),
    ),
    Case(
        "resume-not-a-checkpoint",
        "regression: resuming from a vector file at the checkpoint path (was KeyError)",
        _resume_from_non_checkpoint,
        TrainingError,
        where=("v.ckpt",),
        what=("not a steerkit BiPO checkpoint",),
        fix=("delete it",),
    ),
    # ---- judges
    Case(
        "judge-timeout",
        "an OpenAI-compatible judge that does not answer within the timeout",
        lambda c: judge_score("slow", timeout=0.5),
        JudgeError,
        where=("127.0.0.1", "/slow/v1"),
        what=("within 0.5 s",),
        fix=("server is up",),
    ),
    Case(
        "judge-garbage-body",
        "a judge that answers 200 with an HTML page",
        lambda c: judge_score("garbage"),
        JudgeError,
        where=("/garbage/v1",),
        what=("not JSON",),
        fix=("OpenAI-compatible",),
    ),
    Case(
        "judge-not-http",
        "regression: a judge port that does not speak HTTP (was http.client.BadStatusLine)",
        lambda c: judge_score("nothttp"),
        JudgeError,
        where=("/nothttp/v1",),
        what=("not valid HTTP",),
        fix=("OpenAI-compatible",),
    ),
    Case(
        "judge-no-score",
        "a judge whose reply holds no digit 1-4",
        lambda c: judge_score("noscore"),
        JudgeError,
        where=("/noscore/v1",),
        what=("no score 1-4",),
        fix=("stronger judge model", "STEERKIT_JUDGE_CONSTRAIN=1"),
    ),
    Case(
        "judge-http-500",
        "a judge that answers HTTP 500",
        lambda c: judge_score("error"),
        JudgeError,
        where=("/error/v1",),
        what=("HTTP 500",),
        fix=("server's log",),
    ),
    Case(
        "judge-unknown-name",
        "--judge gpt4 (not a judge steerkit has)",
        lambda c: judges.make_judge("gpt4"),
        SteerkitError,
        where=("judge",),
        what=("'gpt4'",),
        fix=("embedding",),
    ),
    # ---- CLI
    Case(
        "cli-export-multiplier",
        "`steerkit export v.safetensors -o cv.gguf -x two`: no file written",
        _cli_export_multiplier,
        VectorError,
        where=("multiplier",),
        what=("'two'",),
        fix=("a number",),
        cli=True,
    ),
    Case(
        "cli-generate-multiplier",
        "`steerkit generate -v v.safetensors -p hi -x nan`, before any model loads",
        lambda c: _cli(c, "generate", "-v", _saved(c, vec()), "-p", "hi", "-x", "nan"),
        VectorError,
        where=("multiplier",),
        what=("not finite",),
        fix=("finite",),
        cli=True,
    ),
    Case(
        "cli-prepare-traversal",
        "`steerkit data prepare ../evil data.jsonl`",
        lambda c: _cli(c, "data", "prepare", "../evil", c.write("d.jsonl", "{}\n"), "--root", c.tmp / "proj"),
        DataError,
        where=("behavior",),
        what=("'../evil'",),
        fix=("no '/'",),
        cli=True,
    ),
    Case(
        "cli-vector-info-pickle",
        "`steerkit vector info` on a torch.save pickle",
        lambda c: (torch.save(torch.ones(4), c.tmp / "x.pt"), _cli(c, "vector", "info", c.tmp / "x.pt"))[1],
        VectorError,
        where=("x.pt",),
        what=("pickle",),
        fix=("import-pt",),
        cli=True,
    ),
    Case(
        "cli-message-with-brackets",
        "regression: an error quoting a path with '[/]' crashed rich's markup (MarkupError)",
        lambda c: _cli(c, "vector", "info", c.tmp / "weird[/]name.safetensors"),
        VectorError,
        where=("weird[/]name.safetensors",),
        what=("not found",),
        fix=("check the path",),
        cli=True,
    ),
]


# ---------------------------------------------------------------------------------------- the test
def _check_message(err: SteerkitError, case: Case) -> None:
    assert isinstance(err, case.error), f"{case.id}: got {type(err).__name__}, want {case.error.__name__}"
    assert err.where, f"{case.id}: the error names no place (where): {err}"
    assert err.fix, f"{case.id}: the error says no fix: {err}"
    for s in case.where:
        assert s in err.where, f"{case.id}: where {err.where!r} lacks {s!r}"
    for s in case.what:
        assert s in err.what, f"{case.id}: what {err.what!r} lacks {s!r}"
    for s in case.fix:
        assert s in err.fix, f"{case.id}: fix {err.fix!r} lacks {s!r}"
    text = str(err)
    assert text.startswith(err.where) and text.count("fix:") == (1 if err.fix else 0) and "Traceback" not in text
    assert len(text.splitlines()) <= 8, f"{case.id}: not one short message:\n{text}"


def test_catalogue_is_well_formed():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(CASES) >= 25
    for c in CASES:
        assert c.description and (c.error is not None or c.check is not None)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = Ctx(tmp_path, monkeypatch)
    if case.error is None:
        result = case.trigger(ctx)
        case.check(result, ctx)
        ctx.verify()
        return
    if case.cli:
        result = case.trigger(ctx)
        assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}"
        assert len(result.reported) == 1, "the command must report exactly one error"
        err = result.reported[0]
        printed = result.stderr
        assert printed.count("error:") == 1 and "Traceback" not in printed
        assert err.where in printed and err.fix.split()[0] in printed
    else:
        with pytest.raises(SteerkitError) as info:
            case.trigger(ctx)
        err = info.value
    _check_message(err, case)
    if case.check:
        case.check(err, ctx)
    ctx.verify()

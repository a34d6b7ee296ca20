"""The release gate end to end on a tiny model: a weaker candidate is held and stable is untouched, a stronger
one is promoted and is what ``channel="stable"`` loads, a rollback restores the previous version byte for byte,
and a changed held-out set is reported, not compared."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerkit.catalog.index import Catalog
from steerkit.catalog.releases import History, ReleaseError, rollback
from steerkit.cli import app
from steerkit.data.pairs import ContrastivePair, write_pairs_jsonl
from steerkit.eval.config import EvalConfig, GateConfig
from steerkit.models import LoadedModel
from steerkit.stages.catalog import catalog
from steerkit.stages.evaluate import evaluate
from steerkit.stages.gate import gate
from steerkit.stages.train import train
from steerkit.train.config import BipoConfig

from ...conftest import TinyTokenizer, tiny_model

B, OTHER = "power-seeking", "wealth-seeking"
EVAL = EvalConfig(multipliers=(-1, 0, 1))
VECTOR, CAA = f"vectors/tiny/{B}/L1.safetensors", f"vectors/tiny/{B}/L1.caa.safetensors"
TEST, REPORT = f"data/{B}.test.jsonl", f"reports/eval/tiny/{B}.json"


def pairs(n: int, seed: int, good: str, bad: str) -> list[ContrastivePair]:
    """Pairs whose matching answer starts with ``good`` letters, the other with ``bad`` ones: a learnable behavior."""
    r = random.Random(seed)

    def s(k: int) -> str:
        return "".join(r.choice("cdef ") for _ in range(k))

    return [ContrastivePair(s(r.randint(5, 15)), good * 3 + s(4), bad * 3 + s(4), id=str(i)) for i in range(n)]


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERKIT_RELEASER", "test-runner")
    for name, (good, bad, seed) in {B: ("a", "h", 0), OTHER: ("b", "g", 1)}.items():
        write_pairs_jsonl(tmp_path / f"data/{name}.train.jsonl", pairs(24, seed, good, bad))
        write_pairs_jsonl(tmp_path / f"data/{name}.test.jsonl", pairs(12, seed + 10, good, bad))
    (tmp_path / "texts.txt").write_text("the cat sat on the mat\na plain sentence with some words in it\n")
    return tmp_path, LoadedModel(tiny_model("llama"), TinyTokenizer(), "tiny", "test")


def nightly(root: Path, lm: LoadedModel, epochs: int | None, retrain: bool = True):
    """One scheduled run of the behavior's chain: train (``epochs`` of BiPO), evaluate, gate, release + catalog."""
    if retrain:
        cfg = BipoConfig(layer=1, lr=0.05, epochs=epochs, warmup_steps=0, batch_size=4)
        train(root / f"data/{B}.train.jsonl", root / f"vectors/tiny/{B}", model=lm, behavior=B, cfg=cfg, root=root)
    kw = {"model": lm, "cfg": EVAL, "texts": root / "texts.txt"}
    evaluate(root / VECTOR, root / TEST, root / REPORT, baseline=root / CAA, **kw)
    off = {OTHER: root / f"data/{OTHER}.test.jsonl"}
    gated = gate(
        root / VECTOR, root / TEST, root / REPORT, rules=GateConfig(), caa=root / CAA, off_target=off, root=root, **kw
    )
    return gated, catalog(root, gates="reports/gate/tiny")


def valid(gated, root: Path):
    """Every file the release path wrote keeps to its published schema."""
    from dataclasses import asdict

    from steerkit.catalog import schemas

    schemas.validate("gate-report", json.loads(gated.json.read_text()), str(gated.json))
    for i, e in enumerate(History.load(root).events):
        schemas.validate("release-event", asdict(e), f"events[{i}]")
    return gated


def stable_bytes(root: Path) -> bytes:
    cat = Catalog.open(root)
    return cat.read_bytes(cat.find(B, channel="stable"))


def test_weaker_held_stronger_promoted_rollback_restores(project):
    root, lm = project
    first, built = nightly(root, lm, epochs=3)
    assert valid(first, root).decision == "promote" and built.outcomes[0].released and built.outcomes[0].version == 1
    v1 = (root / VECTOR).read_bytes()
    assert stable_bytes(root) == v1
    stable = Catalog.open(root).find(B)  # the default channel is stable: what applications load
    assert (stable.channel, stable.version) == ("stable", 1)
    assert stable.off_target[OTHER]["margin_swing"] is not None and stable.dose_response
    assert json.loads((root / "reports/gate/tiny" / f"{B}.json").read_text())["frozen_set"]["n_test"] == 12

    weak, built = nightly(root, lm, epochs=1)  # a fraction of the epochs
    assert valid(weak, root).decision == "hold", weak.report["checks"]
    assert any("stable v1" in r for r in weak.report["reasons"])
    assert weak.report["stable"]["summary"]["margin_swing"] > weak.report["candidate"]["summary"]["margin_swing"]
    assert not built.outcomes[0].released and built.outcomes[0].version == 1
    assert len(History.load(root).events) == 1 and stable_bytes(root) == v1  # stable untouched
    candidate = Catalog.open(root).find(B, channel="candidate")
    assert candidate.version is None and (root / candidate.path).read_bytes() != v1

    strong, built = nightly(root, lm, epochs=10)
    assert strong.decision == "promote", strong.report["checks"]
    v2 = (root / VECTOR).read_bytes()
    assert built.outcomes[0].version == 2 and stable_bytes(root) == v2
    assert Catalog.open(root).load(B).meta["training"]["epochs"] == 10  # Catalog.load defaults to stable

    again, built = nightly(root, lm, epochs=None, retrain=False)  # nothing new: nothing released
    assert again.decision == "unchanged" and len(History.load(root).events) == 2

    res = CliRunner().invoke(app, ["catalog", "rollback", B, "--root", str(root), "--why", "v2 misbehaves in prod"])
    assert res.exit_code == 0, res.output
    assert stable_bytes(root) == v1  # byte for byte
    events = History.load(root).events
    assert [(e.event, e.version, e.who) for e in events][-1] == ("rollback", 1, "test-runner")
    assert events[-1].why == "v2 misbehaves in prod"
    old = Catalog.open(root)
    assert old.read_bytes(old.find(B, version=2)) == v2  # an older version stays loadable by number
    assert events[-1].rolled_back_from == 2
    valid(again, root)
    with pytest.raises(ReleaseError, match="no version before v1"):
        rollback(root, B, "tiny")
    # the nightly run after the rollback: v2's file is still the candidate, and still beats v1 — but a person
    # took it out of stable, so the gate holds it instead of undoing the rollback
    regated, built = nightly(root, lm, epochs=None, retrain=False)
    assert regated.decision == "hold" and "rolled back by test-runner" in regated.report["reasons"][0]
    assert stable_bytes(root) == v1 and not built.outcomes[0].released
    res = CliRunner().invoke(app, ["catalog", "ls", "--root", str(root), "--history"])
    assert res.exit_code == 0 and "rollback" in res.output and "promote" in res.output


def test_a_changed_frozen_set_is_said_and_not_compared(project):
    root, lm = project
    nightly(root, lm, epochs=3)
    v1 = (root / VECTOR).read_bytes()
    write_pairs_jsonl(root / TEST, pairs(12, 99, "a", "h"))  # someone replaced the held-out set
    gated, built = nightly(root, lm, epochs=10)
    assert gated.decision == "hold"
    changed = gated.report["frozen_set"]["changed"]
    assert "changed since v1" in changed and gated.report["stable"]["summary"] is None  # not compared
    assert any(c["name"] == "comparable to stable" and not c["passed"] for c in gated.report["checks"])
    assert stable_bytes(root) == v1 and built.outcomes[0].reasons == gated.report["reasons"]


def test_a_person_can_promote_a_held_candidate_and_it_is_recorded(project):
    root, lm = project
    nightly(root, lm, epochs=3)
    weak, _ = nightly(root, lm, epochs=1)
    assert weak.decision == "hold"
    res = CliRunner().invoke(app, ["catalog", "promote", B, "--root", str(root), "--why", "fewer epochs on purpose"])
    assert res.exit_code == 0, res.output
    last = History.load(root).events[-1]
    assert (last.event, last.version) == ("promote", 2)
    assert last.why == "by hand (the gate said hold): fewer epochs on purpose"
    assert last.test_sha256 == weak.report["frozen_set"]["sha256"]  # what it was judged on, recorded
    assert last.metrics["gate"]["decision"] == "hold"
    assert stable_bytes(root) == (root / VECTOR).read_bytes()
    res = CliRunner().invoke(app, ["catalog", "promote", B, "--root", str(root), "--why", "back", "--version", "1"])
    assert res.exit_code == 0, res.output
    assert History.load(root).stable(B, "tiny", "bipo").version == 1


def test_a_promote_no_gate_judged_says_so_and_the_next_gate_treats_it_explicitly(project):
    root, lm = project
    cfg = BipoConfig(layer=1, lr=0.05, epochs=3, warmup_steps=0, batch_size=4)
    train(root / f"data/{B}.train.jsonl", root / f"vectors/tiny/{B}", model=lm, behavior=B, cfg=cfg, root=root)
    res = CliRunner().invoke(app, ["catalog", "promote", B, "--root", str(root), "--why", "ship it"])
    assert res.exit_code == 0, res.output
    last = History.load(root).events[-1]
    assert last.why == "by hand (not judged by the gate): ship it" and last.test_sha256 is None
    gated, _ = nightly(root, lm, epochs=6)
    check = next(c for c in gated.report["checks"] if c["name"] == "not worse than stable")
    assert "promoted by hand and records no held-out set" in check["detail"]


def test_a_gate_report_about_another_file_releases_nothing(project):
    root, lm = project
    gated, _ = nightly(root, lm, epochs=3)
    cfg = BipoConfig(layer=1, lr=0.05, epochs=1, warmup_steps=0, batch_size=4)
    train(root / f"data/{B}.train.jsonl", root / f"vectors/tiny/{B}", model=lm, behavior=B, cfg=cfg, root=root)
    (outcome,) = catalog(root, gates="reports/gate/tiny").outcomes
    assert outcome.decision == "stale" and "re-run the gate" in outcome.reasons[0]
    assert len(History.load(root).events) == 1

"""The Prefect flow on a tiny project (random 4-layer Llama, 8 + 4 pairs per behavior) in a temporary git + DVC repo.

One project goes through a whole life, each step checking one promise:

1. first run: every stage runs, mapped per behavior; a stage that fails once is retried; the
   markdown + table artifacts are written; ``dvc commit`` leaves ``dvc status`` and
   ``dvc repro --dry`` with nothing to do; a second flow run does nothing;
2. one behavior's parameter changed, then ``dvc repro``: only that behavior's chain (and what
   reads it) is rebuilt, and the flow afterwards has nothing to do;
3. a failing stage: nothing committed, the catalog and the failed behavior's vectors untouched;
4. the fixed re-run (on the Dask task runner): the behavior that succeeded before is not
   retrained (Prefect's cache), the rest runs, DVC is clean again;
5. ``dvc exp run --temp -S train.layer=2`` runs an experiment without touching the workspace;
6. the shipped local remote: ``dvc push``, lose the outputs and the cache, ``dvc pull`` restores them.
"""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
import yaml

from .conftest import BEHAVIORS, dvc, dvc_status, keep_first_run, load_flows, make_project, run, write_params

A, B = BEHAVIORS


def tree_hash(flows, path):
    from steerkit.fileio import sha256_tree

    return sha256_tree(path)


def stages(summary: dict, behavior: str) -> dict:
    return next(r["stages"] for r in summary["rows"] if r["behavior"] == behavior)


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir, prefect_api):
    return make_project(tmp_path_factory.mktemp("pipeline") / "proj", tiny_model_dir)


@pytest.fixture
def flows(project, monkeypatch):
    monkeypatch.chdir(project)  # the flow changes into the project; restored afterwards
    return load_flows(project)


def artifacts(key: str, since=None) -> list:
    """The artifacts under ``key`` on the session's Prefect server, newest first; only those made since ``since``
    when given (the embedded pipeline test's run shares the server)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return sorted((a for a in found if since is None or a.created >= since), key=lambda a: a.created, reverse=True)


def vector_events(since, timeout: float = 20.0) -> dict[str, tuple[str, dict]]:
    """The newest steerkit.vector.* event per resource on the session's Prefect server since ``since`` (other
    tests' runs share the server; events arrive shortly after they are sent)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    deadline, out = time.monotonic() + timeout, {}
    wanted = EventFilter(event=EventNameFilter(prefix=["steerkit.vector."]), occurred=EventOccurredFilter(since=since))
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            page = client.read_events(wanted, limit=50)
        out = {}
        for e in sorted(page.events, key=lambda e: e.occurred):
            out[e.resource.id] = (e.event, dict(e.payload))
        if len(out) >= len(BEHAVIORS):
            break
        time.sleep(0.5)
    return out


def test_1_first_run_retries_commits_and_agrees_with_dvc(project, flows, monkeypatch, tmp_path_factory):
    from steerkit.pipeline import run as stage_runner

    real = stage_runner.stage_process
    calls: list[tuple] = []

    def flaky(node, *args, **kwargs):
        calls.append((node.stage, node.name))
        if (node.stage, node.name) == ("train", A) and calls.count((node.stage, node.name)) == 1:
            raise RuntimeError("transient failure (injected)")
        return real(node, *args, **kwargs)

    monkeypatch.setattr(stage_runner, "stage_process", flaky)
    from datetime import UTC, datetime

    started = datetime.now(UTC)
    # two simulated GPUs: each model stage pinned to one (CUDA_VISIBLE_DEVICES; torch here sees no CUDA and
    # runs on the CPU), at most one stage per device at a time; prepare and catalog on no device
    summary = flows.run_pipeline(root=str(project), retries=1, retry_delay_seconds=0, devices_spec="cuda:0,cuda:1")
    assert summary["ok"], summary["message"]
    assert calls.count(("train", A)) == 2 and calls.count(("train", B)) == 1  # retried once, then succeeded
    placed = summary["placement"]
    assert {a: p["device"] for a, p in placed.items() if a.split("@")[0] in ("prepare", "catalog")} == {
        f"prepare@{b}": "cpu" for b in BEHAVIORS
    } | {"catalog": "cpu"}
    on_gpu = sorted((p["started"], p["ended"], p["device"]) for a, p in placed.items() if p["device"] != "cpu")
    assert len(on_gpu) == 2 * 4 + 2 and {d for *_, d in on_gpu} == {"cuda:0", "cuda:1"}
    assert {p["process"] for p in placed.values()} == {"forked"}  # from the warm server (steerkit.pipeline.launch)
    for dev in ("cuda:0", "cuda:1"):  # never two stages on one device at once
        spans = [(s, e) for s, e, d in on_gpu if d == dev]
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))
    from steerkit.pipeline.summary import placement_lines

    printed = placement_lines(summary)  # what `steerkit pipeline run` prints: where and when each stage ran
    assert len(printed) == len(placed) == 2 * 5 + 3 and any(f"train@{A}" in ln and "cuda:" in ln for ln in printed)
    assert {stages(summary, b)["train"] for b in BEHAVIORS} == {"ran"}
    for b in BEHAVIORS:
        assert (project / f"vectors/tiny-llama/{b}/L1.safetensors").is_file()
        assert (project / f"vectors/tiny-llama/{b}/L1.caa.safetensors").is_file()
        assert (project / f"reports/eval/tiny-llama/{b}.png").is_file()
        assert (project / f"reports/transfer/tiny-llama/{b}.json").is_file()
    assert (project / "reports/compose/tiny-llama/power-wealth.json").is_file()
    catalog = yaml.safe_load((project / "vectors/catalog.json").read_text())
    assert {(e["behavior"], e["method"]) for e in catalog["entries"]} == {
        (b, m) for b in BEHAVIORS for m in ("bipo", "caa")
    }
    assert summary["rows"][0]["margin_swing"] is not None and summary["rows"][0]["retention"] is not None
    # every stage that ran, the catalog, and the gates again: the release their decision caused changed their input
    assert "catalog" in summary["committed"] and len(summary["committed"]) == 2 * 5 + 3 + 2
    # the gate: A was trained to steer (its interval clears zero) → promoted and released as v1; B's one short
    # epoch moves its pairs by +0.25 [−3.02, +2.87] on 4 pairs → inconclusive, with the pairs it would need
    expected = {A: "promote", B: "inconclusive"}
    for b in BEHAVIORS:
        gate = yaml.safe_load((project / f"reports/gate/tiny-llama/{b}.json").read_text())
        row = next(r for r in summary["rows"] if r["behavior"] == b)
        assert gate["decision"] == row["gate"]["decision"] == expected[b], gate["checks"]
        assert row["gate"]["decided_now"] and row["gate"]["released_now"] == (b == A)
        stable = [e for e in catalog["entries"] if e["behavior"] == b and e["channel"] == "stable"]
        assert len(stable) == (b == A) and row["gate"]["reasons"] == gate["reasons"]
        assert row["margin_swing_ci95"] is not None and row["vs_caa_ci95"] is not None
    assert (
        summary["rows"][1]["gate"]["pairs_needed"] > 4
        and "held-out pairs would tell" in summary["rows"][1]["gate"]["reasons"][0]
    )

    # DVC agrees: nothing to do
    assert dvc_status(project) == {}
    keep_first_run(project, tmp_path_factory.mktemp("first-run-kept"))  # the Dask test's reference
    # Prefect's language: an event per gate decision on the session's server, a progress artifact
    got = vector_events(started)
    assert got[f"steerkit.vector.tiny-llama.{A}"][0] == "steerkit.vector.promoted"
    assert got[f"steerkit.vector.tiny-llama.{B}"][0] == "steerkit.vector.inconclusive"
    assert got[f"steerkit.vector.tiny-llama.{A}"][1]["version"] == 1
    progress = artifacts("steerkit-pipeline-progress", started)[0]
    assert float(progress.data) == 100.0
    assert "Data and pipelines are up to date" in dvc(project, "repro", "--dry").stdout
    # the artifacts a person reads in the Prefect UI
    table = artifacts("steerkit-pipeline-table", started)
    assert table and {row["behavior"] for row in yaml.safe_load(table[0].data)} == set(BEHAVIORS)
    assert "margin swing" in artifacts("steerkit-pipeline-report", started)[0].data
    release = yaml.safe_load(artifacts("steerkit-pipeline-release", started)[0].data)
    assert {row["behavior"] for row in release} == set(BEHAVIORS) and all(row["why"] for row in release)

    again = flows.run_pipeline(root=str(project), retries=0)
    assert again["ok"] and again["committed"] == [] and "0 stage(s) ran" in again["message"]
    # a run that decided nothing says so: no "released" again, the decisions marked as an earlier run's
    assert not any(r["gate"]["decided_now"] or r["gate"]["released_now"] for r in again["rows"])
    from steerkit.pipeline.summary import gate_rows

    assert all("earlier run's decision" in g["gate"] for g in gate_rows(again))


def test_1b_code_is_an_input_and_docs_are_not(project, flows):
    """A line changed in BiPO makes the train stages (and what reads their vectors) stale, under DVC and in the
    flow's plan; a README line changes nothing."""
    from steerkit.pipeline import dvc as dvc_glue
    from steerkit.pipeline import plan
    from steerkit.pipeline.params import load_params

    bipo = project / "steerkit" / "train" / "bipo.py"
    original = bipo.read_text()
    try:
        (project / "README.md").write_text("a line about the project\n")
        assert dvc_status(project) == {}
        bipo.write_text(original + "\n# a fix to BiPO\n")
        stale = set(dvc_status(project))
        assert {f"train@{b}" for b in BEHAVIORS} <= stale and not any(s.startswith("prepare@") for s in stale)
        assert "derive" not in stale  # it runs no BiPO code
        view = dvc_glue.stale(str(project))
        tasks = plan.make_plan(load_params(project / "params.yaml"), (), *view)
        assert {t.node.address for t in tasks if t.run} >= {f"train@{b}" for b in BEHAVIORS}
        assert not any(t.run for t in tasks if t.node.stage in ("prepare", "derive"))
    finally:
        bipo.write_text(original)
        (project / "README.md").unlink()
    assert dvc_status(project) == {}


def test_1c_the_registry_and_the_catalog_give_the_same_stable_vector(project, flows, tmp_path):
    """After the release commit, `steerkit catalog register` tags the GTO way (twice is once); then
    `dvc artifacts get . NAME --stage stable` and `Catalog.find(..., channel="stable")` agree byte for byte."""
    from typer.testing import CliRunner

    from steerkit.catalog import Catalog
    from steerkit.cli import app
    from steerkit.layout import artifact_name

    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "run 1: power-seeking v1 released"], project)
    res = CliRunner().invoke(app, ["catalog", "register", "--root", str(project)])
    assert res.exit_code == 0, res.output
    name = artifact_name("tiny-llama", A)
    tags = set(run(["git", "tag"], project).stdout.split())
    assert {f"{name}@v1.0.0", f"{name}#stable#1"} <= tags and not any(B in t for t in tags)  # B: none released
    again = CliRunner().invoke(app, ["catalog", "register", "--root", str(project)])
    assert "already says" in again.output and set(run(["git", "tag"], project).stdout.split()) == tags
    dvc(project, "push")  # the vectors live in DVC: a downstream app pulls them from the remote
    out = tmp_path / "stable.safetensors"
    dvc(project, "artifacts", "get", str(project), name, "--stage", "stable", "-o", str(out))
    catalog = Catalog.open(project)
    assert out.read_bytes() == catalog.read_bytes(catalog.find(A, channel="stable"))


def test_2_dvc_repro_rebuilds_one_chain_and_then_the_flow_has_nothing_to_do(project, flows):
    """One behavior's evaluation setting: `dvc repro` reruns its evaluation, its gate and the catalog, nothing
    else (a training change reruns the rest of the chain: test_3); then the flow finds nothing to do."""
    report = {b: project / f"reports/eval/tiny-llama/{b}.json" for b in BEHAVIORS}
    before = {b: (report[b].read_bytes(), tree_hash(flows, project / f"vectors/tiny-llama/{b}")) for b in BEHAVIORS}
    params = tiny_params_from(project)
    params["behaviors"][A]["evaluate"] = {"multipliers": [-1, 0, 1, 2]}
    write_params(project, params)
    out = dvc(project, "repro").stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {f"evaluate@{A}", f"gate@{A}", "catalog"}, out
    assert json.loads(report[A].read_text())["multipliers"] == [-1.0, 0.0, 1.0, 2.0]
    assert report[A].read_bytes() != before[A][0]
    assert tree_hash(flows, project / f"vectors/tiny-llama/{A}") == before[A][1]  # not retrained
    assert (report[B].read_bytes(), tree_hash(flows, project / f"vectors/tiny-llama/{B}")) == before[B]
    assert dvc_status(project) == {}

    summary = flows.run_pipeline(root=str(project), retries=0)
    assert summary["ok"] and "0 stage(s) ran" in summary["message"] and summary["committed"] == []
    assert dvc_status(project) == {}


def test_3_failed_run_commits_nothing_and_keeps_vectors_and_catalog(project, flows, monkeypatch):
    from steerkit.pipeline import run as stage_runner

    real, calls = stage_runner.stage_process, []
    monkeypatch.setattr(stage_runner, "stage_process", lambda n, *a, **k: calls.append(n.address) or real(n, *a, **k))
    lock = (project / "dvc.lock").read_bytes()
    catalog = (project / "vectors/catalog.json").read_bytes()
    old_b = tree_hash(flows, project / f"vectors/tiny-llama/{B}")
    params = tiny_params_from(project)
    params["train"]["epochs"] = 2  # every behavior retrains ...
    params["behaviors"][B]["train"] = {"layer": 99}  # ... and this one fails (the model has 4 layers)
    write_params(project, params)

    summary = flows.run_pipeline(root=str(project), retries=1, retry_delay_seconds=0)
    assert not summary["ok"] and f"train@{B}" in summary["failed"] and "layer 99" in summary["failed"][f"train@{B}"]
    assert calls.count(f"train@{B}") == 1  # it refused its input: not retried (a killed worker would be)
    assert stages(summary, A)["train"] == "ran" and stages(summary, B)["train"] == "failed"
    assert summary["committed"] == [] and not summary["catalog_rebuilt"]
    assert (project / "dvc.lock").read_bytes() == lock
    assert (project / "vectors/catalog.json").read_bytes() == catalog
    assert tree_hash(flows, project / f"vectors/tiny-llama/{B}") == old_b
    assert not list((project / ".cache" / "pipeline-staging").glob("*"))  # no half-written staging folder left


def test_4_fixed_rerun_on_dask_reuses_the_cached_behavior(project, flows):
    pytest.importorskip("prefect_dask")
    params = tiny_params_from(project)
    params["behaviors"][B]["train"] = {}
    write_params(project, params)

    summary = flows.run_pipeline(root=str(project), runner="dask", retries=0)
    assert summary["ok"], summary["message"]
    assert stages(summary, A)["train"] == "cached"  # same data + parameters as in the failed run
    assert stages(summary, B)["train"] == "ran"
    assert dvc_status(project) == {}


def test_5_dvc_exp_run_temp_tries_a_layer_and_leaves_the_workspace_alone(project, flows):
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "pipeline outputs recorded"], project)
    before = {p: (project / p).read_bytes() for p in ("params.yaml", "dvc.lock", "vectors/catalog.json")}
    dvc(project, "exp", "run", "--temp", "-S", "train.layer=2", f"evaluate@{A}")  # one chain: train, evaluate
    rows = list(csv.DictReader(io.StringIO(dvc(project, "exp", "show", "--csv").stdout)))

    def col(row: dict, name: str) -> str:  # `dvc exp show` prefixes a column with its file when names clash
        return row.get(name, row.get(f"params.yaml:{name}"))

    workspace = next(r for r in rows if r["rev"] == "workspace")
    exp = next(r for r in rows if r["Experiment"])  # the experiment just run: the only named row
    assert col(workspace, "train.layer") == "1" and col(exp, "train.layer") == "2", (workspace, exp)
    assert exp[f"reports/eval/tiny-llama/{A}.json:vector.layer"] == "2"  # its metrics come from a layer-2 vector
    assert {p: (project / p).read_bytes() for p in before} == before
    assert not (project / f"vectors/tiny-llama/{A}/L2.safetensors").exists() and dvc_status(project) == {}


def test_6_the_shipped_local_remote_pushes_and_pulls(project, flows):
    vec = project / f"vectors/tiny-llama/{A}"
    old = tree_hash(flows, vec)
    assert "pushed" in dvc(project, "push").stdout
    assert (project / ".dvc-remote" / "files" / "md5").is_dir()  # the remote of .dvc/config, inside the project
    shutil.rmtree(vec)
    shutil.rmtree(project / ".dvc" / "cache")
    assert dvc_status(project) != {}
    dvc(project, "pull")
    assert tree_hash(flows, vec) == old and dvc_status(project) == {}


def tiny_params_from(project) -> dict:
    return yaml.safe_load((project / "params.yaml").read_text())


def test_7_held_out_rows_that_prepare_drops_rerun_nothing_downstream(project, flows):
    """Four held-out rows that duplicate training pairs: prepare drops them, its outputs are byte-identical, and
    every stage downstream is skipped as ``dvc repro`` would skip it (not retrained, re-evaluated, re-gated)."""
    seed = project / "data" / "seed" / A
    test_file = seed / "test.jsonl"
    original = test_file.read_text()
    train_rows = (seed / "train.jsonl").read_text().splitlines()[:4]
    pairs_before = (project / f"data/pairs/{A}/test.jsonl").read_bytes()
    try:
        test_file.write_text(original + "\n".join(train_rows) + "\n")
        summary = flows.run_pipeline(root=str(project), retries=0)
        assert summary["ok"], summary["message"]
        assert (project / f"data/pairs/{A}/test.jsonl").read_bytes() == pairs_before
        row = stages(summary, A)
        downstream = {row[s] for s in ("train", "evaluate", "gate", "transfer")}
        assert row["prepare"] == "ran" and downstream == {"skipped"}, row
        assert "skipped (inputs unchanged after their upstream ran)" in summary["message"]
        assert dvc_status(project) == {}
    finally:
        test_file.write_text(original)

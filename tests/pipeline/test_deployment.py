"""The scheduled deployment (prefect.yaml) registers with its cron schedule and its concurrency limit, and the
Prefect server this session started enforces the limit; the held-vector automation applies to it."""

from __future__ import annotations

import pytest
import yaml

from ..conftest import REPO
from .conftest import load_flows


def test_prefect_yaml_names_the_flow_and_a_cron_schedule():
    cfg = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
    dep = cfg["deployments"][0]
    path, func = dep["entrypoint"].split(":")
    assert (REPO / path).is_file() and f"def {func}(" in (REPO / path).read_text(encoding="utf-8")
    assert dep["schedules"][0]["cron"] == "0 3 * * *" and dep["work_pool"]["name"] == "steerkit"


def test_deployment_registers_with_its_schedule(prefect_api, monkeypatch):
    from prefect.client.orchestration import get_client

    monkeypatch.chdir(REPO)
    flows = load_flows(REPO)
    dep = flows.deployment(REPO)
    assert dep.schedules[0].schedule.cron == "0 3 * * *"
    assert dep.parameters["root"] == str(REPO) and dep.parameters["params"] == "params.yaml"

    deployment_id = dep.apply()  # what `steerkit pipeline serve` registers before it starts serving
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id)
    assert stored.name == "nightly" and stored.entrypoint.endswith("pipeline.py:pipeline")
    assert [s.schedule.cron for s in stored.schedules] == ["0 3 * * *"] and stored.schedules[0].active
    assert stored.schedules[0].schedule.timezone == "UTC"

    other = flows.deployment(REPO, cron="*/15 * * * *", name="every-15-min")  # `serve --cron ... --name ...`
    assert other.name == "every-15-min" and other.schedules[0].schedule.cron == "*/15 * * * *"

    # one run per project on Prefect's side: a second run that would start beside the first is cancelled
    from prefect.states import Pending

    assert stored.global_concurrency_limit.limit == 1 and stored.concurrency_options.collision_strategy == "CANCEL_NEW"
    with get_client(sync_client=True) as client:
        first, second = (client.create_flow_run_from_deployment(deployment_id) for _ in range(2))
        assert client.set_flow_run_state(first.id, Pending()).state.type.value == "PENDING"  # holds the slot
        refused = client.set_flow_run_state(second.id, Pending())
        assert refused.state.type.value == "CANCELLED" and "concurrency limit" in refused.state.message
        for run in (first, second):
            client.delete_flow_run(run.id)


def test_the_held_vector_automation_applies_with_a_notification_block(prefect_api, monkeypatch):
    from prefect.blocks.notifications import SlackWebhook
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from steerkit.pipeline.events import NAMES, apply_automation

    SlackWebhook(url="http://127.0.0.1:9/hook").save("steerkit-alerts", overwrite=True)
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    automation_id = apply_automation(REPO / "automations" / "vector-held.yaml", "slack-webhook/steerkit-alerts")
    with get_client(sync_client=True) as client:
        stored = client.read_automation(automation_id)
    assert set(stored.trigger.expect) == {"steerkit.vector.held", "steerkit.vector.inconclusive"} <= set(NAMES)
    assert stored.actions[0].type == "send-notification"
    from steerkit.errors import SteerkitError

    with pytest.raises(SteerkitError, match="no notification block"):
        apply_automation(REPO / "automations" / "vector-held.yaml", "slack-webhook/nobody")


def test_task_runners():
    flows = load_flows(REPO)
    from prefect.task_runners import ThreadPoolTaskRunner

    assert isinstance(flows.task_runner("threads", 3), ThreadPoolTaskRunner)
    pytest.importorskip("prefect_dask")
    from prefect_dask import DaskTaskRunner

    local = flows.task_runner("dask", 2)
    remote = flows.task_runner("dask", 2, "tcp://scheduler.example:8786")
    assert isinstance(local, DaskTaskRunner) and isinstance(remote, DaskTaskRunner)
    assert remote.address == "tcp://scheduler.example:8786"
    from steerkit.errors import SteerkitError

    with pytest.raises(SteerkitError, match="unknown task runner"):
        flows.task_runner("celery")

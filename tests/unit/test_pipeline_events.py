"""Prefect's conventions, the pure parts: the events a run's decisions make, what is retried."""

from __future__ import annotations

from steerkit.pipeline import events
from steerkit.pipeline.run import StageFailed, retry_condition, worth_retrying


def _row(behavior, decision, now=True, released=False, stale=False, stable=1):
    gate = {"decision": decision, "decided_now": now, "released_now": released, "stale": stale, "stable": stable}
    gate |= {"reasons": [f"why {behavior}"], "pairs_needed": 90 if decision == "inconclusive" else None}
    return {"behavior": behavior, "gate": gate, "reports": {"gate": f"reports/gate/m/{behavior}.json"}}


def test_one_event_per_decision_made_in_this_run():
    rows = [
        _row("a", "promote", released=True, stable=2),
        _row("b", "hold"),
        _row("c", "inconclusive"),
        _row("d", "promote", stale=True),
        _row("e", "hold", now=False),  # an earlier run's decision: nothing to say again
        _row("f", "unchanged"),
    ]
    got = {e.resource["steerkit.behavior"]: e for e in events.gate_events("org/Model-7B", rows)}
    assert {b: e.event for b, e in got.items()} == {
        "a": "steerkit.vector.promoted",
        "b": "steerkit.vector.held",
        "c": "steerkit.vector.inconclusive",
        "d": "steerkit.vector.stale",
        "f": "steerkit.vector.unchanged",
    }
    assert all(e.event in events.NAMES for e in got.values())
    a = got["a"]
    assert a.resource["prefect.resource.id"] == "steerkit.vector.org--Model-7B.a"  # the model's folder name
    assert a.payload["version"] == 2 and a.payload["reasons"] == ["why a"] and a.payload["report"].endswith("a.json")
    assert got["c"].payload["pairs_needed"] == 90
    back = events.rollback_event("org/Model-7B", "a", "bipo", 1, 2, "ops", "bad in prod")
    assert back.event == "steerkit.vector.rolled-back" and back.payload["rolled_back_from"] == 2


def test_without_a_prefect_api_nothing_is_sent(monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert events.emit([events.rollback_event("m", "a", "bipo", 1, 2, "ops", "x")]) == 0


def test_bad_input_fails_once_and_a_lost_worker_is_retried():
    assert not worth_retrying(StageFailed(2, "stage train@a failed (exit status 2): layer 99 does not exist"))
    assert worth_retrying(StageFailed(-9, "killed"))  # SIGKILL: the out-of-memory killer, a lost node
    assert worth_retrying(StageFailed(3, "its parent died"))
    assert worth_retrying(RuntimeError("the worker holding the task was lost"))

    class State:
        def __init__(self, exc):
            self.exc = exc

        def is_failed(self):
            return True

        def result(self, raise_on_failure=True):
            return self.exc

    assert retry_condition(None, None, State(StageFailed(2, "bad"))) is False
    assert retry_condition(None, None, State(StageFailed(1, "crash"))) is True
    import pickle

    again = pickle.loads(pickle.dumps(StageFailed(2, "bad", "here", "fix it")))
    assert again.exit_status == 2 and again.where == "here" and again.fix == "fix it"

"""Prefect events on every gate decision and release: what a team's automations react to (a held vector).

One event per behavior whose gate decided in this run — ``steerkit.vector.promoted`` (released as the
next stable version), ``.held``, ``.inconclusive``, ``.unchanged`` or ``.stale`` (promoted against a
stable release that changed before releasing) — and ``steerkit.vector.rolled-back`` when a person
rolls one back. The resource is the vector (``steerkit.vector.<model>.<behavior>``); the payload
says the version, the decision and why. Building them is pure (``gate_events``, ``rollback_event``);
``emit`` sends them to the Prefect API the process is configured with, and to none otherwise (it
never starts a temporary API just to say something nobody can hear).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SteerkitError
from ..layout import model_slug

PREFIX = "steerkit.vector"
#: the gate's decision → the event it makes (promote becomes "promoted" once released, "stale" if refused)
DECIDED = {"hold": "held", "inconclusive": "inconclusive", "unchanged": "unchanged"}
NAMES = tuple(f"{PREFIX}.{n}" for n in ("promoted", "held", "inconclusive", "unchanged", "stale", "rolled-back"))


@dataclass(frozen=True)
class Event:
    """A Prefect event: its name, the resource it is about, and what happened."""

    event: str
    resource: dict[str, str]
    payload: dict[str, Any] = field(default_factory=dict)


def resource(model: str, behavior: str) -> dict[str, str]:
    model = model_slug(model)  # the folder the vector is filed under: one resource however the model was named
    return {
        "prefect.resource.id": f"{PREFIX}.{model}.{behavior}",
        "prefect.resource.name": f"{behavior} ({model})",
        "steerkit.model": model,
        "steerkit.behavior": behavior,
    }


def gate_events(model: str, rows: list[dict[str, Any]]) -> list[Event]:
    """The events of a run's summary rows: one per gate that decided in this run."""
    out = []
    for r in rows:
        gate = r.get("gate") or {}
        decision = gate.get("decision")
        if not decision or not gate.get("decided_now"):
            continue
        if decision == "promote":
            name = "promoted" if gate.get("released_now") else "stale" if gate.get("stale") else "unchanged"
        else:
            name = DECIDED.get(decision, decision)
        payload = {
            "decision": decision,
            "version": gate.get("stable"),
            "reasons": gate.get("reasons") or [],
            "pairs_needed": gate.get("pairs_needed"),
            "report": (r.get("reports") or {}).get("gate"),
        }
        out.append(Event(f"{PREFIX}.{name}", resource(model, r["behavior"]), payload))
    return out


def rollback_event(model: str, behavior: str, method: str, version: int, rolled_back_from: int, who: str, why: str):
    """A person's rollback: ``rolled_back_from`` is out of stable, ``version`` is back in."""
    payload = {"method": method, "version": version, "rolled_back_from": rolled_back_from, "who": who, "why": why}
    return Event(f"{PREFIX}.rolled-back", resource(model, behavior), payload)


def emit(events: list[Event]) -> int:
    """Send ``events`` to the configured Prefect API; how many were sent (0 without one, or on failure)."""
    if not events or not _api_configured():
        return 0
    try:
        from prefect.events import emit_event

        for e in events:
            emit_event(event=e.event, resource=e.resource, payload=e.payload)
        return len(events)
    except Exception:  # pragma: no cover - an unreachable API must not fail a release
        return 0


def _api_configured() -> bool:
    if os.environ.get("PREFECT_API_URL"):
        return True
    try:
        from prefect.context import FlowRunContext

        return FlowRunContext.get() is not None  # inside a flow run: its API (temporary or not) is up
    except ImportError:  # pragma: no cover
        return False


AUTOMATION = Path("automations") / "vector-held.yaml"
PLACEHOLDER = "BLOCK_DOCUMENT_ID"


def automation(path: str | Path, block_document_id: str) -> Any:
    """The automation file with the notification block's id filled in, as Prefect's ``AutomationCore``."""
    import yaml
    from prefect.events.schemas.automations import AutomationCore

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8").replace(PLACEHOLDER, block_document_id))
        return AutomationCore.model_validate(raw)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise SteerkitError(
            f"not a Prefect automation ({type(exc).__name__}: {str(exc).splitlines()[0]})",
            where=str(path),
            fix="restore it from the steerkit project (`git checkout automations/`)",
        ) from None


def apply_automation(path: str | Path, block: str) -> str:
    """Create the automation on the configured Prefect server with the block ``TYPE/NAME``; its id."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    if not os.environ.get("PREFECT_API_URL"):
        raise SteerkitError(
            "no Prefect server is configured: an automation needs one that outlives this command",
            where="PREFECT_API_URL",
            fix="start `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api",
        )
    kind, _, name = block.partition("/")
    with get_client(sync_client=True) as client:
        try:
            document = client.read_block_document_by_name(name, kind) if kind and name else None
        except ObjectNotFound:
            document = None
        if document is None:
            raise SteerkitError(
                f"no notification block {block!r} on the Prefect server",
                where="--block",
                fix="create one first (e.g. `prefect block create slack-webhook`), then name it as TYPE/NAME",
            )
        return str(client.create_automation(automation(path, str(document.id))))

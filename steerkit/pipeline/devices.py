"""Where each stage runs: at most one model stage per GPU at a time, pinned to it; file-only stages never wait.

A flow run is given the devices it may use (``--devices cuda:0,cuda:1``, ``cpu``, or ``auto``: every
visible GPU, else the CPU). Stages that load a model (train, evaluate, gate, derive, transfer,
compose) lease one device from a pool shared by the run's tasks and see only that GPU
(``CUDA_VISIBLE_DEVICES`` in the stage's process), so two of them never share a card and a node's
cards are all used. Stages that only read and write files (prepare, catalog) see no GPU and take
no lease. On a Dask cluster of several processes or machines a pool in one process cannot see the
others: there each GPU stage asks the scheduler for a worker with the resource ``GPU=1``
(``dask_resources``) and the worker's own environment pins the card.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from ..errors import SteerkitError

#: the Dask worker resource a GPU stage asks for (start GPU workers with ``--resources GPU=1``)
GPU_RESOURCE = "GPU"
_CUDA = re.compile(r"^cuda:(\d+)$")


@dataclass(frozen=True)
class Devices:
    """The devices of a run: GPUs (``cuda:N``, numbered as this process sees them), or none (the CPU)."""

    gpus: tuple[str, ...] = ()
    forced_cpu: bool = False  # ``--devices cpu``: hide the GPUs even where there are some

    def env(self, device: str | None) -> dict[str, str]:
        """What a stage's process needs to see only ``device`` (None: no GPU at all)."""
        if device is None:
            return {"CUDA_VISIBLE_DEVICES": ""} if (self.gpus or self.forced_cpu) else {}
        index = int(device.split(":")[1])
        parent = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        return {"CUDA_VISIBLE_DEVICES": parent[index] if index < len(parent) else str(index)}

    def describe(self) -> str:
        return ", ".join(self.gpus) if self.gpus else "cpu"


def visible_gpus() -> tuple[str, ...]:
    """The CUDA devices this process can use (none without CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return ()
    return tuple(f"cuda:{i}" for i in range(torch.cuda.device_count())) if torch.cuda.is_available() else ()


def parse_devices(spec: str | None, where: str = "--devices", visible: Callable[[], tuple[str, ...]] = visible_gpus):
    """``auto`` (or None): every visible GPU, else the CPU; ``cpu``; or a comma list ``cuda:0,cuda:1``."""
    text = (spec or "auto").strip().lower()
    if text == "auto":
        return Devices(visible())
    if text == "cpu":
        return Devices((), forced_cpu=True)
    gpus = tuple(d.strip() for d in text.split(",") if d.strip())
    bad = [d for d in gpus if not _CUDA.match(d)]
    if bad or not gpus:
        raise SteerkitError(
            f"cannot read the devices {spec!r}" + (f": {', '.join(bad)} is not cuda:N" if bad else ""),
            where=where,
            fix="give auto, cpu, or a comma-separated list such as cuda:0,cuda:1",
        )
    if len(set(gpus)) != len(gpus):
        raise SteerkitError(
            f"a device is named twice in {spec!r}", where=where, fix="name each GPU once, e.g. cuda:0,cuda:1"
        )
    return Devices(gpus)


@dataclass
class Lease:
    """A stage's device while it runs: which one, the environment that pins it, where and when it ran."""

    device: str
    env: dict[str, str]
    started: float = field(default_factory=time.time)
    ended: float | None = None

    @property
    def seconds(self) -> float:
        return (self.ended or time.time()) - self.started

    def record(self) -> dict[str, Any]:
        """For the task's result: device, Dask worker (None outside Dask), start and end (epoch seconds)."""
        return {
            "device": self.device,
            "worker": worker_name(),
            "started": self.started,
            "ended": self.ended,
            "seconds": round(self.seconds, 1),
        }


class DevicePool:
    """The run's GPUs, leased one stage at a time; threads of one process share it (``pool``)."""

    def __init__(self, devices: Devices) -> None:
        self.devices = devices
        self._free: queue.Queue[str] = queue.Queue()
        for d in devices.gpus:
            self._free.put(d)

    @contextmanager
    def lease(self, needs_device: bool, log: Callable[[str], None] = lambda _: None) -> Iterator[Lease]:
        """A free GPU for a model stage (waiting for one if all are taken), or the CPU; held while the block runs."""
        device = None
        if needs_device and self.devices.gpus:
            try:
                device = self._free.get_nowait()
            except queue.Empty:
                log(f"waiting for a free device ({self.devices.describe()} all busy)")
                device = self._free.get()
        lease = Lease(device or "cpu", self.devices.env(device))
        try:
            yield lease
        finally:
            lease.ended = time.time()
            if device is not None:
                self._free.put(device)


_POOLS: dict[Devices | None, DevicePool] = {}
_POOLS_LOCK = threading.Lock()


def pool(devices: Devices | None) -> DevicePool:
    """The one pool of ``devices`` in this process, shared by every task thread of a run.

    None (a deployment's scheduled run, which names no devices) means ``auto``: the visible GPUs.
    """
    with _POOLS_LOCK:
        if devices not in _POOLS:
            _POOLS[devices] = DevicePool(parse_devices("auto") if devices is None else devices)
        return _POOLS[devices]


def worker_name() -> str | None:
    """The Dask worker running this code, or None outside one."""
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return None


def dask_annotation(gpu: bool) -> AbstractContextManager:
    """Around a Dask submission: a model stage asks for a worker with ``GPU=1`` when ``gpu``; else nothing."""
    if not gpu:
        return nullcontext()
    import dask

    return dask.annotate(resources={GPU_RESOURCE: 1})

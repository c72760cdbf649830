"""Engine time used by one stage of one shard, however many threads and replicas served it.

Why a context variable: a stage calls an engine through plain ``Engine`` methods (a pool of Ray
replicas, or one engine), and only the pool knows how long each replica computed. The stage opens
a meter around its work; the pool adds each batch's share of its replica's engine call (times the
replica's devices) to the meter of the calling context. Calls outside a meter are not counted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class EngineMeter:
    """Device-seconds of engine work done for one stage of one shard."""

    def __init__(self, stage: str | None = None) -> None:
        self.stage = stage  # the stage's name: pools count outstanding requests per stage
        self._lock = threading.Lock()
        self.device_seconds = 0.0
        self.nodes: set[str] = set()  # the Ray nodes whose replicas did the work

    def add(self, device_seconds: float, node: str | None = None) -> None:
        with self._lock:
            self.device_seconds += device_seconds
            if node:
                self.nodes.add(node)


_METER: ContextVar[EngineMeter | None] = ContextVar("reflectory_engine_meter", default=None)


@contextmanager
def metering(stage: str | None = None) -> Iterator[EngineMeter]:
    """Count the engine time of the calls made inside this block (in this context)."""
    meter = EngineMeter(stage)
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


def record_engine_time(device_seconds: float, node: str | None = None) -> None:
    """Add engine time (and the node that spent it) to the calling context's meter, if a stage opened one."""
    meter = _METER.get()
    if meter is not None:
        meter.add(device_seconds, node)


def current_stage() -> str:
    """The stage whose meter is open in this context ("other" outside any)."""
    meter = _METER.get()
    return meter.stage if meter is not None and meter.stage else "other"

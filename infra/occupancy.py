"""How full a pool's engines were while work waited: occupancy and idle seconds, per stage.

A pool samples its replicas' engines (requests running, capacity) and its own outstanding requests
(submitted by shard tasks and not answered yet, per stage) a few times a second. Per stage, over
the time it had requests outstanding:
- occupancy = the time average of running / min(capacity, outstanding): 1 when the engines run as
  many requests as they can or as there are; lower when requests wait in queues, in transit, or
  behind another caller's longest reply;
- idle seconds: time with requests outstanding and no engine running any.
Pure arithmetic over samples, so it is tested in milliseconds; ``infra.pool`` feeds it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass
class StageOccupancy:
    seconds: float = 0.0  # time with this stage's requests outstanding
    weighted: float = 0.0  # integral of running / min(capacity, outstanding) over that time
    idle_seconds: float = 0.0
    samples: int = 0

    @property
    def occupancy(self) -> float:
        return self.weighted / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "occupancy": round(self.occupancy, 4),
            "idle_seconds": round(self.idle_seconds, 3),
            "seconds": round(self.seconds, 3),
            "samples": self.samples,
        }


class OccupancyMeter:
    """Accumulates samples; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stages: dict[str, StageOccupancy] = {}

    def sample(
        self,
        dt: float,
        running: int,
        capacity: int,
        outstanding: Mapping[str, int],
        unfinished: int | None = None,
    ) -> None:
        """One sample covering ``dt`` seconds: the engines' running requests and total capacity, the
        stages with requests outstanding at the pool, and how many requests are not finished yet
        (default: every outstanding one; a pool knows better, since a batch stays outstanding until
        its last request ends)."""
        total = sum(outstanding.values()) if unfinished is None else unfinished
        if dt <= 0 or not any(n > 0 for n in outstanding.values()):
            return
        fill = min(1.0, running / max(1, min(capacity, total))) if total > 0 else 1.0
        with self._lock:
            for stage, n in outstanding.items():
                if n <= 0:
                    continue
                acc = self.stages.setdefault(stage, StageOccupancy())
                acc.seconds += dt
                acc.weighted += fill * dt
                acc.samples += 1
                if running == 0 and total > 0:
                    acc.idle_seconds += dt

    def report(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {stage: acc.as_dict() for stage, acc in sorted(self.stages.items())}


def merge_reports(reports: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Several pools' reports as one (a stage served by two pools: time-weighted occupancy, summed idle)."""
    merged: dict[str, StageOccupancy] = {}
    for report in reports:
        for stage, r in report.items():
            acc = merged.setdefault(stage, StageOccupancy())
            acc.seconds += r["seconds"]
            acc.weighted += r["occupancy"] * r["seconds"]
            acc.idle_seconds += r["idle_seconds"]
            acc.samples += int(r["samples"])
    return {stage: acc.as_dict() for stage, acc in sorted(merged.items())}

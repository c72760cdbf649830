"""What a run used and, where prices are given, what it cost: per stage, per run, per kept pair.

Pure: usage comes in measured (tokens from the stage rows, device-seconds from the replicas'
engine time), prices come from the model roles, and nothing here guesses a price. A stage whose
role has no price has a cost of None, and a run with no price anywhere has no cost at all.

Two kinds of price, per model role:
- ``input`` and ``output``: $ per 1M prompt and completion tokens (a served model, OpenAI-style);
- ``device_hour``: $ per device-hour of a local replica, applied to its engine time (seconds the
  engine was running a call for the stage) times the devices each replica holds (GPUs; a replica
  on CPU counts as one device). Idle time of a loaded replica is not billed to any stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CURRENCY = "USD"


class Prices(BaseModel):
    """Optional prices of one model role; leave them out and the run shows usage only."""

    model_config = ConfigDict(extra="forbid")

    input: float | None = Field(None, ge=0, description="$ per 1M input (prompt) tokens, for a served model.")
    output: float | None = Field(
        None, ge=0, description="$ per 1M output (completion) tokens, for a served model."
    )
    device_hour: float | None = Field(
        None, ge=0, description="$ per device-hour (a GPU; a CPU replica counts as one) of a local replica."
    )

    def given(self) -> bool:
        return any(p is not None for p in (self.input, self.output, self.device_hour))


@dataclass(frozen=True)
class StageUsage:
    """What one stage used of one model role."""

    stage: str
    role: str | None  # teacher | student | None (a stage without a model, e.g. select)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    device_seconds: float = 0.0  # engine seconds x devices per replica
    requests: int = 0  # rows whose replies the role's model was asked for in this run
    reused: int = 0  # rows whose replies came from an earlier run (tasks.replies)
    saved_prompt_tokens: int = 0  # what those replies cost when they were asked for
    saved_completion_tokens: int = 0

    @property
    def device_hours(self) -> float:
        return self.device_seconds / 3600.0

    def saved(self) -> StageUsage:
        """The reused replies as usage: what this run would have paid for them."""
        return StageUsage(self.stage, self.role, self.saved_prompt_tokens, self.saved_completion_tokens)


def stage_cost(usage: StageUsage, prices: Prices | None) -> float | None:
    """The stage's cost under its role's prices; None when the role has none that apply."""
    if prices is None or usage.role is None:
        return None
    parts = []
    if prices.input is not None:
        parts.append(usage.prompt_tokens * prices.input / 1e6)
    if prices.output is not None:
        parts.append(usage.completion_tokens * prices.output / 1e6)
    if prices.device_hour is not None:
        parts.append(usage.device_hours * prices.device_hour)
    return sum(parts) if parts else None


def cost_report(usages: Iterable[StageUsage], prices: Mapping[str, Prices], kept: int) -> dict[str, Any]:
    """Usage and cost of each stage, of the run, and of each kept pair (JSON-ready).

    ``total`` sums the stages that have a cost; ``priced`` says whether every stage with a model
    had one (False: the total leaves some out). Without any price, every cost is None.
    """
    stages = []
    for usage in usages:
        role_prices = prices.get(usage.role or "")
        cost = stage_cost(usage, role_prices)
        saved = stage_cost(usage.saved(), role_prices) if usage.reused else None
        stages.append({**asdict(usage), "device_hours": usage.device_hours, "cost": cost, "saved": saved})
    costs = [s["cost"] for s in stages if s["cost"] is not None]
    total = sum(costs) if costs else None
    savings = [s["saved"] for s in stages if s["saved"] is not None]
    with_model = [s for s in stages if s["role"] is not None]
    return {
        "currency": CURRENCY,
        "stages": stages,
        "prompt_tokens": sum(s["prompt_tokens"] for s in stages),
        "completion_tokens": sum(s["completion_tokens"] for s in stages),
        "device_hours": sum(s["device_hours"] for s in stages),
        "total": total,
        "requests": sum(s["requests"] for s in stages),
        "reused": sum(s["reused"] for s in stages),
        "saved": sum(savings) if savings else None,  # what the reused replies cost their runs
        "priced": total is not None and all(s["cost"] is not None for s in with_model),
        "kept": kept,
        "per_kept_pair": total / kept if total is not None and kept else None,
    }


def format_cost(value: float | None) -> str:
    """A cost for people: '-' when there is none, more digits for small amounts."""
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 1 else f"${value:.6f}".rstrip("0").rstrip(".")

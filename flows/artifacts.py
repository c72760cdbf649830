"""What a flow run shows in the Prefect UI beside its logs: progress per stage while it runs, and at
the end the run's key numbers (markdown), its stages (a table) and a link to its report page.

Artifacts are created from inside the flow run, so Prefect attaches them to it; keys are the same
for every run of a flow, so the UI's Artifacts page also shows each key's history across runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from storage.report.page import cost_note, key_numbers, viewer_hint
from tasks.cost import format_cost

UPDATE_EVERY_S = 2.0  # a run of thousands of shards must not call the API thousands of times


def _key(flow: str, what: str) -> str:
    return f"reflectory-{flow}-{what}"  # lowercase letters, digits and dashes, as Prefect asks


class StageProgress:
    """One progress artifact per stage, counting its shards done."""

    def __init__(self, flow: str, stages: Sequence[str], total: int) -> None:
        self.total = max(1, total)
        self.done = [0] * len(stages)
        self.stages = list(stages)
        self.sent = [0.0] * len(stages)
        self.ids: list[Any] = [  # UUIDs (Prefect types these calls sync-or-async)
            create_progress_artifact(
                0.0, key=_key(flow, "progress-" + _slug(s)), description=f"{s}: shards done"
            )
            for s in stages
        ]

    def advance(self, stage: int) -> None:
        self.done[stage] += 1
        now = time.monotonic()
        if self.done[stage] == self.total or now - self.sent[stage] >= UPDATE_EVERY_S:
            self._send(stage)
            self.sent[stage] = now

    def close(self) -> None:
        """The last counts of every stage (an update may have been held back)."""
        for stage in range(len(self.stages)):
            self._send(stage)

    def _send(self, stage: int) -> None:
        pct = 100.0 * self.done[stage] / self.total
        description = f"{self.stages[stage]}: {self.done[stage]} of {self.total} shards done"
        update_progress_artifact(self.ids[stage], pct, description=description)


def publish_summary(data: dict[str, Any], report: Path | None, store_uri: str | None = None) -> None:
    """The markdown, table and link artifacts of a finished run (``data``: storage.report.data), with
    the command that opens its rows in the browser."""
    run, flow = data["run"], data["run"]["flow"]
    lines = [f"## Reflectory {flow} run `{run['run_id']}`", "", "| | |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in key_numbers(data)]
    reasons = data.get("reasons") or []
    if reasons:
        lines += ["", "| reason | kept | rows |", "|---|---|---:|"]
        lines += [f"| {r['reason']} | {'yes' if r['kept'] else 'no'} | {r['n']} |" for r in reasons]
    lines += ["", cost_note(data)]
    if report is not None:
        lines += ["", f"Report: `{report}`"]
    if (viewer := viewer_hint(store_uri, run["run_id"])) is not None:
        lines += ["", f"Rows: `{viewer['command']}`, then {viewer['url']}"]
    create_markdown_artifact("\n".join(lines), key=_key(flow, "summary"), description="the run's key numbers")
    table = [
        {
            "stage": s["stage"],
            "role": s.get("role") or "-",
            "input_tokens": s["prompt_tokens"],
            "output_tokens": s["completion_tokens"],
            "task_seconds": round(s["task_seconds"], 2),
            "device_hours": round(s["device_hours"], 6),
            "cost": format_cost(s.get("cost")),
        }
        for s in data["stages"]
    ]
    create_table_artifact(table, key=_key(flow, "stages"), description="tokens, time and cost per stage")
    if report is not None:
        create_link_artifact(
            report.resolve().as_uri(), link_text=f"report of {run['run_id']}", key=_key(flow, "report"),
            description="the run's report (plots, config, lineage): open it on the machine that ran the flow",
        )  # fmt: skip


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())

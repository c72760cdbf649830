"""What the factory flows (recycle, traces) do around their stages: shard jobs, the run's summary,
its report and optional export. The run's life (record, heartbeat, pools, accounting) is the run
context's (``flows.run_context``), shared with every flow.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from flows.artifacts import publish_summary
from flows.params import RunParams
from flows.run_context import RunContext, shard_rows, stage_usage
from storage.hub_export import run_export
from storage.report.data import collect, judge_numbers
from storage.report.page import write_report
from storage.sql import connect as connect_sql
from tasks.conversation import History
from tasks.engine import REQUEST_FAILURES, failure_cause
from tasks.shards import Item, ShardJob, ShardJobs, ShardSummary


class FlowRun(RunContext):
    """One run of a factory flow: the run context, plus shard jobs, the summary, report and export."""

    def __init__(self, flow: str, params: RunParams) -> None:
        judge = getattr(params, "judge", None)  # recycle's optional judge stage
        roles = {
            "teacher": params.teacher,
            "student": params.student,
            **({"judge": judge.model} if judge else {}),
        }
        super().__init__(flow, params, roles)

    def announce(self, items: str, count: int, rejects: int) -> None:
        """Log what the run will work on; an input with nothing to work on is worth a warning."""
        logger = get_run_logger()
        source = self.params.input
        logger.info("run %s: %d %s (%d rejected rows) in %s", self.run_id, count, items, rejects, source)
        if count == 0:
            logger.warning(
                "no %s to work on in %s (%d rows rejected: see the rejects table)", items, source, rejects
            )

    def jobs(self, items: Iterable[tuple[Item, History]], total: int) -> ShardJobs:
        """The items cut into shards of ``shard_size`` (the unit of work, retry and commit), made as the
        run admits them (``tasks.shards.ShardJobs``)."""
        p = self.params
        judge = getattr(p, "judge", None)  # recycle's optional judge stage
        template = ShardJob(
            run_id=self.run_id,
            shard=0,
            pairs=(),
            teacher=p.teacher,
            student=p.student,
            sampling=p.sampling,
            constrained=p.constrained,
            judge=judge.model if judge else None,
            judge_sampling=judge.sampling if judge else None,
            judge_constrained=judge.constrained if judge else True,
        )
        return ShardJobs(items, total, p.shard_size, template, source=p.input)

    def finish(
        self, summaries: Sequence[ShardSummary], ingest: Any, *, final: str, **extra: int
    ) -> dict[str, Any]:
        """The run's summary (from the shard summaries of every stage, the final one's decisions),
        the optional export, and the ``runs`` row."""
        last = [s for s in summaries if s.stage == final]
        reasons: Counter[str] = Counter()
        flags: Counter[str] = Counter()
        for s in last:
            reasons.update(s.counts)
            flags.update(s.flags)
        summary: dict[str, Any] = {
            "run_id": self.run_id,
            **extra,
            "shards": len(last),
            "window": self.window,
            **self.held,  # in_flight_max, peak_rss_mb
            "resumed_shards": sum(1 for s in last if s.resumed),
            "resumed_by_stage": dict(Counter(s.stage for s in summaries if s.resumed)),
            "kept": flags.get("kept", 0),
            **{k: v for k, v in flags.items() if k != "kept"},
            "reasons": dict(reasons),
            "failures": failures_by_cause(summaries),
            "occupancy": self.occupancy,
            "ingest": ingest.__dict__,
        }
        if self.limits:  # an API teacher's rate limits: what was learned, waited and answered 429
            summary["limits"] = self.limits
        if any(s.stage == "judge" for s in summaries):
            summary["judge"] = judge_numbers(connect_sql(self.store), self.run_id)
        if self.params.compact:
            summary["compacted"] = self.compact(summaries)
        usage = stage_usage(summaries)
        cost = self.cost_of(usage, summary["kept"])
        summary["cost"] = {
            k: cost[k]
            for k in ("total", "per_kept_pair", "device_hours", "currency", "requests", "reused", "saved")
        }
        shards = shard_rows(last, summaries, self.started)
        summary["nodes"] = dict(Counter(node for s in shards for node in s["nodes"]))
        status, cause = self.outcome()
        summary["stopped_shards"] = len(self.stops)
        summary["cause"] = cause
        fields = self.usage_fields(usage, cost, shards, summaries)
        lineage = {**self._row(status, cause, ended=True), **fields}
        summary["export"] = self.export(final, lineage)
        summary["status"] = status
        self.end(status, cause, **fields, counts_json=json.dumps(summary, default=str))
        summary["report"] = self.show()
        return summary

    def show(self) -> str | None:
        """The run's report page and its Prefect artifacts. A failure here is logged, never the run's:
        its rows and its runs row are committed already."""
        logger = get_run_logger()
        try:
            data = collect(self.store, self.run_id)
            page = None
            if self.params.report:
                page = write_report(self.store, self.run_id, self.report_dir(), data=data)
                logger.info("report: %s", page)
            publish_summary(data, page, self.store.uri)
        except Exception as exc:  # a report is a view of the run, not the run
            logger.warning("no report or artifacts for run %s: %s", self.run_id, exc)
            return None
        return str(page) if page else None

    def report_dir(self) -> Path:
        """Where the run's report goes: the given folder, else ``reports/`` in a local store, else
        ``./reports`` (a store on S3 holds tables only)."""
        if self.params.report_dir:
            return Path(self.params.report_dir).expanduser()
        return Path(self.store.uri) / "reports" if self.store.is_local else Path("reports")

    def export(self, stage: str, row: dict[str, Any]) -> dict[str, Any] | None:
        """The optional last stage: this run's rows of the final table, curated and exported."""
        wanted = self.params.export
        if wanted is None:
            return None
        table = {"select": "selected", "trace": "traces"}[stage]
        params = wanted.model_copy(
            update={"store": self.store.uri, "table": table, "version": None, "run_id": self.run_id}
        )
        with self.stage("export"):
            result = run_export(params, run_rows={self.run_id: row})
        return {"destination": result.destination, "rows": result.split_rows, "commit": result.commit}


def failures_by_cause(summaries: Sequence[ShardSummary]) -> dict[str, int]:
    """Requests that failed alone, per stage and cause (``instruction/prompt_too_long``: 2): the
    teacher's engine failures and the student's unscored texts."""
    out: Counter[str] = Counter()
    for s in summaries:
        if s.stage in ("instruction", "response", "generate"):
            for status, n in s.counts.items():
                if failure_cause(status) in REQUEST_FAILURES or status.startswith("engine_error"):
                    out[f"{s.stage}/{failure_cause(status)}"] += n
    return dict(sorted(out.items()))

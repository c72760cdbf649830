"""The ``export`` flow: the same export as ``reflectory export``, schedulable from the Prefect UI.

Thin on purpose: the flow's parameter form is ``ExportParams`` and its body calls
``storage.hub_export.run_export``. The Hub token is read from ``HF_TOKEN`` (or the saved login)
on the machine that runs the flow, never taken as a parameter, so it is not stored with the
flow run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from storage.hub_export import ExportParams, run_export


@flow(name="export", log_prints=False)
def export_flow(params: ExportParams) -> dict[str, Any]:
    """Curate a table version and push it (or write the Hub layout); returns what was removed and why."""
    logger = get_run_logger()
    result = run_export(params)
    summary = {
        "destination": result.destination,
        "commit": result.commit,
        "split_rows": result.split_rows,
        "rows_in": result.curation.rows_in,
        "removed": {r.name: r.removed for r in result.curation.reports},
        "benchmarks": next(
            (r.details["benchmarks"] for r in result.curation.reports if r.name == "decontamination"), {}
        ),
        "skipped": result.curation.skipped,
    }
    logger.info(
        "exported %s to %s; removed %s", summary["split_rows"], result.destination, summary["removed"]
    )
    return summary

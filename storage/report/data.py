"""The numbers behind a run's report, each read from the store with one SQL query.

Every plot of the report, the Prefect artifacts and the dataset card draws from what this returns,
and the page embeds it as JSON: what a reader sees can be checked against the store with the
query that is printed next to it (``queries``).

Distributions keep every value up to ``MAX_POINTS`` per variant; a larger run keeps every k-th
value in the query's order (``sampled`` says so), so a page stays a few MB at any size.
"""

from __future__ import annotations

import json
from typing import Any

from tasks.judge.judgements import rating_histogram
from tasks.judge.verdict import Tally

MAX_POINTS = 20_000


class ReportError(RuntimeError):
    """The run is not in the store, or its rows cannot be read; says which."""


def recycle_queries() -> dict[str, str]:
    """The SQL behind each recycle plot; ``$run`` is the run id, bound as a parameter."""
    return {
        "distributions": """
            SELECT variant, ifd_ppl AS ifd, rifd_ppl AS rifd FROM scores
            WHERE run_id = $run AND score_error IS NULL AND ifd_ppl IS NOT NULL
              AND rifd_ppl IS NOT NULL AND isfinite(ifd_ppl) AND isfinite(rifd_ppl)
            ORDER BY variant, source_id""",
        "scatter": """
            WITH v AS (
              SELECT source_id,
                     max(ifd_ppl) FILTER (WHERE variant = 'ori') AS ori_ifd,
                     max(ifd_ppl) FILTER (WHERE variant = 'Q') AS q_ifd,
                     max(rifd_ppl) FILTER (WHERE variant = 'ori') AS ori_rifd,
                     max(rifd_ppl) FILTER (WHERE variant = 'Q') AS q_rifd,
                     max(rifd_ppl) FILTER (WHERE variant = 'A') AS a_rifd,
                     max(rifd_ppl) FILTER (WHERE variant = 'QA') AS qa_rifd
              FROM scores WHERE run_id = $run AND score_error IS NULL GROUP BY source_id)
            SELECT v.*, s.branch, s.kept, s.reason FROM v JOIN selected s USING (source_id)
            WHERE s.run_id = $run ORDER BY source_id""",
        "reasons": """
            SELECT reason, kept, count(*) AS n FROM selected WHERE run_id = $run
            GROUP BY ALL ORDER BY n DESC, reason""",
    }


def traces_queries() -> dict[str, str]:
    """The SQL behind each traces plot."""
    return {
        "funnel": """
            SELECT count(*) AS replies, count(*) FILTER (WHERE valid) AS valid,
                   count(*) FILTER (WHERE valid AND verified) AS verified,
                   count(*) FILTER (WHERE kept) AS kept
            FROM traces WHERE run_id = $run""",
        "reasons": """
            SELECT coalesce(reason, invalid_reason, 'none') AS reason, kept, count(*) AS n
            FROM traces WHERE run_id = $run GROUP BY ALL ORDER BY n DESC, reason""",
        "distributions": """
            SELECT 'trace' AS variant, ifd_ppl AS ifd, NULL::DOUBLE AS rifd FROM traces
            WHERE run_id = $run AND ifd_ppl IS NOT NULL AND isfinite(ifd_ppl) ORDER BY source_id""",
    }


def judge_numbers(session: Any, run_id: str) -> dict[str, Any] | None:
    """The judge stage's verdicts (the reflected response against the original: A's wins, ties,
    losses, failed, winning score) and the kept pairs' ratings; None when the run was not judged."""
    rows = session.sql("SELECT outcome, rating FROM judgements WHERE run_id = ?", params=[run_id]).fetchall()
    if not rows:
        return None
    ratings = [r for _, r in rows if r is not None]
    return {
        **Tally.of(o for o, _ in rows).as_dict(),
        "rated": len(ratings),
        "mean_rating": sum(ratings) / len(ratings) if ratings else None,
        "ratings": rating_histogram(ratings),
    }


def compare_queries() -> dict[str, str]:
    """The SQL behind a comparison's plot: each test set's outcomes."""
    return {
        "comparison": """
            SELECT test_set, outcome, count(*) AS n FROM comparisons WHERE run_id = $run
            GROUP BY ALL ORDER BY test_set, outcome""",
    }


def evaluate_queries() -> dict[str, str]:
    """An evaluate run: its comparison, and each arm's training (loss curve, before and after)."""
    return {
        **compare_queries(),
        "training": """
            SELECT source_id AS arm, examples, loss_first, loss_last, loss_curve_json FROM trainings
            WHERE run_id = $run ORDER BY source_id""",
    }


def run_query() -> str:
    """The run's latest ``runs`` row (``storage.runs``)."""
    from storage.runs import LATEST_RUNS

    return f"SELECT * FROM ({LATEST_RUNS}) AS runs WHERE run_id = $run"


def collect(store: Any, run_id: str, run_row: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's row and the data of every plot of its flow (JSON-ready).

    ``run_row``: the run's ``runs`` row when it is not committed yet (a flow's own export, which
    comes before the row that records it)."""
    from storage.sql import connect

    session = connect(store)
    bound = {"run": run_id}
    rows = [run_row] if run_row is not None else _records(session, run_query(), bound)
    if not rows:
        known = [
            r["run_id"]
            for r in _records(
                session, "SELECT run_id FROM runs GROUP BY run_id ORDER BY max(started_at) DESC LIMIT 5"
            )
        ]
        hint = f" (latest: {', '.join(known)})" if known else " (the store has no finished run)"
        raise ReportError(f"run {run_id!r} is not in the runs table of {store.uri}{hint}")
    row = rows[0]
    flow = row["flow"]
    queries = {
        "recycle": recycle_queries,
        "traces": traces_queries,
        "compare": compare_queries,
        "evaluate": evaluate_queries,
    }[flow]()
    data: dict[str, Any] = {
        "run": _run_section(row),
        "stages": _stages(row),
        "throughput": _throughput(row),
        "queries": {k: " ".join(q.split()) for k, q in queries.items()},
    }
    for name, query in queries.items():
        data[name] = _records(session, query, bound)
    data["sampled"] = _sample(data.get("distributions", []))
    data["judge"] = judge_numbers(session, run_id) if flow == "recycle" else None
    return data


def _run_section(row: dict[str, Any]) -> dict[str, Any]:
    counts = _json(row.get("counts_json"))
    return {
        "run_id": row["run_id"],
        "flow": row["flow"],
        "status": row["status"],
        "started_at": str(row["started_at"]),
        "ended_at": str(row["ended_at"]),
        "config": _json(row.get("config_json")),
        "versions": _json(row.get("versions_json")),
        "counts": counts,
        "cost": _json(row.get("cost_json")) or None,
    }


def _stages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Tokens, device-hours, wall seconds and cost per stage, from the runs row."""
    cost = _json(row.get("cost_json")) or {}
    seconds = (_json(row.get("stage_seconds_json")) or {}).get("task_seconds", {})
    by_stage = {s["stage"]: dict(s) for s in cost.get("stages", [])}
    for t in _json(row.get("tokens_json")) or []:
        entry = by_stage.setdefault(t["stage"], {"stage": t["stage"], "role": None, "cost": None})
        entry.setdefault("prompt_tokens", t["prompt"])
        entry.setdefault("completion_tokens", t["completion"])
    for stage, secs in seconds.items():
        by_stage.setdefault(stage, {"stage": stage, "role": None, "cost": None})["task_seconds"] = secs
    out = []
    for entry in by_stage.values():
        entry.setdefault("prompt_tokens", 0)
        entry.setdefault("completion_tokens", 0)
        entry.setdefault("device_hours", 0.0)
        entry.setdefault("task_seconds", 0.0)
        out.append(entry)
    return out


def _throughput(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Shards of the final stage as they finished: seconds since the start, rows done so far."""
    shards = sorted(_json(row.get("shards_json")) or [], key=lambda s: s["finished_s"])
    done, out = 0, []
    for s in shards:
        done += s["rows"]
        out.append({**s, "rows_done": done})
    return out


def _sample(rows: list[dict[str, Any]]) -> bool:
    """Thin each variant's values to MAX_POINTS in place (a fixed stride: the same run, the same page)."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(r)
    if all(len(v) <= MAX_POINTS for v in by_variant.values()):
        return False
    rows.clear()
    for values in by_variant.values():
        stride = max(1, -(-len(values) // MAX_POINTS))
        rows.extend(values[::stride])
    return True


def _records(session: Any, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    relation = session.sql(query, params=params)
    names = relation.columns
    return [dict(zip(names, _plain(values), strict=True)) for values in relation.fetchall()]


def _plain(values: tuple[Any, ...]) -> list[Any]:
    out = []
    for v in values:
        if isinstance(v, float) and v != v:  # NaN is not JSON
            v = None
        out.append(v)
    return out


def _json(text: Any) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None

"""One self-contained HTML page per run: plots as embedded PNGs, the numbers behind them as JSON.

Opened with a double click: no server, no network, no script needed to read it (the JSON is for
people and tools that want the data: ``<script id="report-data" type="application/json">``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from tasks.cost import format_cost

from . import plots
from .data import collect


def key_numbers(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The few numbers a reader looks for first (also the Prefect markdown artifact's)."""
    counts = data["run"]["counts"] or {}
    cost = data["run"]["cost"] or {}
    out: list[tuple[str, str]] = []
    for key in ("pairs", "questions", "shards", "resumed_shards", "kept", "valid", "verified"):
        if key in counts:
            out.append((key.replace("_", " "), str(counts[key])))
    out.append(
        ("input tokens", f"{cost.get('prompt_tokens', sum(s['prompt_tokens'] for s in data['stages'])):,}")
    )
    out.append(
        (
            "output tokens",
            f"{cost.get('completion_tokens', sum(s['completion_tokens'] for s in data['stages'])):,}",
        )
    )
    out.append(("device-hours", f"{cost.get('device_hours', 0.0):.5f}"))
    out.append(("cost", format_cost(cost.get("total"))))
    out.append(("cost per kept pair", format_cost(cost.get("per_kept_pair"))))
    if "requests" in cost:  # model replies: asked in this run, or reused from an earlier one
        out.append(("requests asked", f"{cost['requests']:,}"))
        out.append(("replies reused", f"{cost.get('reused', 0):,}"))
        if cost.get("saved") is not None:
            out.append(("cost saved by reuse", format_cost(cost["saved"])))
    if cause := counts.get("cause"):  # a run stopped by its budget says which, and how to finish
        out.append(("stopped", cause))
    return out


def cost_note(data: dict[str, Any]) -> str:
    cost = data["run"]["cost"] or {}
    if cost.get("total") is None:
        return "No prices were given for this run, so it shows tokens and device-hours only."
    if not cost.get("priced"):
        return "Some stages had no price: the cost covers the priced stages only."
    return f"Costs in {cost.get('currency', 'USD')} from the prices given for the run's model roles."


VIEWER_PORT = 8765  # reflectory view's default


def render(data: dict[str, Any], images: dict[str, bytes], *, store_uri: str | None = None) -> str:
    """The page's HTML from the report's data and its plots; with the store's address, the command
    that opens the run's rows in the browser."""
    env = Environment(loader=PackageLoader("storage.report", "templates"), autoescape=select_autoescape())
    stages = [{**s, "cost_text": format_cost(s.get("cost"))} for s in data["stages"]]
    width, height = int(plots.WIDTH_IN * plots.DPI), int(plots.HEIGHT_IN * plots.DPI)
    shown = [
        {
            "name": name,
            "title": plots.TITLES[name],
            "png": base64.b64encode(png).decode(),
            "width": width,
            "height": height,
            "query": data["queries"].get(name, ""),
        }
        for name, png in images.items()
    ]
    # </ would end the script element early; JSON allows the escaped slash.
    data_json = Markup(json.dumps(data, default=str, indent=1).replace("</", "<\\/"))
    return env.get_template("report.html.jinja").render(
        run=data["run"],
        key_numbers=key_numbers(data),
        stages=stages,
        cost_note=cost_note(data),
        plots=shown,
        config_json=json.dumps(data["run"]["config"], indent=2, default=str),
        versions_json=json.dumps(data["run"]["versions"], indent=2, default=str),
        data_json=data_json,
        viewer=viewer_hint(store_uri, data["run"]["run_id"]),
    )


def viewer_hint(store_uri: str | None, run_id: str) -> dict[str, str] | None:
    """How to look at a run's rows: the command and the address it serves them at."""
    if not store_uri:
        return None
    from urllib.parse import quote

    return {
        "command": f"reflectory view --store {store_uri}",
        "url": f"http://127.0.0.1:{VIEWER_PORT}/runs/{quote(run_id, safe='')}/pairs",
    }


def write_report(store: Any, run_id: str, out_dir: Path, *, data: dict[str, Any] | None = None) -> Path:
    """Write ``report-RUN_ID.html`` (its plots embedded) to ``out_dir``; returns the page."""
    data = data if data is not None else collect(store, run_id)
    images = plots.draw_all(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / f"report-{run_id}.html"
    page.write_text(render(data, images, store_uri=getattr(store, "uri", None)), encoding="utf-8")
    return page

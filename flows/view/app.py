"""The data browser: server-rendered pages (Jinja2) and their JSON twins over one read-only store.

Every HTML page has a JSON twin under ``/api`` with the same path and query string; filters are
facets that compose in the URL (Datasette's way). The app never writes the store. Bad filter
values are a 400 with the reason, an unknown run or pair a 404, and a store that cannot be read a
503 that says why: never a 500. Every asset is bundled (no CDN): it works offline.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from storage.browse import PAIR_SORTS, TRACE_SORTS, Browser, PairFilter, TraceFilter, UnknownRun
from storage.store import Store

from .diff import changed_fraction, word_diff

HERE = Path(__file__).parent
VARIANTS = ("ori", "Q", "A", "QA")
CONTROL_KEYS = ("fragment",)  # not filters: how the page is delivered


class BadRequest(ValueError):
    """A filter value that does not validate: the user's to fix (400)."""


def create_app(store: Store, *, refresh_s: float = 2.0) -> Starlette:
    """The browser over ``store``, read-only."""
    browser = Browser(store, refresh_s=refresh_s)
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.globals.update(diff=word_diff, changed=changed_fraction, variants=VARIANTS, fmt=_fmt, score=_score,
                       pair_sorts=PAIR_SORTS, trace_sorts=TRACE_SORTS, store_uri=store.uri)  # fmt: skip

    def page(name: str, request: Request, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(request=request, query=_query_string, **context)
        return HTMLResponse(html)

    def runs(request: Request) -> Response:
        rows = browser.runs()
        if request.url.path.startswith("/api/"):
            return JSONResponse({"runs": rows})
        return page("runs.html", request, runs=rows)

    def run(request: Request) -> Response:
        info = _run_or_404(browser, request.path_params["run_id"])
        target = "traces" if info.get("flow") == "traces" else "pairs"
        return RedirectResponse(f"/runs/{_quote(info['run_id'])}/{target}", status_code=302)

    def pairs(request: Request) -> Response:
        return listing(request, PairFilter, browser.pairs, "pairs.html")

    def pair(request: Request) -> Response:
        run_id, source_id = request.path_params["run_id"], request.path_params["source_id"]
        _run_or_404(browser, run_id)
        data = browser.pair(run_id, source_id)
        if data is None:
            raise HTTPException(404, f"run {run_id} has no pair {source_id}")
        if request.url.path.startswith("/api/"):
            return JSONResponse(data)
        return page("pair.html", request, p=data)

    def traces(request: Request) -> Response:
        return listing(request, TraceFilter, browser.traces, "traces.html")

    def listing(
        request: Request, model: type[BaseModel], query: Callable[..., Any], template: str
    ) -> Response:
        """A run's filtered listing as JSON (under /api) or as its page (only its rows: ``fragment``)."""
        run_id = request.path_params["run_id"]
        info = _run_or_404(browser, run_id)
        f = _filters(model, request)
        found = query(run_id, f)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"run": info, "filters": f.model_dump(exclude_none=True), **found.as_dict()})
        if template == "pairs.html" and request.query_params.get("fragment"):
            template = "pair_rows.html"
        extra = (
            {"facets": browser.facets(run_id)} if template.startswith("pair") else {"fold": _fold_reflections}
        )
        return page(template, request, run=info, f=f, listing=found, **extra)

    def failures(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        info = _run_or_404(browser, run_id)
        data = browser.failures(run_id)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"run": info, **data})
        return page("failures.html", request, run=info, data=data)

    def report(request: Request) -> Response:
        """The run's report page, drawn now from the store (never written anywhere)."""
        from storage.report import plots
        from storage.report.data import ReportError, collect
        from storage.report.page import render

        run_id = request.path_params["run_id"]
        _run_or_404(browser, run_id)
        try:
            data = collect(store, run_id)
        except ReportError as exc:  # a run still going has no runs row yet: no report
            raise HTTPException(404, str(exc)) from None
        return HTMLResponse(render(data, plots.draw_all(data), store_uri=store.uri))

    def live(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        info = _run_or_404(browser, run_id)
        return JSONResponse({"status": info["status"], "shards": browser.shards(run_id)})

    def export(request: Request) -> Response:
        run_id, fmt = request.path_params["run_id"], request.path_params["fmt"]
        if fmt not in ("jsonl", "parquet"):
            raise HTTPException(404, f"no export as {fmt!r}: export.jsonl or export.parquet")
        _run_or_404(browser, run_id)
        rows = browser.export_pairs(run_id, _filters(PairFilter, request))
        name = f"{run_id}-pairs.{fmt}"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        if fmt == "jsonl":
            body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            return Response(body, media_type="application/x-ndjson", headers=headers)
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = io.BytesIO()
        pq.write_table(
            pa.Table.from_pylist(rows) if rows else pa.table({"source_id": pa.array([], pa.string())}), sink
        )
        return Response(sink.getvalue(), media_type="application/vnd.apache.parquet", headers=headers)

    def twin(path: str, endpoint: Callable[..., Any]) -> list[Route]:
        return [Route(path, endpoint), Route(f"/api{path}", endpoint)]

    routes = [
        *twin("/", runs),
        Route("/api/runs", runs),
        Route("/runs/{run_id}", run),
        *twin("/runs/{run_id}/pairs", pairs),
        *twin("/runs/{run_id}/pairs/{source_id}", pair),
        *twin("/runs/{run_id}/traces", traces),
        *twin("/runs/{run_id}/failures", failures),
        Route("/api/runs/{run_id}/live", live),
        Route("/runs/{run_id}/report", report),
        Route("/runs/{run_id}/export.{fmt:str}", export),
        Route("/favicon.ico", lambda request: RedirectResponse("/static/favicon.svg", status_code=301)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    def error(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/") or "export." in request.url.path:
            return JSONResponse({"error": message, "status": status}, status_code=status)
        html = env.get_template("error.html").render(
            request=request, status=status, message=message, query=_query_string
        )
        return HTMLResponse(html, status_code=status)

    async def bad_request(request: Request, exc: Exception) -> Response:
        return error(request, 400, str(exc))

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(
            request, 404, f"no run {exc.args[0]!r} in this store" if isinstance(exc, UnknownRun) else str(exc)
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error(request, exc.status_code, str(exc.detail))

    async def unavailable(request: Request, exc: Exception) -> Response:
        return error(request, 503, f"the store could not be read: {type(exc).__name__}: {exc}")

    app = Starlette(
        routes=routes,
        exception_handlers={
            BadRequest: bad_request,
            UnknownRun: not_found,
            HTTPException: http_error,
            Exception: unavailable,
        },
    )
    app.state.browser = browser
    return app


def _filters(model: type[BaseModel], request: Request) -> Any:
    """The query string as the filter model; an empty value is no filter; a bad one a BadRequest."""
    raw = {k: v for k, v in request.query_params.items() if v != "" and k not in CONTROL_KEYS}
    try:
        return model(**raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'filter'}: {e['msg']}" for e in exc.errors()
        )
        raise BadRequest(f"bad filter: {problems}") from None


def _run_or_404(browser: Browser, run_id: str) -> dict[str, Any]:
    return browser.run(run_id)  # UnknownRun -> 404


def _query_string(request: Request, **changes: Any) -> str:
    """This page's query string with some parameters changed (None removes one): for links that keep
    the other facets, e.g. the next page or another sort."""
    params = {k: v for k, v in request.query_params.items() if k not in CONTROL_KEYS}
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return urlencode(params)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _score(value: float | None) -> str:
    """A judge's score as it wrote it (8, 7.5)."""
    return "–" if value is None else f"{value:g}"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fold_reflections(thinking: str | None) -> list[tuple[str, str]]:
    """A trace's thinking as ('text', ...) and ('reflection', ...) parts, so the page folds each
    ``<reflection>`` behind a summary."""
    import re

    parts: list[tuple[str, str]] = []
    text = thinking or ""
    pos = 0
    for m in re.finditer(r"<reflection>(.*?)</reflection>", text, flags=re.S):
        if m.start() > pos:
            parts.append(("text", text[pos : m.start()]))
        parts.append(("reflection", m.group(1).strip()))
        pos = m.end()
    if pos < len(text):
        parts.append(("text", text[pos:]))
    return parts

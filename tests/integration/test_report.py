"""A run made visible: the report page of a recycle run on vLLM (its data equal to SQL
over the store, its plots rendered by a real headless Chromium), the flow run's artifacts read
back through a real Prefect server's API (the cost of a run priced per token:
``tests/integration/test_secrets.py``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from storage.report.screenshot import CHROMIUM_ARGS, find_chromium
from storage.store import Store
from tests.integration.conftest import PREFECT_AUTH, ROOT, prefect_env

pytestmark = pytest.mark.slow

CHROMIUM = find_chromium()
STUDENT_DEVICE_HOUR = 2.5
STAGES = ("reflect instructions", "reflect responses", "score variants", "select")


def _pairs(path: Path, n: int) -> Path:
    rows = (ROOT / "data" / "demo_sample.jsonl").read_text().splitlines()[:n]
    path.write_text("\n".join(rows) + "\n")
    return path


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def smol_run(
    prefect_api: str, tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path
) -> SimpleNamespace:
    """The recycle flow on vLLM, constrained, against a Prefect server. The tiny model: what is checked
    is the page against SQL over the store, which SmolLM2's 135M would only make slower (its whole
    run is the README's `make demo`)."""
    tmp = tmp_path_factory.mktemp("report-run")
    store = tmp / "factory"
    env = prefect_env(tmp / "home", prefect_api)
    run = _cli(
        ["run", "recycle", "-i", str(_pairs(tmp / "in.jsonl", 2)), "-s", str(store),
         "--teacher", f"vllm:{tiny_model_path}", "--student", f"vllm:{tiny_model_path}",
         "--shard-size", "1", "--max-tokens", "96",
         "--student-price", f"device_hour={STUDENT_DEVICE_HOUR}"],
        env,
    )  # fmt: skip
    [run_id] = {r["run_id"] for r in Store(str(store)).table("runs").to_pylist()}
    return SimpleNamespace(
        store=store, run_id=run_id, api=prefect_api, out=run.stdout, env=env, tmp=tmp, model=tiny_model_path
    )


@pytest.fixture(scope="module")
def report(smol_run: SimpleNamespace) -> SimpleNamespace:
    out_dir = smol_run.tmp / "reports"
    done = _cli(
        ["report", smol_run.run_id, "--store", str(smol_run.store), "--out", str(out_dir)], smol_run.env
    )
    page = out_dir / f"report-{smol_run.run_id}.html"
    assert str(page.resolve()) in done.stdout.replace("\n", "")
    html = page.read_text()
    data = json.loads(
        re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)[1]
    )
    return SimpleNamespace(page=page, html=html, data=data)


def _sql(store: Path, query: str) -> list[tuple[Any, ...]]:
    return Store(str(store)).sql(query).fetchall()


def test_the_numbers_behind_each_plot_equal_sql_over_the_store(
    smol_run: SimpleNamespace, report: Any
) -> None:
    run, data, store = f"'{smol_run.run_id}'", report.data, smol_run.store
    # Distributions: every scored variant's IFD and r-IFD.
    want = _sql(
        store, f"SELECT variant, ifd_ppl, rifd_ppl FROM scores WHERE run_id = {run} AND score_error IS NULL"
    )
    got = [(r["variant"], r["ifd"], r["rifd"]) for r in data["distributions"]]
    assert sorted(got) == sorted(want) and len(got) >= 3
    # Reasons: one bar per (reason, kept), its height the count.
    want_reasons = Counter(
        {
            (r, k): n
            for r, k, n in _sql(
                store, f"SELECT reason, kept, count(*) FROM selected WHERE run_id = {run} GROUP BY ALL"
            )
        }
    )
    assert Counter({(r["reason"], r["kept"]): r["n"] for r in data["reasons"]}) == want_reasons
    assert sum(want_reasons.values()) == 2
    # Scatter: each pair's original IFD and its decision.
    ori = dict(_sql(store, f"SELECT source_id, ifd_ppl FROM scores WHERE run_id = {run} AND variant = 'ori'"))
    kept = dict(_sql(store, f"SELECT source_id, kept FROM selected WHERE run_id = {run}"))
    assert {r["source_id"]: (r["ori_ifd"], r["kept"]) for r in data["scatter"]} == {
        k: (ori[k], kept[k]) for k in kept
    }
    # Stages: the teacher's tokens per stage, as the reflections table records them.
    tokens = dict(
        ((s, (p, c)) for s, p, c in _sql(store, f"""
            SELECT CASE WHEN stage = 'instruction' THEN 'instruction' ELSE 'response' END,
                   sum(prompt_tokens), sum(completion_tokens) FROM reflections
            WHERE run_id = {run} GROUP BY ALL"""))
    )  # fmt: skip
    stages = {s["stage"]: s for s in data["stages"]}
    for stage, (p, c) in tokens.items():
        assert (stages[stage]["prompt_tokens"], stages[stage]["completion_tokens"]) == (p, c)
    # Cost: only the student had a price (per device-hour); the teacher's stages have none.
    assert stages["instruction"]["cost"] is None and stages["response"]["cost"] is None
    score = stages["score"]
    assert score["device_hours"] > 0 and score["cost"] == pytest.approx(
        score["device_hours"] * STUDENT_DEVICE_HOUR
    )
    assert data["run"]["cost"]["total"] == pytest.approx(score["cost"]) and not data["run"]["cost"]["priced"]
    # Throughput: the final stage's shards, all of its rows by the last one.
    [(n_selected,)] = _sql(store, f"SELECT count(*) FROM selected WHERE run_id = {run}")
    assert [s["rows_done"] for s in data["throughput"]][-1] == n_selected
    assert len(data["throughput"]) == 2  # 2 pairs in shards of 1
    # The page states the config it ran with.
    assert data["run"]["config"]["teacher"]["spec"] == f"vllm:{smol_run.model}"


def test_every_plot_renders_in_a_headless_browser(report: Any, tmp_path: Path) -> None:
    if CHROMIUM is None:
        if os.environ.get("REFLECTORY_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install chromium); CI requires it")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "request",
            lambda r: None if r.url.startswith(("file:", "data:")) else errors.append(f"network: {r.url}"),
        )
        page.goto(report.page.resolve().as_uri())
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        images = page.evaluate(
            """() => [...document.images].map(img => {
                 const c = document.createElement('canvas');
                 c.width = img.naturalWidth; c.height = img.naturalHeight;
                 const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                 const px = g.getImageData(0, 0, c.width, c.height).data;
                 const colors = new Set();
                 for (let i = 0; i < px.length; i += 4 * 97)
                   colors.add(px[i] << 16 | px[i + 1] << 8 | px[i + 2]);
                 return {id: img.id, complete: img.complete, w: img.naturalWidth, h: img.naturalHeight,
                         colors: colors.size};
               })"""
        )
        browser.close()
    assert errors == []
    assert {i["id"] for i in images} == {
        f"plot-{n}" for n in ("distributions", "scatter", "reasons", "stages", "throughput")
    }
    for image in images:
        assert image["complete"] and (image["w"], image["h"]) == (720, 400), image
        assert image["colors"] >= 4, image  # drawn, not blank
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_the_flow_run_shows_its_results_as_prefect_artifacts(smol_run: SimpleNamespace) -> None:
    api = smol_run.api
    found = httpx.post(
        f"{api}/artifacts/filter",
        json={"artifacts": {"key": {"like_": "reflectory-recycle-"}}, "sort": "CREATED_DESC"},
        timeout=10,
        auth=PREFECT_AUTH,
    ).json()
    summary = next(
        a for a in found if a["key"] == "reflectory-recycle-summary" and smol_run.run_id in a["data"]
    )
    flow_run = summary["flow_run_id"]
    mine = {a["key"]: a for a in found if a["flow_run_id"] == flow_run}
    assert mine["reflectory-recycle-summary"]["type"] == "markdown"
    assert "| kept |" in summary["data"] and "| device-hours |" in summary["data"]
    table = mine["reflectory-recycle-stages"]
    assert table["type"] == "table"
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    assert {r["stage"] for r in rows} >= {"instruction", "response", "score", "select"}
    link = mine["reflectory-recycle-report"]
    assert link["type"] == "markdown" or link["type"] == "link"
    target = re.search(r"file://\S+?\.html", link["data"])[0]
    assert Path(target.removeprefix("file://")).exists()
    for stage in STAGES:
        progress = mine["reflectory-recycle-progress-" + stage.replace(" ", "-")]
        assert progress["type"] == "progress" and progress["data"] == pytest.approx(100.0)
    flow_state = httpx.get(f"{api}/flow_runs/{flow_run}", timeout=10, auth=PREFECT_AUTH).json()["state"][
        "type"
    ]
    assert flow_state == "COMPLETED"

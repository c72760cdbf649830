"""``reflectory view`` over a real store: the JSON twins, the filters and search, bad input, the
binding, live updates, and the pages in a real browser (Debian's Chromium through playwright)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from storage.report.screenshot import CHROMIUM_ARGS, find_chromium
from tests.view_store import HISTORY, LONG_INSTRUCTION, PAIRS, RUN, TRACES_RUN, build

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


class Viewer:
    def __init__(self, store: Path, *args: str) -> None:
        cmd = [sys.executable, "-m", "flows.cli", "view", "--store", str(store), "--port", "0", *args]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        match = re.search(r"(http://\S+?)/\s", line + " ")
        assert match, line + self.proc.stderr.read()  # type: ignore[union-attr]
        self.url = match.group(1)
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(path, params=params)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("view") / "factory"
    build(path)
    return path


@pytest.fixture(scope="module")
def viewer(store: Path) -> Iterator[Viewer]:
    v = Viewer(store)
    yield v
    v.stop()


def test_runs_and_a_search_that_finds_one_pair_with_its_reason(viewer: Viewer) -> None:
    runs = viewer.get("/api/runs").json()["runs"]
    assert {r["run_id"] for r in runs} == {RUN, TRACES_RUN}
    found = viewer.get(f"/api/runs/{RUN}/pairs", q="zebra marmalade").json()
    assert found["total"] == 1
    [row] = found["rows"]
    assert row["original"]["input"] == PAIRS[2][1] and row["reason"]
    page = viewer.get(f"/runs/{RUN}/pairs", q="zebra marmalade").text
    assert row["source_id"][:10] in page and row["reason"] in page
    others = [r["source_id"] for r in viewer.get(f"/api/runs/{RUN}/pairs").json()["rows"] if r != row]
    assert all(sid[:10] not in page for sid in others if sid != row["source_id"])


def test_filters_compose_and_match_sql_over_the_same_rows(viewer: Viewer, store: Path) -> None:
    from storage.store import Store

    st = Store(str(store))
    want = st.sql(
        f"SELECT source_id FROM selected WHERE run_id = '{RUN}' AND NOT kept AND ifd_ppl >= 0.5"
    ).fetchall()
    got = viewer.get(f"/api/runs/{RUN}/pairs", kept="false", ifd_min="0.5").json()
    assert sorted(r["source_id"] for r in got["rows"]) == sorted(s for (s,) in want) and got["total"] == len(
        want
    )
    long = viewer.get(f"/api/runs/{RUN}/pairs", reason="failed:prompt_too_long").json()
    assert long["total"] == 1 and long["rows"][0]["original"]["instruction"] == LONG_INSTRUCTION
    ordered = viewer.get(f"/api/runs/{RUN}/pairs", sort="ifd", order="asc").json()["rows"]
    values = [r["ifd_ppl"] for r in ordered]
    assert values == sorted(values)
    paged = viewer.get(f"/api/runs/{RUN}/pairs", per_page="2", page="2").json()
    assert paged["page"] == 2 and len(paged["rows"]) == 2 and paged["pages"] == 3


@pytest.mark.parametrize(
    "params",
    [{"kept": "maybe"}, {"ifd_min": "abc"}, {"sort": "drop table"}, {"per_page": "0"}, {"page": "-1"},
     {"nope": "1"}, {"variant": "Z"}, {"ifd_max": "nan"}],
)  # fmt: skip
def test_bad_filter_values_are_a_400_with_a_message(viewer: Viewer, params: dict[str, str]) -> None:
    for path in (f"/api/runs/{RUN}/pairs", f"/runs/{RUN}/pairs"):
        r = viewer.get(path, **params)
        assert r.status_code == 400, (path, params, r.text[:300])
        assert "bad filter" in r.text


@pytest.mark.parametrize("q", ["' OR 1=1 --", "%", "_", "\\", "'; DROP TABLE selected; --", '" OR ""="'])
def test_injection_shaped_searches_find_nothing_and_break_nothing(viewer: Viewer, q: str) -> None:
    r = viewer.get(f"/api/runs/{RUN}/pairs", q=q)
    assert r.status_code == 200 and r.json()["total"] == 0
    assert viewer.get(f"/api/runs/{RUN}/pairs").json()["total"] == 5  # the table is still there


def test_unknown_runs_and_pairs_are_404(viewer: Viewer) -> None:
    paths = ["/runs/nope/pairs", "/api/runs/nope/pairs", "/runs/nope/traces", "/api/runs/nope/failures",
             f"/runs/{RUN}/pairs/0000000000000000", f"/api/runs/{RUN}/pairs/0000000000000000"]  # fmt: skip
    for path in paths:
        assert viewer.get(path).status_code == 404, path


def test_one_pair_has_every_stage_and_its_lineage(viewer: Viewer) -> None:
    sid = viewer.get(f"/api/runs/{RUN}/pairs", q="zebra").json()["rows"][0]["source_id"]
    pair = viewer.get(f"/api/runs/{RUN}/pairs/{sid}").json()
    assert {s["variant"] for s in pair["scores"]} == {"ori", "Q", "A", "QA"}
    assert {r["stage"] for r in pair["replies"]} == {"instruction", "response_original", "response_reflected"}
    assert pair["seed"]["input"] == PAIRS[2][1] and pair["lineage"]["teacher"] == "hf:teacher"
    html = viewer.get(f"/runs/{RUN}/pairs/{sid}").text
    assert 'class="ins"' in html and 'class="del"' in html  # the word diff
    assert pair["history"] == [] and 'class="history"' not in html  # a single-turn pair has none


def test_a_conversations_history_is_folded_above_its_last_exchange(viewer: Viewer) -> None:
    sid = viewer.get(f"/api/runs/{RUN}/pairs", q="staying healthy").json()["rows"][0]["source_id"]
    pair = viewer.get(f"/api/runs/{RUN}/pairs/{sid}").json()
    assert [(m["role"], m["content"]) for m in pair["history"]] == list(HISTORY)
    html = viewer.get(f"/runs/{RUN}/pairs/{sid}").text
    folded = html[html.index('<details class="history">') : html.index("</details>")]
    assert "3 earlier messages · 1 exchange" in folded and "I sleep five hours a night." in folded
    assert html.index('class="history"') < html.index("Variants and scores")


def test_the_judges_verdict_shows_beside_its_pair(viewer: Viewer) -> None:
    rows = viewer.get(f"/api/runs/{RUN}/pairs", per_page="100").json()["rows"]
    judged = [r for r in rows if r["judgement"]]
    assert len(judged) == 1 and judged[0]["judgement"]["outcome"] == "win"
    assert judged[0]["judgement"]["rating"] == 8.0
    listing = viewer.get(f"/runs/{RUN}/pairs", per_page="100").text
    assert "judge: reflected win (9:6, 8.5:7) · rated 8/10" in listing
    page = viewer.get(f"/runs/{RUN}/pairs/{judged[0]['source_id']}").text
    assert 'id="judgement"' in page and "The reflected answer is clearer." in page


def test_failures_and_traces(viewer: Viewer) -> None:
    failures = viewer.get(f"/api/runs/{RUN}/failures").json()
    assert [r["reason"] for r in failures["rejects"]] == ["empty output"]
    assert {r["parse_status"] for r in failures["replies"]} == {"prompt_too_long: 9000 tokens > 8191"}
    traces = viewer.get(f"/api/runs/{TRACES_RUN}/traces", verified="true").json()
    assert traces["total"] == 1 and traces["rows"][0]["n_reflections"] == 1


def test_a_finished_run_links_its_report(viewer: Viewer) -> None:
    assert f'href="/runs/{RUN}/report"' in viewer.get("/").text
    page = viewer.get(f"/runs/{RUN}/report")
    assert page.status_code == 200 and f"Reflectory run <code>{RUN}</code>" in page.text
    assert viewer.get("/runs/nope/report").status_code == 404


def test_export_saves_the_current_filter_for_review(viewer: Viewer) -> None:
    import pyarrow.parquet as pq

    lines = viewer.get(f"/runs/{RUN}/export.jsonl", kept="false").text.splitlines()
    rows = [json.loads(x) for x in lines]
    assert len(rows) == viewer.get(f"/api/runs/{RUN}/pairs", kept="false").json()["total"]
    assert all(r["kept"] is False and "original_instruction" in r and "label" in r for r in rows)
    table = pq.read_table(io.BytesIO(viewer.get(f"/runs/{RUN}/export.parquet").content))
    assert table.num_rows == 5


def test_it_listens_on_loopback_only(viewer: Viewer) -> None:
    import psutil

    port = int(viewer.url.rsplit(":", 1)[1])
    listening = [
        c.laddr for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.laddr.port == port
    ]
    assert listening and all(a.ip == "127.0.0.1" for a in listening)


def test_a_non_loopback_host_needs_allow_remote(store: Path) -> None:
    cmd = [sys.executable, "-m", "flows.cli", "view", "--store", str(store), "--host", "0.0.0.0"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--allow-remote" in out.stderr


def _browser():
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("REFLECTORY_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install chromium); CI requires it")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    return sync_playwright, chromium


def test_the_pages_in_a_real_browser(viewer: Viewer, tmp_path: Path) -> None:
    sync_playwright, chromium = _browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        outside: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(viewer.url) else None)
        page.goto(f"{viewer.url}/runs/{RUN}/pairs")
        assert page.locator("#rows tr[data-href]").count() == 5
        # Search from the keyboard: "/" focuses the box.
        page.keyboard.press("/")
        page.keyboard.type("zebra marmalade")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"q=zebra"))
        assert page.locator("#rows tr[data-href]").count() == 1
        # j then Enter opens the pair found; its word diff is marked up.
        page.keyboard.press("j")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/pairs/[0-9a-f]+$"))
        assert page.locator("span.ins").count() > 0 and page.locator("span.del").count() > 0
        assert "zebra" in page.inner_text("main")
        # A facet: dropped pairs only, chosen in the form.
        page.goto(f"{viewer.url}/runs/{RUN}/pairs")
        page.select_option("select[name=kept]", "false")
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"kept=false"))
        dropped = page.locator("#rows tr.dropped").count()
        assert dropped == page.locator("#rows tr[data-href]").count() > 0
        assert page.locator("#rows tr.kept").count() == 0
        page.screenshot(path=str(tmp_path / "pair.png"))
        # A trace: its reflection folded behind a summary, opened by a click.
        page.goto(f"{viewer.url}/runs/{TRACES_RUN}/traces")
        reflection = page.locator("details.reflection")
        assert reflection.count() == 1 and not reflection.get_attribute("open")
        reflection.locator("summary").click()
        assert "12 + 30 = 42" in reflection.inner_text()
        # A conversation's history: folded above the pair, opened by a click.
        page.goto(f"{viewer.url}/runs/{RUN}/pairs")
        page.locator("#rows tr[data-href]", has_text="staying healthy").click()
        history = page.locator("details.history")
        assert history.count() == 1 and not history.get_attribute("open")
        assert not page.get_by_text("I sleep five hours a night.").is_visible()
        history.locator("summary").click()
        assert page.get_by_text("I sleep five hours a night.").is_visible()
        browser.close()
    assert errors == [] and outside == []


def test_new_shards_appear_without_a_reload(tmp_path: Path) -> None:
    """A run that is going (its row says running, its heartbeat is fresh): a shard committed while the
    page is open shows up."""
    from storage.store import Store
    from tests.view_store import PAIRS as BASE

    path = tmp_path / "live"
    build(path, finished=False, run_id="live-run")
    v = Viewer(path)
    try:
        sync_playwright, chromium = _browser()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
            page = browser.new_page()
            page.goto(f"{v.url}/runs/live-run/pairs")
            before = page.locator("#rows tr[data-href]").count()
            time.sleep(1)
            rows = [{"run_id": "live-run", "shard": 7, "source_id": "feedfacefeedface", "kept": True,
                     "variant": "A", "branch": "original", "reason": "kept:A", "instruction": BASE[0][0],
                     "input": "", "output": "A late answer.", "ifd_ppl": 0.5, "rifd_ppl": 0.4}]  # fmt: skip
            Store(str(path)).commit_shard("selected", rows, run_id="live-run", stage="select", shard=7)
            page.wait_for_function(
                f"document.querySelectorAll('#rows tr[data-href]').length > {before}", timeout=30000
            )
            assert page.locator("#live").is_visible()
            assert page.url.endswith("/runs/live-run/pairs")  # no navigation happened
            browser.close()
    finally:
        v.stop()

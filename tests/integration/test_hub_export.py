"""Export end to end: a real Delta store, the export CLI, a local Hub-compatible server, load_dataset.

huggingface_hub and datasets read ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_HOME`` when they
are imported, so every step that talks to the Hub (or loads a dataset) runs in a subprocess with
its own environment (HF_HOME under tmp_path: nothing touches ~/.cache); the server runs in this
process, so the test can inspect everything the client sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard

from storage.store import Store
from storage.test_sets import read_benchmarks
from tasks.curate import CurationConfig, DecontamConfig, curate, to_format
from tests.curate_fixtures import base_rows, planted_rows, write_benchmarks
from tests.hub_server import HubServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_reflectoryTestToken_7f3a9c2e"
CLI = (
    "import typer; from flows.cli.export import register; app = typer.Typer(); "
    "app.callback()(lambda: None); register(app); app()"
)
LOAD = """
import json, sys
from datasets import load_dataset
source, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
result = {}
for name in names:
    dd = load_dataset(source, name)
    result[name] = {split: {"columns": ds.column_names, "rows": ds.to_list()} for split, ds in dd.items()}
if not source.startswith("/"):
    from huggingface_hub import hf_hub_download
    result["README"] = open(hf_hub_download(source, "README.md", repo_type="dataset")).read()
open(out, "w").write(json.dumps(result))
"""


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "hub_storage", TOKEN) as server:
        yield server


@pytest.fixture
def factory(tmp_path: Path) -> Path:
    """A store whose ``selected`` table holds the planted rows at version 1, one more row at 2."""
    store = Store(str(tmp_path / "factory"), create=True)
    store.append("selected", planted_rows())
    late = base_rows(1, start=40)[0] | {"source_id": "late-row"}
    store.append("selected", [late])
    now = datetime.now(UTC)
    store.append("runs", [{"run_id": "run-1", "flow": "recycle", "status": "completed", "started_at": now}])
    assert store.version("selected") == 2
    return tmp_path / "factory"


def env(tmp_path: Path, hub: HubServer | None, offline: bool = False) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    out.update(
        PYTHONPATH=str(ROOT),
        HF_HOME=str(tmp_path / "hf_home"),
        HF_TOKEN=TOKEN,
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
    )
    if hub is not None:
        out["HF_ENDPOINT"] = hub.url
    if offline:
        out["HF_HUB_OFFLINE"] = "1"
    return out


def run(args: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, env=environ, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def export_cli(args: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-c", CLI, "export", *args], environ)


def load(source: str, names: list[str], environ: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"loaded-{len(list(tmp_path.glob('loaded-*')))}.json"
    run([sys.executable, "-c", LOAD, source, str(out), *names], environ)
    return json.loads(out.read_text())


def expected_rows(factory: Path, bench_dir: Path, fmt: str) -> list[dict[str, Any]]:
    """What the export must contain: version 1 curated with the same config, computed here."""
    table = Store(str(factory)).table("selected", version=1)
    config = CurationConfig(format=fmt, decontam=DecontamConfig(benchmarks_dir=str(bench_dir)))  # type: ignore[arg-type]
    result = curate(table, config, read_benchmarks(bench_dir))
    return to_format(result.table, fmt).to_pylist()  # type: ignore[arg-type]


def canon(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in rows)


def assert_no_token(tmp_path: Path, *outputs: subprocess.CompletedProcess[str]) -> int:
    """The token appears in no file under tmp_path (server storage, HF_HOME, store, folders) nor output."""
    needle = TOKEN.encode()
    scanned = 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), f"the token was written to {path}"
            scanned += 1
    for proc in outputs:
        assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
    return scanned


def test_push_to_the_hub_and_load_back(tmp_path: Path, hub: HubServer, factory: Path) -> None:
    bench = write_benchmarks(tmp_path / "benchmarks")
    e = env(tmp_path, hub)
    common = ["--store", str(factory), "--version", "1", "--repo", "org/recycled", "--benchmarks", str(bench)]
    first = export_cli([*common, "--split-test", "0.2", "--seed", "3", "--private"], e)
    second = export_cli([*common, "--config-name", "chat", "--format", "messages"], e)
    assert "exported" in first.stdout and "decontamination" in first.stdout

    loaded = load("org/recycled", ["default", "chat"], e, tmp_path)

    # Same rows and columns as curating version 1 here; the seeded split covers them all once.
    default = loaded["default"]
    assert set(default) == {"train", "test"}
    assert len(default["test"]["rows"]) == round(len(expected_rows(factory, bench, "alpaca")) * 0.2)
    assert default["train"]["columns"] == ["instruction", "input", "output"]
    got = default["train"]["rows"] + default["test"]["rows"]
    assert canon(got) == canon(expected_rows(factory, bench, "alpaca"))
    assert canon(loaded["chat"]["train"]["rows"]) == canon(expected_rows(factory, bench, "messages"))
    assert loaded["chat"]["train"]["columns"] == ["messages"]
    sources = {r["instruction"] for r in got}
    assert not any("late-row" in s for s in sources)  # version 1, not the latest

    # The card: both configs, the statistics, the lineage.
    card = DatasetCard(loaded["README"])
    configs = {c["config_name"]: c for c in card.data.configs}
    assert set(configs) == {"default", "chat"}
    assert {f["split"] for f in configs["default"]["data_files"]} == {"train", "test"}
    assert card.data.license == "other" and card.data.size_categories == ["n<1K"]
    body = card.text
    for needle in (
        "## Config `default`", "## Config `chat`", "at Delta version 1", "`hf:teacher`", "`hf:student`",
        "`reflect_response/v1`", "`run-1` | recycle | completed", "| decontamination |", "| exact dedup |",
        "| near dedup |", "| ifd_ppl | exported |", "Histogram of `ifd_ppl`", "--version 1",
    ):  # fmt: skip
        assert needle in body, needle
    for name in ("koala", "lima", "sinstruct", "vicuna", "wizardlm"):
        assert f"| {name} | 1 | 1 | 1 |" in body

    # The plots of the rows' run are PNG files of the repo, and each config's section links them.
    repo = hub.state.repos[("dataset", "org/recycled")]
    for config in ("default", "chat"):
        for name, title in (("reasons", "Selection reasons"), ("distributions", "IFD and r-IFD by variant")):
            path = f"images/{config}/run-1/{name}.png"
            assert f"![{title}]({path})" in body
            assert hub.state.blob(repo.head.files[path].sha256).startswith(b"\x89PNG\r\n\x1a\n"), path

    # The server got the token on its API calls; it was written nowhere.
    assert repo.private
    assert hub.tokens_seen["valid"] > 0 and hub.tokens_seen["invalid"] == 0
    assert any(p.endswith(".parquet") and e.lfs for p, e in repo.head.files.items())  # went through LFS
    assert assert_no_token(tmp_path, first, second) > 10


def test_to_dir_loads_offline_with_the_same_rows(tmp_path: Path, factory: Path) -> None:
    bench = write_benchmarks(tmp_path / "benchmarks")
    out = tmp_path / "export"
    e = env(tmp_path, None, offline=True)
    common = ["--store", str(factory), "--version", "1", "--to-dir", str(out), "--benchmarks", str(bench)]
    first = export_cli(common, e)
    second = export_cli([*common, "--config-name", "chat", "--format", "messages"], e)
    assert (out / "data" / "train-00000-of-00001.parquet").is_file()
    assert (out / "chat" / "train-00000-of-00001.parquet").is_file()

    loaded = load(str(out), ["default", "chat"], e, tmp_path)
    assert canon(loaded["default"]["train"]["rows"]) == canon(expected_rows(factory, bench, "alpaca"))
    assert canon(loaded["chat"]["train"]["rows"]) == canon(expected_rows(factory, bench, "messages"))
    card = DatasetCard((out / "README.md").read_text())
    assert {c["config_name"] for c in card.data.configs} == {"default", "chat"}
    assert "## Config `chat`" in card.text and "## Config `default`" in card.text
    for path in ("images/default/run-1/reasons.png", "images/chat/run-1/scatter.png"):
        assert (out / path).read_bytes().startswith(b"\x89PNG") and f"]({path})" in card.text
    assert_no_token(tmp_path, first, second)


def test_cli_errors_are_clear(tmp_path: Path, factory: Path) -> None:
    e = env(tmp_path, None, offline=True)
    proc = subprocess.run(
        [sys.executable, "-c", CLI, "export", "--store", str(factory), "--to-dir", str(tmp_path / "o"),
         "--where", "no_such_column > 1", "--no-decontam"],
        env=e, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2 and "bad WHERE clause" in proc.stderr
    e.pop("HF_TOKEN")
    e["HF_HOME"] = str(tmp_path / "empty_home")  # no saved login either
    proc = subprocess.run(
        [sys.executable, "-c", CLI, "export", "--store", str(factory), "--repo", "org/x", "--no-decontam"],
        env=e, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2 and "no Hugging Face token" in proc.stderr


FLOW = """
import json, sys
from prefect.testing.utilities import prefect_test_harness
from flows.export_flow import export_flow
from storage.hub_export import ExportParams
params = ExportParams.model_validate_json(sys.argv[1])
with prefect_test_harness(server_startup_timeout=180):
    summary = export_flow(params)
print("SUMMARY" + json.dumps(summary))
"""


def test_export_flow_in_prefect(tmp_path: Path, factory: Path) -> None:
    from storage.hub_export import ExportParams

    bench = write_benchmarks(tmp_path / "benchmarks")
    params = ExportParams(
        store=str(factory),
        table="selected",
        to_dir=str(tmp_path / "flow_export"),
        curation=CurationConfig(decontam=DecontamConfig(benchmarks_dir=str(bench))),
    )
    e = env(tmp_path, None, offline=True) | {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    proc = run([sys.executable, "-c", FLOW, params.model_dump_json()], e)
    summary = json.loads(proc.stdout.split("SUMMARY", 1)[1])
    assert summary["removed"]["decontamination"] == 5
    assert summary["benchmarks"]["vicuna"]["rows_overlapping"] == 1
    # the latest version (2) has the late row, which survives curation
    assert summary["split_rows"]["train"] == summary["rows_in"] - sum(summary["removed"].values())
    table = pq.read_table(tmp_path / "flow_export" / "data" / "train-00000-of-00001.parquet")
    assert table.num_rows == summary["split_rows"]["train"]

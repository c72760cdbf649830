"""Export a curated table to the Hugging Face Hub, or to a local folder in the Hub's layout.

``run_export(params)`` reads a table version from the store (or takes any Arrow table), curates
it (``tasks.curate``), shapes it (Alpaca, messages, ShareGPT or traces), splits it (seeded), and either
pushes it with ``DatasetDict.push_to_hub`` and then the dataset card, or writes the same files
(``<data_dir>/<split>-00000-of-00001.parquet`` and ``README.md``) to ``to_dir`` so that
``load_dataset(folder)`` loads it offline.

The token comes from the caller, ``HF_TOKEN`` or the huggingface_hub login
(``huggingface_hub.get_token``); it is passed to the API calls only, never logged and never part
of the card, the parameters or any file written.
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.curate import CurationConfig, CurationResult, curate, score_summaries, to_format
from tasks.versions import package_versions

from .dataset_card import Lineage, SectionContext, build_card, curation_json, judge_summary
from .report.card import CardImage, card_images

log = logging.getLogger(__name__)

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
CONFIG_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class ExportError(RuntimeError):
    """The export cannot run as asked (no rows left, no token, bad destination)."""


class ExportParams(BaseModel):
    """One export: the source table version, the curation, the destination."""

    model_config = ConfigDict(extra="forbid")

    store: str = Field("./factory", description="local path or s3://bucket/prefix")
    table: str = Field("selected", description="selected (recycled pairs) or traces")
    version: int | None = Field(None, ge=0, description="Delta version to read; default: the latest")
    run_id: str | None = Field(None, description="only this run's rows; default: every run's")
    repo: str | None = Field(None, description="ORG/NAME on the Hub (also the card's name with to_dir)")
    to_dir: str | None = Field(None, description="write the Hub layout to this folder instead of pushing")
    config_name: str = Field("default", description="the dataset config (subset) this export becomes")
    private: bool = Field(False, description="create the Hub repo as private")
    split_test: float = Field(0.0, ge=0, lt=1, description="fraction of rows in a test split")
    seed: int = Field(0, description="seed of the train/test split")
    license: str = Field("other", description="license id for the card (the source data's license)")
    pretty_name: str | None = None
    plots: bool = Field(
        True, description="put the runs' plots (PNG) in the dataset and show them on the card"
    )
    curation: CurationConfig = Field(default_factory=CurationConfig)

    @model_validator(mode="after")
    def _check(self) -> ExportParams:
        if self.repo is None and self.to_dir is None:
            raise ValueError("give --repo ORG/NAME to push, or --to-dir DIR to write a folder")
        if self.repo is not None and not REPO_ID.match(self.repo):
            raise ValueError(f"repo {self.repo!r} is not ORG/NAME")
        if not CONFIG_NAME.match(self.config_name) or self.config_name == "data":
            raise ValueError(f"config name {self.config_name!r}: letters, digits, '-', '_', '.'; not 'data'")
        return self

    @property
    def data_dir(self) -> str:
        """Where ``push_to_hub`` puts a config's files (``data/`` for the default config)."""
        return "data" if self.config_name == "default" else self.config_name

    @property
    def repo_name(self) -> str:
        return self.repo or f"local/{Path(self.to_dir or 'dataset').name}"


@dataclass
class Prepared:
    """A curated export ready to write: the splits and everything the card states."""

    dataset: Any  # datasets.DatasetDict
    result: CurationResult
    section: SectionContext
    total_rows: int
    images: list[CardImage] = field(default_factory=list)  # the runs' plots, linked from the card


@dataclass
class ExportResult:
    destination: str
    split_rows: dict[str, int]
    curation: CurationResult
    card: str
    commit: str | None = None
    lineage: Lineage = field(default_factory=Lineage)


UNVERSIONED_SCORES = "scoring/v1 (unversioned: a BOS on every text, older named templates)"


# -- reading ---------------------------------------------------------------------------------------
def lineage_of(rows: pa.Table, **where: Any) -> Lineage:
    """Distinct run ids, models and prompt versions of the rows (the columns the table has)."""

    def distinct(col: str) -> list[str]:
        if col not in rows.column_names:
            return []
        return sorted({str(v) for v in rows.column(col).to_pylist() if v not in (None, "")})

    return Lineage(
        run_ids=distinct("run_id"),
        teachers=distinct("teacher"),
        students=distinct("student"),
        prompt_versions=distinct("prompt_version"),
        scoring_versions=_scoring_versions(rows),
        **where,
    )


def _scoring_versions(rows: pa.Table) -> list[str]:
    """The rules that made the rows' scores; rows scored before scores were versioned say so."""
    if "ifd_ppl" not in rows.column_names or rows.num_rows == 0:
        return []
    found = rows.column("scoring_version").to_pylist() if "scoring_version" in rows.column_names else []
    versions = sorted({v for v in found if v})
    if len(found) < rows.num_rows or any(not v for v in found):
        versions.append(UNVERSIONED_SCORES)
    return versions


def read_from_store(
    store: Any, table: str, version: int | None = None, run_id: str | None = None
) -> tuple[pa.Table, Lineage]:
    """A table version from a ``storage.store.Store`` (or its URI) and the lineage of its rows
    (``run_id``: that run's rows only).

    Without ``version`` the latest is read, and the card records which one that was.
    """
    from storage.store import Store

    st = store if isinstance(store, Store) else Store(str(store))
    if version is None:
        version = st.version(table)
        if version is None:
            raise ExportError(f"table {table!r} has not been written in {st.uri}")
    rows = st.table(table, version=version)
    if run_id is not None:
        rows = rows.filter(pc.field("run_id") == run_id)
    if table == "selected" and st.exists("judgements"):
        rows = with_judgements(st, rows)
    if "source_id" in rows.column_names and "messages" not in rows.column_names and st.exists("seeds"):
        rows = with_conversations(st, rows)
    lineage = lineage_of(rows, store=st.uri, table=table, version=version)
    lineage.runs = _runs(st, lineage.run_ids)
    return rows, lineage


JUDGE_COLUMNS = {"rating": "judge_rating", "outcome": "judge_outcome", "judge": "judge_model"}


def with_judgements(st: Any, rows: pa.Table) -> pa.Table:
    """Selected rows with their judgement (NULL where the run had no judge stage): the kept variant's
    rating, the reflected response's outcome against the original, and the judge."""
    judged = st.table("judgements", columns=["run_id", "source_id", *JUDGE_COLUMNS])
    judged = judged.rename_columns(["run_id", "source_id", *JUDGE_COLUMNS.values()])
    keep = [c for c in rows.column_names if c not in JUDGE_COLUMNS.values()]
    order = "__row"  # a join does not keep the order of the rows: put it back
    left = rows.select(keep).append_column(order, pa.array(range(rows.num_rows), pa.int64()))
    joined = left.join(judged, keys=["run_id", "source_id"], join_type="left outer")
    return joined.sort_by(order).drop_columns([order])


def with_conversations(st: Any, rows: pa.Table) -> pa.Table:
    """Rows with their seed's whole conversation (``seeds.messages``, NULL where the seed is not in
    the store), so a chat export writes a conversation's history before the row's own exchange."""
    ids = rows.column("source_id")
    seeds = st.table("seeds", columns=["source_id", "messages"])
    seeds = seeds.filter(pc.is_in(seeds.column("source_id"), value_set=pc.unique(ids)))
    at = pc.index_in(ids, value_set=seeds.column("source_id"))  # NULL where there is no seed
    return rows.append_column("messages", seeds.column("messages").take(at))


def _runs(st: Any, run_ids: list[str]) -> list[dict[str, Any]]:
    if not run_ids or not st.exists("runs"):
        return []
    from storage.runs import LATEST_RUNS

    runs = st.sql(
        f"SELECT run_id, flow, status, started_at FROM ({LATEST_RUNS}) AS runs "
        "WHERE list_contains(?, run_id) ORDER BY run_id",
        params=[sorted(set(run_ids))],
    )
    names = runs.columns
    return [
        {k: ("" if v is None else str(v)) for k, v in zip(names, r, strict=True)} for r in runs.fetchall()
    ]


def load_benchmarks(config: CurationConfig) -> list[Any]:
    """The benchmark sets decontamination checks against ([] when it is disabled).

    A relative folder is looked up in the working directory, then in the package's ``data/``.
    """
    from storage.test_sets import read_benchmarks

    if not config.decontam.enabled:
        return []
    folder = Path(config.decontam.benchmarks_dir).expanduser()
    if not folder.is_absolute() and not folder.exists() and (PACKAGE_ROOT / folder).is_dir():
        folder = PACKAGE_ROOT / folder
    return read_benchmarks(folder)


# -- preparing -------------------------------------------------------------------------------------
def prepare(
    params: ExportParams,
    table: pa.Table,
    lineage: Lineage,
    benchmarks: list[Any] | None = None,
    images: list[CardImage] | None = None,
) -> Prepared:
    """Curate, format and split ``table``; everything but the writing."""
    from datasets import Dataset, DatasetDict

    config = params.curation
    result = curate(table, config, load_benchmarks(config) if benchmarks is None else benchmarks)
    if result.rows_out == 0:
        steps = "; ".join(f"{r.name}: -{r.removed}" for r in result.reports)
        raise ExportError(f"no rows left to export ({result.rows_in} read; {steps})")
    system_prompt, prompt_version = (None, None)
    if config.format == "traces":
        from tasks.prompts import render, version

        system_prompt, prompt_version = render("trace_system"), version("trace_system")
    exported = to_format(
        result.table, config.format, system_prompt=system_prompt, extra_columns=config.extra_columns
    )
    full = Dataset(exported)
    if params.split_test > 0:
        n_test = max(1, round(full.num_rows * params.split_test))
        if n_test >= full.num_rows:
            raise ExportError(f"{full.num_rows} rows are too few for a {params.split_test:g} test split")
        parts = full.train_test_split(test_size=n_test, seed=params.seed, shuffle=True)
        # Materialise the shuffled splits (no indices mapping), so sizes and files match.
        dd = DatasetDict(train=parts["train"].flatten_indices(), test=parts["test"].flatten_indices())
    else:
        dd = DatasetDict(train=full)
    split_rows = {name: ds.num_rows for name, ds in dd.items()}
    section = SectionContext(
        repo=params.repo_name,
        config_name=params.config_name,
        format=config.format,
        created_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        split_rows=split_rows,
        lineage=lineage,
        result=result,
        input_scores=score_summaries(table),
        output_scores=score_summaries(result.table),
        curation_json=curation_json(config),
        command=reproduce_command(params, lineage.version),
        versions=_versions(),
        system_prompt_version=prompt_version,
        plots=[{"title": i.title, "path": i.path} for i in images or []],
        judge=judge_summary(result.table),
        multi_turn=multi_turn_rows(exported),
    )
    return Prepared(dd, result, section, sum(split_rows.values()), list(images or []))


def multi_turn_rows(exported: Any) -> int:
    """Rows of a chat export with more than one assistant turn (0 for the Alpaca columns)."""
    for column, role_key, answer in (("messages", "role", "assistant"), ("conversations", "from", "gpt")):
        if column in exported.column_names:
            return sum(
                1
                for convo in exported.column(column).to_pylist()
                if sum(1 for m in convo if m[role_key] == answer) > 1
            )
    return 0


def reproduce_command(params: ExportParams, version: int | None) -> str:
    """The command line that redoes this export (with ``curation.json`` holding the curation)."""
    args = ["reflectory", "export", "--store", params.store, "--table", params.table]
    if version is not None:
        args += ["--version", str(version)]
    if params.repo:
        args += ["--repo", params.repo]
    if params.to_dir:
        args += ["--to-dir", params.to_dir]
    args += ["--config-name", params.config_name]
    if params.private:
        args.append("--private")
    args += [
        "--split-test",
        f"{params.split_test:g}",
        "--seed",
        str(params.seed),
        "--license",
        params.license,
    ]
    args += ["--curation-config", "curation.json"]
    return " ".join(shlex.quote(a) for a in args)


def _versions() -> dict[str, str]:
    return package_versions(("reflectory", "datasets", "huggingface_hub", "duckdb", "pyarrow", "datasketch"))


# -- writing ---------------------------------------------------------------------------------------
def resolve_token(token: str | None = None) -> str:
    """The caller's token, else ``HF_TOKEN`` or the saved login; an error when there is none."""
    from huggingface_hub import get_token

    found = token or get_token()
    if not found:
        raise ExportError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (needed to push)")
    return found


def push(prepared: Prepared, params: ExportParams, token: str) -> ExportResult:
    """``push_to_hub`` the splits, then the card, in a commit on top of the data commit."""
    from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi
    from huggingface_hub.errors import EntryNotFoundError

    assert params.repo is not None
    info = prepared.dataset.push_to_hub(
        params.repo,
        config_name=params.config_name,
        private=params.private,
        token=token,
        commit_message=f"reflectory export: config {params.config_name}",
    )
    api = HfApi(token=token)
    try:
        path = api.hf_hub_download(params.repo, "README.md", repo_type="dataset", revision=info.oid)
        previous = Path(path).read_text(encoding="utf-8")
    except EntryNotFoundError:
        previous = None
    card = _card(prepared, params, previous, None)
    DatasetCard(card).validate(repo_type="dataset")
    operations = [CommitOperationAdd("README.md", card.encode("utf-8"))]
    operations += [CommitOperationAdd(i.path, i.png) for i in prepared.images]
    commit = api.create_commit(
        params.repo,
        operations,
        repo_type="dataset",
        commit_message=f"reflectory export: dataset card and plots for config {params.config_name}",
        parent_commit=info.oid,  # fails loudly if someone committed in between
    )
    log.info("pushed %s (config %s) to %s", prepared.section.split_rows, params.config_name, params.repo)
    return ExportResult(
        destination=str(info.repo_url),
        split_rows=prepared.section.split_rows,
        curation=prepared.result,
        card=card,
        commit=commit.oid or info.oid,
        lineage=prepared.section.lineage,
    )


def write_dir(prepared: Prepared, params: ExportParams) -> ExportResult:
    """The files ``push_to_hub`` would create, in a local folder (a second config adds to it)."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    assert params.to_dir is not None
    root = Path(params.to_dir).expanduser()
    data_dir = root / params.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob("*.parquet"):  # the Hub push replaces a config's files too
        old.unlink()
    dd = prepared.dataset
    info = DatasetInfo(
        config_name=params.config_name,
        features=next(iter(dd.values())).features,
        splits=SplitDict(),
        download_size=0,
        dataset_size=0,
    )
    for split, ds in dd.items():
        path = data_dir / f"{split}-00000-of-00001.parquet"
        ds.to_parquet(str(path))
        num_bytes = ds.data.nbytes
        info.splits.add(SplitInfo(name=split, num_bytes=num_bytes, num_examples=ds.num_rows))
        info.download_size += path.stat().st_size
        info.dataset_size += num_bytes
    info.size_in_bytes = info.download_size + info.dataset_size
    readme = root / "README.md"
    previous = readme.read_text(encoding="utf-8") if readme.exists() else None
    data = DatasetCard(previous).data if previous else DatasetCardData()
    DatasetInfosDict({params.config_name: info}).to_dataset_card_data(data)
    files = [{"split": s, "path": f"{params.data_dir}/{s}-*"} for s in dd]
    MetadataConfigs({params.config_name: {"data_files": files}}).to_dataset_card_data(data)
    card = _card(prepared, params, previous, data)
    readme.write_text(card, encoding="utf-8")
    for image in prepared.images:
        (root / image.path).parent.mkdir(parents=True, exist_ok=True)
        (root / image.path).write_bytes(image.png)
    log.info("wrote %s (config %s) to %s", prepared.section.split_rows, params.config_name, root)
    return ExportResult(
        destination=str(root),
        split_rows=prepared.section.split_rows,
        curation=prepared.result,
        card=card,
        lineage=prepared.section.lineage,
    )


def _card(prepared: Prepared, params: ExportParams, previous: str | None, data: Any) -> str:
    card = build_card(
        previous,
        prepared.section,
        pretty_name=params.pretty_name or params.repo_name.split("/")[-1],
        license=params.license,
        table=params.table,
        total_rows=prepared.total_rows,
        card_data=data,
    )
    return str(card)


# -- the one entry point ---------------------------------------------------------------------------
def run_export(
    params: ExportParams,
    *,
    table: pa.Table | None = None,
    lineage: Lineage | None = None,
    token: str | None = None,
    benchmarks: list[Any] | None = None,
    run_rows: dict[str, dict[str, Any]] | None = None,
) -> ExportResult:
    """Read (unless ``table`` is given), curate, and push or write. The CLI and the flow call this.

    The card shows the plots of the exported rows' runs, read from the store (``run_rows``: rows of
    runs not recorded yet, i.e. the flow's own)."""
    if table is None:
        table, lineage = read_from_store(params.store, params.table, params.version, params.run_id)
    elif lineage is None:
        lineage = lineage_of(table, table=params.table, version=params.version)
    assert lineage is not None
    hub_token = resolve_token(token) if params.to_dir is None else None  # fail before the work
    images: list[CardImage] = []
    if params.plots:
        from storage.store import Store

        images = card_images(Store(params.store), lineage.run_ids, params.config_name, run_rows)
    prepared = prepare(params, table, lineage, benchmarks, images)
    if params.to_dir is not None:
        return write_dir(prepared, params)
    assert hub_token is not None
    return push(prepared, params, hub_token)

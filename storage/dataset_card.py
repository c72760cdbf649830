"""The dataset card of an export: YAML metadata plus a body rendered with jinja2.

A repository can hold several configs (one per export with another ``--config-name``). The body
keeps one section per config between ``<!-- reflectory:config NAME -->`` markers: an export
re-renders its own section and keeps the others verbatim, and the YAML keeps every config's
``configs``/``dataset_info`` entry, so a second export adds to the card instead of replacing it.
Nothing here ever sees the Hub token.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from tasks.curate.pipeline import CurationResult
from tasks.curate.stats import QUANTILES, ScoreSummary, size_category
from tasks.judge.verdict import Tally

SECTION = re.compile(
    r"<!-- reflectory:config (?P<name>\S+) -->\n(?P<text>.*?)\n<!-- /reflectory:config (?P=name) -->",
    re.DOTALL,
)
SIZE_ORDER = ["n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
              "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T"]  # fmt: skip
DESCRIPTIONS = {
    "selected": (
        "Instruction-tuning pairs recycled with Selective Reflection-Tuning (Li et al., 2024): a teacher "
        "model critiqued and rewrote each (instruction, response) pair, a smaller student model scored the "
        "original and reflected variants with IFD and reversed IFD (r-IFD) from its own token "
        "log-probabilities, and a decision tree kept, per pair, the variant the student found most useful "
        "(IFD < 1 and r-IFD < 1)."
    ),
    "traces": (
        "Reflection traces: a teacher model answered each question reasoning inside `<thinking>`, correcting "
        "itself in `<reflection>`, and answering in `<output>`. Traces were parsed and validated, verified "
        "against the gold answer where the input had one, and scored by a student model (IFD)."
    ),
}


@dataclass
class Lineage:
    """Where the exported rows came from."""

    store: str = "n/a"
    table: str = "n/a"
    version: int | None = None
    run_ids: list[str] = field(default_factory=list)
    teachers: list[str] = field(default_factory=list)
    students: list[str] = field(default_factory=list)
    prompt_versions: list[str] = field(default_factory=list)
    scoring_versions: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)  # run_id, flow, status, started_at


@dataclass
class SectionContext:
    """Everything one config's section states."""

    repo: str
    config_name: str
    format: str
    created_at: str
    split_rows: dict[str, int]
    lineage: Lineage
    result: CurationResult
    input_scores: list[ScoreSummary]
    output_scores: list[ScoreSummary]
    curation_json: str
    command: str
    versions: dict[str, str]
    system_prompt_version: str | None = None
    plots: list[dict[str, str]] = field(default_factory=list)  # title, path in the repo
    judge: dict[str, Any] | None = None  # judge_summary of the exported rows
    multi_turn: int = 0  # exported rows of more than one exchange (messages format)


def judge_summary(table: Any) -> dict[str, Any] | None:
    """What the judge said of the exported rows (an Arrow table with the export's judge columns):
    the reflected response's outcomes against the original, the kept variants' ratings, the judges.
    None when no exported row was judged."""
    if "judge_outcome" not in table.column_names:
        return None
    outcomes = [o for o in table.column("judge_outcome").to_pylist() if o is not None]
    if not outcomes:
        return None
    ratings = [r for r in table.column("judge_rating").to_pylist() if r is not None]
    numbers = Tally.of(outcomes).as_dict()
    score = numbers["winning_score"]
    return {
        **numbers,
        "winning_score": "n/a" if score is None else f"{score:.3f}",
        "rated": len(ratings),
        "mean_rating": f"{sum(ratings) / len(ratings):.2f}" if ratings else "n/a",
        "models": sorted({m for m in table.column("judge_model").to_pylist() if m}),
    }


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def _template_context(s: SectionContext) -> dict[str, Any]:
    decontam = next((r for r in s.result.reports if r.name == "decontamination"), None)
    scores = []
    for rows, summaries in (("read", s.input_scores), ("exported", s.output_scores)):
        for sm in summaries:
            q = [_fmt(sm.quantiles.get(p, math.nan)) for p in QUANTILES]
            scores.append({"column": sm.column, "rows": rows, "count": sm.count, "missing": sm.missing,
                           "mean": _fmt(sm.mean), "q": q})  # fmt: skip
    return {
        "repo": s.repo,
        "config_name": s.config_name,
        "format": s.format,
        "created_at": s.created_at,
        "split_rows": s.split_rows,
        "lineage": asdict(s.lineage),
        "rows_in": s.result.rows_in,
        "rows_out": s.result.rows_out,
        "reports": [r.as_dict() for r in s.result.reports],
        "skipped": s.result.skipped,
        "decontam": None if decontam is None else decontam.details,
        "decontam_skipped": next((x for x in s.result.skipped if x.startswith("decontamination")), None),
        "scores": scores,
        "histograms": [
            {"column": sm.column, "histogram": sm.histogram} for sm in s.output_scores if sm.count
        ],
        "curation_json": s.curation_json,
        "command": s.command,
        "versions": s.versions,
        "system_prompt_version": s.system_prompt_version,
        "plots": s.plots,
        "judge": s.judge,
        "multi_turn": s.multi_turn,
    }


@cache
def _env() -> Environment:
    return Environment(
        loader=PackageLoader("storage", "templates"),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=False,
    )


def existing_sections(body: str) -> dict[str, str]:
    return {m.group("name"): m.group("text") for m in SECTION.finditer(body)}


def render_body(
    *, pretty_name: str, description: str, section: SectionContext, previous_body: str | None
) -> str:
    sections: list[dict[str, Any]] = [
        {"name": name, "text": text, "ctx": None}
        for name, text in existing_sections(previous_body or "").items()
        if name != section.config_name
    ]
    sections.append({"name": section.config_name, "text": None, "ctx": _template_context(section)})
    sections.sort(key=lambda x: x["name"])
    body = (
        _env()
        .get_template("dataset_card.md.jinja")
        .render(pretty_name=pretty_name, description=description, sections=sections)
    )
    return re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"


def build_card(
    previous: str | None,
    section: SectionContext,
    *,
    pretty_name: str,
    license: str,
    table: str,
    total_rows: int,
    card_data: Any | None = None,
) -> Any:
    """The full card (``huggingface_hub.DatasetCard``): the previous card's metadata (configs,
    dataset_info) updated, and the body with this config's section (re-)rendered."""
    from huggingface_hub import DatasetCard, DatasetCardData

    old = DatasetCard(previous) if previous else None
    data: Any = card_data if card_data is not None else (old.data if old is not None else DatasetCardData())
    data.license = license
    data.pretty_name = pretty_name
    data.task_categories = sorted(set(data.get("task_categories") or []) | {"text-generation"})
    data.language = data.get("language") or ["en"]
    tags = set(data.get("tags") or []) | {"reflectory", "synthetic"}
    tags |= {"selective-reflection-tuning"} if table == "selected" else {"reflection-traces"}
    data.tags = sorted(tags)
    sizes = [s for s in (data.get("size_categories") or []) if s in SIZE_ORDER] + [size_category(total_rows)]
    data.size_categories = [max(sizes, key=SIZE_ORDER.index)]
    body = render_body(
        pretty_name=pretty_name,
        description=DESCRIPTIONS.get(table, f"Rows of the Reflectory store's `{table}` table."),
        section=section,
        previous_body=old.text if old is not None else None,
    )
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def curation_json(config: Any) -> str:
    return json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True)

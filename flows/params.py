"""Typed flow parameters: the CLI, Python callers and the Prefect UI's form all use these models.

A model role and sampling are one model each (``tasks.engine.ModelRole``, ``tasks.engine.Sampling``),
shared with the engine pools; the field descriptions are what the Prefect UI shows a user.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from storage.hub_export import ExportParams
from tasks.engine import ModelRole, Sampling
from tasks.teacher.forms import ReplyForm, form_note, instruction_form, response_form, trace_form

DEFAULT_MODEL = "vllm:smollm2"  # the hf engine runs it where vLLM is not installed


class RunParams(BaseModel):
    """What every factory flow takes."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(
        ...,
        description="The data: a JSONL, JSON, Parquet or CSV file, a folder of them, or a Hugging Face "
        "dataset id.",
    )
    store: str = Field("./factory", description="Where results go: a local folder or s3://bucket/prefix.")
    run_id: str | None = Field(
        None,
        description="Name the run to resume it: a rerun with the same id computes only the missing shards.",
    )
    teacher: ModelRole = Field(
        default_factory=lambda: ModelRole(spec=DEFAULT_MODEL),
        description="The model that writes reflections.",
    )
    student: ModelRole = Field(
        default_factory=lambda: ModelRole(spec=DEFAULT_MODEL),
        description="The model that scores IFD and r-IFD.",
    )
    sampling: Sampling = Field(default_factory=Sampling, description="How the teacher samples its replies.")
    constrained: bool = Field(
        True,
        description="Constrain the teacher's replies to their form (JSON for reflections, the Reflection "
        "format for traces), each part bounded so a reply ends within max_tokens. Off: free text, parsed.",
    )
    shard_size: int = Field(64, ge=1, description="Pairs per shard: the unit of work, retry and commit.")
    limit: int | None = Field(None, ge=1, description="Use only the first N rows of the input.")
    ray_address: str | None = Field(
        None,
        description="Empty: the Ray head running on this machine (ray start --head), else a local Ray "
        "started for this run; 'local' for a Ray of this run's own; 'auto' or ray://host:10001 for a "
        "cluster.",
    )
    report: bool = Field(
        True, description="Write the run's report page (plots, config, lineage) at the end; see report_dir."
    )
    report_dir: str | None = Field(
        None, description="Folder of the report page. Default: reports/ in a local store, else ./reports."
    )
    offline: bool = Field(
        False,
        description="Never contact the Hugging Face Hub: models must be local folders or already cached.",
    )
    export: ExportParams | None = Field(
        None,
        description="Last stage: curate this run's rows and push them to the Hub (or write a folder); "
        "the store and table are the run's own.",
    )

    def reply_forms(self) -> tuple[ReplyForm, ...]:
        """The forms the teacher's replies take in this flow (constrained or not)."""
        max_tokens = self.sampling.max_tokens
        return (instruction_form(max_tokens), response_form(max_tokens))

    def form_notes(self) -> list[str]:
        """A line per constrained form that ``max_tokens`` leaves no room for (its replies: free text)."""
        if not self.constrained:
            return []
        return [note for form in self.reply_forms() if (note := form_note(form))]


class RecycleParams(RunParams):
    """Selective Reflection-Tuning: reflect, score the four variants, select."""


class TracesParams(RunParams):
    """Reflection traces: generate, validate, verify against gold, score."""

    def reply_forms(self) -> tuple[ReplyForm, ...]:
        return (trace_form(self.sampling.max_tokens),)

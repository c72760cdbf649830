"""Typed flow parameters: the CLI, Python callers and the Prefect UI's form all use these models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from storage.hub_export import ExportParams

DEFAULT_MODEL = "hf:smollm2"


class SamplingParams(BaseModel):
    """Teacher sampling (maps onto ``infra.engines.base.Sampling``)."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = 0


class ModelParams(BaseModel):
    """One model role: engine spec, engine options, replicas and resources per replica."""

    model_config = ConfigDict(extra="forbid")

    spec: str = Field(DEFAULT_MODEL, description="hf:PATH_OR_ID, vllm:PATH_OR_ID or openai:MODEL@BASE_URL")
    options: dict[str, Any] = Field(
        default_factory=dict, description="engine options (dtype, max_model_len, ...)"
    )
    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1, description="requests per batch sent to one replica")


class RunParams(BaseModel):
    """What every factory flow takes."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(..., description="JSONL, JSON, Parquet, CSV, a folder, or a Hugging Face dataset")
    store: str = Field("./factory", description="local path or s3://bucket/prefix")
    run_id: str | None = Field(None, description="reuse to resume a run: only missing shards are computed")
    teacher: ModelParams = Field(default_factory=ModelParams)
    student: ModelParams = Field(default_factory=ModelParams)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    shard_size: int = Field(64, ge=1, description="pairs per shard (the unit of work, retry and commit)")
    limit: int | None = Field(None, ge=1, description="use only the first N pairs of the input")
    ray_address: str | None = Field(None, description="None: local Ray; 'auto' or 'ray://host:10001'")
    persistent_replicas: bool = Field(False, description="keep model replicas loaded on the Ray head")
    export: ExportParams | None = Field(
        None,
        description="last stage: curate this run's rows and push them (or write a folder); "
        "the store and table are the run's own",
    )


class RecycleParams(RunParams):
    """Selective Reflection-Tuning: reflect, score the four variants, select."""


class TracesParams(RunParams):
    """Reflection traces: generate, validate, verify against gold, score."""

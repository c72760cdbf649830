"""Deployments of the factory flows, from a config file: which flow, when, with which parameters.

The parameters of each deployment are validated against the flow's own model (``RecycleParams``,
``TracesParams``, ``ExportParams``) when the file is read, so a typo fails ``reflectory serve`` with
the deployment's name, not a scheduled run at 3 a.m.
"""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.schedules import Schedule

FlowName = Literal["recycle", "traces", "export"]

# flow name -> (module:flow object, module:parameters model); imported only when used.
FLOWS: dict[str, tuple[str, str]] = {
    "recycle": ("flows.recycle:recycle_flow", "flows.params:RecycleParams"),
    "traces": ("flows.traces:traces_flow", "flows.params:TracesParams"),
    "export": ("flows.export_flow:export_flow", "storage.hub_export:ExportParams"),
}


class DeploymentConfig(BaseModel):
    """One deployment: a flow, an optional schedule (cron or interval), and default parameters."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, pattern=r"^[\w.-]+$")
    flow: FlowName
    cron: str | None = Field(None, description="cron expression, e.g. '0 3 * * *'")
    interval_seconds: int | None = Field(None, gt=0)
    timezone: str | None = Field(None, description="IANA zone of the cron schedule, e.g. 'Europe/Paris'")
    parameters: dict[str, Any] = Field(default_factory=dict, description="the flow's parameters model")
    paused: bool = False
    tags: list[str] = Field(default_factory=list)
    description: str | None = None

    @model_validator(mode="after")
    def _schedule(self) -> DeploymentConfig:
        if self.cron is not None and self.interval_seconds is not None:
            raise ValueError("give cron or interval_seconds, not both")
        if self.timezone is not None and self.cron is None:
            raise ValueError("timezone applies to a cron schedule only")
        self.schedule()  # a bad cron expression or zone raises here
        return self

    def schedule(self) -> Schedule | None:
        """The Prefect schedule, or None for a deployment run on demand only."""
        from prefect.schedules import Cron, Interval

        if self.cron is not None:
            return Cron(self.cron, timezone=self.timezone)
        if self.interval_seconds is not None:
            return Interval(timedelta(seconds=self.interval_seconds))
        return None

    @property
    def schedule_text(self) -> str:
        if self.cron:
            return f"cron {self.cron}" + (f" ({self.timezone})" if self.timezone else "")
        if self.interval_seconds:
            return f"every {timedelta(seconds=self.interval_seconds)}"
        return "on demand"


class ServeConfig(BaseModel):
    """What ``reflectory serve`` serves."""

    model_config = ConfigDict(extra="forbid")

    deployments: list[DeploymentConfig] = Field(..., min_length=1)
    limit: int | None = Field(None, ge=1, description="flow runs at once in this serve process")

    @model_validator(mode="after")
    def _unique(self) -> ServeConfig:
        seen: set[tuple[str, str]] = set()
        for d in self.deployments:
            if (d.flow, d.name) in seen:
                raise ValueError(f"deployment {d.flow}/{d.name} is defined twice")
            seen.add((d.flow, d.name))
        return self


class DeploymentError(ValueError):
    """A deployment config that cannot be served; names the deployment and the field."""


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(import_module(module), name)


def load_serve_config(data: dict[str, Any]) -> ServeConfig:
    """Validate the file's structure, then every deployment's parameters against its flow's model."""
    try:
        config = ServeConfig(**data)
    except ValidationError as exc:
        raise DeploymentError(f"bad serve config: {_errors(exc)}") from exc
    for d in config.deployments:
        model = _load(FLOWS[d.flow][1])
        try:
            model(**d.parameters)
        except ValidationError as exc:
            raise DeploymentError(f"deployment {d.flow}/{d.name}: bad parameters: {_errors(exc)}") from exc
    return config


def flow_parameters(d: DeploymentConfig) -> dict[str, Any]:
    """The deployment's default parameters as the flow takes them (one ``params`` model)."""
    model = _load(FLOWS[d.flow][1])
    return {"params": model(**d.parameters).model_dump(mode="json", exclude_unset=True)}


def to_deployments(config: ServeConfig) -> list[RunnerDeployment]:
    """Prefect deployments of the configured flows, ready for ``prefect.serve``."""
    out = []
    for d in config.deployments:
        flow = _load(FLOWS[d.flow][0])
        schedule = d.schedule()
        out.append(
            flow.to_deployment(
                name=d.name,
                schedules=[schedule] if schedule else None,
                paused=d.paused,
                parameters=flow_parameters(d),
                tags=["reflectory", *d.tags],
                description=d.description or flow.description,
            )
        )
    return out


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())

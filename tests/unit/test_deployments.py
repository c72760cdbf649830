"""Deployment configs: schedules, and parameters checked against the flow's model when read."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.config_files import read_config
from flows.deployments import DeploymentError, flow_parameters, load_serve_config, to_deployments

ROOT = Path(__file__).resolve().parents[2]


def config(**deployment: object) -> dict[str, object]:
    return {
        "deployments": [{"name": "d", "flow": "recycle", "parameters": {"input": "x.jsonl"}, **deployment}]
    }


def test_the_bundled_example_is_valid() -> None:
    loaded = load_serve_config(read_config(ROOT / "infra" / "deployments.yaml"))
    assert {d.flow for d in loaded.deployments} == {"recycle", "traces", "export"}


def test_cron_interval_and_on_demand_schedules() -> None:
    cron = load_serve_config(config(cron="0 3 * * *", timezone="Europe/Paris")).deployments[0]
    every = load_serve_config(config(interval_seconds=3600)).deployments[0]
    manual = load_serve_config(config()).deployments[0]
    assert cron.schedule().cron == "0 3 * * *" and cron.schedule().timezone == "Europe/Paris"
    assert every.schedule().interval.total_seconds() == 3600 and every.schedule_text == "every 1:00:00"
    assert manual.schedule() is None and manual.schedule_text == "on demand"


def test_deployments_carry_validated_parameters_and_tags() -> None:
    loaded = load_serve_config(config(cron="0 3 * * *", tags=["nightly"], paused=True))
    [deployment] = to_deployments(loaded)
    assert deployment.name == "d" and deployment.paused
    assert deployment.parameters == {"params": {"input": "x.jsonl"}}
    assert set(deployment.tags) == {"reflectory", "nightly"}
    assert deployment.schedules[0].schedule.cron == "0 3 * * *"
    assert flow_parameters(loaded.deployments[0]) == {"params": {"input": "x.jsonl"}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            config(parameters={"input": "x", "shard_size": 0}),
            "deployment recycle/d: bad parameters: shard_size",
        ),
        (config(parameters={}), "deployment recycle/d: bad parameters: input: Field required"),
        (config(parameters={"input": "x", "teacher": {"spce": "hf:x"}}), "teacher.spce: Extra inputs"),
        (config(flow="distill"), "deployments.0.flow"),
        (config(cron="every day"), "Invalid cron string"),
        (config(cron="0 3 * * *", interval_seconds=60), "cron or interval_seconds, not both"),
        (config(interval_seconds=60, timezone="UTC"), "timezone applies to a cron schedule only"),
        ({"deployments": []}, "deployments: List should have at least 1 item"),
        ({"deployments": [config()["deployments"][0]] * 2}, "recycle/d is defined twice"),  # type: ignore[index]
        (
            {"deployments": [{"name": "e", "flow": "export", "parameters": {"table": "selected"}}]},
            "deployment export/e: bad parameters: (top): Value error, give --repo",
        ),
    ],
)
def test_bad_configs_name_the_deployment_and_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(DeploymentError) as info:
        load_serve_config(data)
    assert message in str(info.value)

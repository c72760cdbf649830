"""Shared fixtures: the tiny local model, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Timing-based checks flake on a shared 2-core machine; the properties are what matter.
settings.register_profile("reflectory", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("reflectory")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infra.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")

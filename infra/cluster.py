"""Connect to Ray: a local instance started on demand, or an existing cluster, with a time limit.

Why the time limit: ``ray.init`` retries forever when ``RAY_ADDRESS`` or a stale cluster file points
at a dead head (DESIGN.md section 5); a data factory should say so and stop.
"""

from __future__ import annotations

import os
import threading
from typing import Any

NAMESPACE = "reflectory"


class ClusterError(RuntimeError):
    """Ray could not be reached or started."""


def connect(
    address: str | None = None, *, timeout_s: float = 120.0, dashboard: bool = False
) -> dict[str, Any]:
    """Initialise Ray once per process; return the cluster's resources.

    ``address``: None or "local" starts a local Ray (dashboard off unless asked, bound to
    127.0.0.1); "auto" or "ray://host:port" joins an existing cluster.
    """
    import ray

    if ray.is_initialized():
        return dict(ray.cluster_resources())
    kwargs: dict[str, Any] = {
        "namespace": NAMESPACE,
        "ignore_reinit_error": True,
        "log_to_driver": False,
        "configure_logging": True,
        "logging_level": "WARNING",
    }
    if address in (None, "", "local"):
        kwargs.update(
            address="local",
            num_cpus=os.cpu_count(),
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
        )
    else:
        kwargs["address"] = address
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            ray.init(**kwargs)
            box["ok"] = True
        except Exception as exc:  # reported in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    where = address or "a local Ray instance"
    if thread.is_alive():
        raise ClusterError(
            f"could not reach Ray at {where} within {timeout_s:.0f} s; check --ray-address, RAY_ADDRESS "
            "and stale files under /tmp/ray (or start a head with `ray start --head`)"
        )
    if "error" in box:
        raise ClusterError(f"could not start or join Ray at {where}: {box['error']}") from box["error"]
    return dict(ray.cluster_resources())


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()

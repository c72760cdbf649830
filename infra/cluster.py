"""Connect to Ray: a local instance started on demand, or an existing cluster, with a time limit.

Why the check: ``ray.init`` retries forever when ``RAY_ADDRESS`` or a stale cluster file points at
a dead head (docs/architecture.md); a data factory should say so and stop.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from .ray_auth import AuthError, check_cluster_token, ensure_local_token

NAMESPACE = "reflectory"


class ClusterError(RuntimeError):
    """Ray could not be reached or started."""


def connect(
    address: str | None = None, *, timeout_s: float = 10.0, dashboard: bool = False
) -> dict[str, Any]:
    """Initialise Ray once per process; return the cluster's resources.

    ``address``: None joins the Ray that ``ray start --head`` runs on this machine when there is
    one (no start-up wait, and its persistent replicas keep their models), else starts a local Ray;
    "local" always starts a local Ray of this process (dashboard off unless asked, bound to
    127.0.0.1); "auto", "host:port" or "ray://host:port" joins an existing cluster, after checking
    within ``timeout_s`` that its head answers (``ray.init`` itself retries forever). Ray must be
    initialised from the main thread: a local instance started from another thread never comes up.
    """
    import ray

    if ray.is_initialized():
        return dict(ray.cluster_resources())
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "ignore_reinit_error": True, "log_to_driver": False}
    if address in (None, "") and (running := running_local_head()):
        address = running
    notes: list[str] = []
    if address in (None, "", "local"):
        ensure_local_token()  # token authentication on, with Ray's own token
        kwargs.update(
            address="local", num_cpus=os.cpu_count(), include_dashboard=dashboard, dashboard_host="127.0.0.1"
        )
    else:
        head = check_address(address, timeout_s=timeout_s)
        if not address.startswith("ray://"):  # a GCS address: ask it whether it takes this run's token
            try:
                if check_cluster_token(head, address, timeout_s) == "open":
                    notes.append(
                        "warning: this Ray cluster has token authentication off: anyone who reaches its "
                        "ports can run code on it (start it with RAY_AUTH_MODE=token)"
                    )
            except AuthError as exc:
                raise ClusterError(str(exc)) from None
            except Exception as exc:
                notes.append(f"note: could not check the cluster's token ({type(exc).__name__})")
        kwargs["address"] = address
    try:
        context = _init(ray, kwargs)
    except Exception as exc:
        raise ClusterError(f"could not start or join Ray at {address or 'a local instance'}: {exc}") from exc
    gcs = getattr(context, "address_info", {}).get("gcs_address", "")
    _WHERE[:] = [
        (
            f"started a local Ray ({gcs}; token authentication on; Ray's own servers listen on every "
            "interface, its dashboard and this run's Prefect API on 127.0.0.1 only)"
            if kwargs["address"] == "local"
            else f"joined the Ray head at {gcs or address}"
        ),
        *notes,
    ]
    return dict(ray.cluster_resources())


def _init(ray: Any, kwargs: dict[str, Any]) -> Any:
    """``ray.init``; a local start is tried once more when its raylet missed Ray's fixed 30 s to
    register (a busy small machine), after cleaning up the half-started instance."""
    try:
        return ray.init(**kwargs)
    except Exception as exc:
        if kwargs.get("address") != "local" or "timed out during startup" not in str(exc):
            raise
        ray.shutdown()
        return ray.init(**kwargs)


def where() -> str:
    """Which Ray this process uses, in words (after ``connect``), with any warning on its own line."""
    return "\n".join(_WHERE) if _WHERE else "Ray is not connected"


_WHERE: list[str] = []


def running_local_head(timeout_s: float = 1.0) -> str | None:
    """host:port of the Ray head started on this machine (``ray start --head``), if it answers."""
    head = _head_address("auto") if _current_cluster_file().exists() else None
    if not head:
        return None
    try:
        _check_reachable(head, head, timeout_s)
    except ClusterError:  # a file left by a head that is gone: start a local Ray instead
        return None
    return head


def check_address(address: str, *, timeout_s: float = 10.0) -> str:
    """The head's host:port; ClusterError unless it answers within ``timeout_s``."""
    head = _head_address(address)
    if head is None:
        raise ClusterError(
            f"no running Ray cluster found for --ray-address {address} (start one: ray start --head)"
        )
    _check_reachable(head, address, timeout_s)
    return head


def _head_address(address: str) -> str | None:
    """host:port of the head to probe: from the address, or the local cluster file for 'auto'."""
    if address == "auto":
        current = _current_cluster_file()
        if not current.exists():
            return os.environ.get("RAY_ADDRESS") or None
        return current.read_text().strip() or None
    return address.removeprefix("ray://")


def _current_cluster_file() -> Path:
    """Where ``ray start`` (with its default temp dir) writes the address of its head: /tmp/ray,
    or under RAY_TMPDIR / TMPDIR, as Ray itself decides."""
    try:
        from ray._common.utils import get_ray_address_file
    except ImportError:  # another Ray layout: its documented default
        return Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    return Path(get_ray_address_file(None))


def _check_reachable(head: str, address: str, timeout_s: float) -> None:
    host, _, port = head.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise ClusterError(
            f"could not reach Ray at {address} ({head}) within {timeout_s:.0f} s: {exc}; "
            "check --ray-address, RAY_ADDRESS and stale files under /tmp/ray"
        ) from exc


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()

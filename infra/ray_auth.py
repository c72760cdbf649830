"""Ray's token authentication, kept on: the token a run uses, and a check before joining a cluster.

Ray's GCS, raylet and workers listen on every interface even for a local Ray, and without a token
anyone who reaches their ports can run code as the user (docs/architecture.md). So a run never
turns authentication off:
- a local Ray uses Ray's own token (``~/.ray/auth_token``, made once with Ray's generator, or the
  one ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH`` name), with ``RAY_AUTH_MODE=token``;
- before joining a cluster, one gRPC call to its GCS with the token this run has tells whether the
  cluster accepts it; a cluster that refuses it is a one-line error, never a hang in ``ray.init``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

MODE_VAR, TOKEN_VAR, TOKEN_PATH_VAR = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
Probe = Literal["accepted", "refused", "open"]


class AuthError(RuntimeError):
    """The cluster refused this run's token, or it wants one and this run has none."""


def default_token_path() -> Path:
    """Where Ray keeps its token unless told otherwise."""
    return Path(os.environ.get(TOKEN_PATH_VAR) or Path.home() / ".ray" / "auth_token").expanduser()


def current_token() -> str | None:
    """The token this process would send: ``RAY_AUTH_TOKEN``, else the token file."""
    if token := os.environ.get(TOKEN_VAR, "").strip():
        return token
    path = default_token_path()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def ensure_local_token() -> None:
    """Token authentication on for a Ray this process starts, with Ray's token (made once).

    The file is created exclusively, so two first runs at once agree on one token (Ray's own
    generator writes it in place, and a second writer could change it under a starting cluster).
    A user's explicit ``RAY_AUTH_MODE`` stands: this never turns authentication off, nor on against
    the user's word."""
    if os.environ.get(MODE_VAR, "").lower() not in ("", "token"):
        return
    _token_mode()
    if current_token():
        return
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    path = default_token_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another run made it first: use theirs
    with os.fdopen(fd, "w") as fh:
        fh.write(generate_new_authentication_token())


def write_token(path: Path) -> Path:
    """A new token from Ray's generator in a file only its owner reads (for a cluster one starts:
    its head, its workers and its drivers get ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH``)."""
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(generate_new_authentication_token())
    return path


def probe(gcs_address: str, token: str | None, timeout_s: float = 5.0) -> Probe:
    """Ask the GCS at host:port for its nodes: 'accepted' with this token, 'refused' (the cluster
    wants a token this run does not have), or 'open' (it answered without one: no authentication)."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(gcs_address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            request = gcs_service_pb2.GetAllNodeInfoRequest()  # type: ignore[attr-defined]
            stub.GetAllNodeInfo(request, metadata=metadata, timeout=timeout_s)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return "refused"
            raise
    return "accepted" if token else "open"


def check_cluster_token(gcs_address: str, shown_as: str, timeout_s: float = 5.0) -> Probe:
    """Raise AuthError unless the cluster at ``gcs_address`` accepts this run's token; a cluster that
    answers a tokenless call has authentication off (said in the returned value, never changed)."""
    token = current_token()
    result = probe(gcs_address, token, timeout_s)
    if result == "refused":
        where = f"{TOKEN_VAR}, {TOKEN_PATH_VAR} or {default_token_path()}"
        why = "refused this run's token" if token else "requires a token and this run has none"
        raise AuthError(
            f"the Ray cluster at {shown_as} {why} (looked in {where}); copy the cluster's token, "
            "e.g. RAY_AUTH_TOKEN_PATH=/path/to/token, or run `ray get-auth-token` on the head"
        )
    if result == "accepted" and not os.environ.get(MODE_VAR):
        _token_mode()  # so that ray.init sends it
    return result


def _token_mode() -> None:
    """Token mode for this process and the processes it starts. Ray caches its config when it is
    imported, so the cached config is read again (as Ray does when it turns the mode on itself)."""
    os.environ[MODE_VAR] = "token"
    from ray._raylet import Config  # type: ignore[attr-defined]

    Config.initialize("")

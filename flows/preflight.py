"""Checks a run makes before Prefect starts, so that a user's mistake is one line, not a failed flow.

Inside a flow the same mistakes surface as a task failure with Prefect's traceback in the log
(after retries): right for the Prefect UI, wrong for someone who mistyped a path on the command line.
"""

from __future__ import annotations

from pathlib import Path

from flows.params import RunParams
from infra.cluster import check_address
from infra.engines.spec import parse_spec
from infra.models import resolve_model
from storage.hub_export import resolve_token
from storage.sources import SUFFIXES
from storage.store import Store

LOCAL_RAY = (None, "", "local")


def preflight(params: RunParams) -> None:
    """Raise FileNotFoundError, StoreError, EngineError, ClusterError or ExportError, naming what is wrong."""
    source = Path(params.input).expanduser()
    looks_local = source.suffix.lower() in SUFFIXES or params.input.startswith(("/", ".", "~"))
    if looks_local and not source.exists():
        raise FileNotFoundError(f"input {params.input!r} does not exist")
    Store(params.store)  # creates a local store, or says why it cannot
    for model in (params.teacher, params.student):
        spec = parse_spec(model.spec)
        if spec.kind in ("hf", "vllm"):
            resolve_model(spec.model)  # a missing local folder is an error now, not after retries
    if params.ray_address not in LOCAL_RAY:
        check_address(str(params.ray_address))
    if params.export is not None and params.export.to_dir is None:
        resolve_token()  # a push needs a token: say so before hours of generation, not after

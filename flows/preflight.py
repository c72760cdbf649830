"""Checks a run makes before Prefect and Ray start, so that a user's mistake is one line, not a failed flow.

Inside a flow the same mistakes surface as a task failure with Prefect's traceback in the log
(after retries): right for the Prefect UI, wrong for someone who mistyped a path on the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from flows.params import RunParams
from infra.cluster import check_address
from infra.engines import check_options, engine_to_run
from infra.engines.spec import parse_spec
from infra.models import resolve_model
from storage.hub_export import resolve_token
from storage.sources import SUFFIXES
from storage.store import Store
from tasks.engine import ModelRole

LOCAL_RAY = (None, "", "local")


def preflight(params: RunParams, note: Callable[[str], None] = print) -> None:
    """Raise FileNotFoundError, StoreError, EngineError, ClusterError or ExportError, naming what is wrong.

    ``note`` receives one line per thing worth knowing that is not an error (an engine fallback).
    """
    source = Path(params.input).expanduser()
    looks_local = source.suffix.lower() in SUFFIXES or params.input.startswith(("/", ".", "~"))
    if looks_local and not source.exists():
        raise FileNotFoundError(f"input {params.input!r} does not exist")
    roles = [("teacher", params.teacher), ("student", params.student)]
    if judge := getattr(params, "judge", None):
        roles.append(("judge", judge.model))
    check_roles(roles, params.offline, note)
    for line in params.form_notes():  # the budget stands; those replies are free text
        note(line)
    if params.export is not None and params.export.to_dir is None:
        resolve_token()  # a push needs a token: say so before hours of generation, not after
    check_store_and_ray(params.store, params.ray_address)


def check_roles(
    roles: Sequence[tuple[str, ModelRole]], offline: bool, note: Callable[[str], None] = print
) -> None:
    """Each model's options and files: a typo in an option is an error now, not in a replica."""
    for name, role in roles:
        check_options(role.spec, role.options)
        if message := engine_to_run(role.spec, role.options)[1]:
            note(f"{name}: {message}")
        spec = parse_spec(role.spec)
        if spec.kind in ("hf", "vllm"):
            # A missing local folder is an error now; a Hub id is downloaded here, once, with a
            # progress bar (or found in the cache), before any replica starts.
            resolve_model(spec.model, offline=offline or None)


def check_store_and_ray(store: str, ray_address: str | None) -> None:
    """The cluster's address, then the store (last, so that a failed check leaves nothing behind)."""
    if ray_address not in LOCAL_RAY:
        check_address(str(ray_address))
    Store(store, create=True)

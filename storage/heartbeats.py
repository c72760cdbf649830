"""Heartbeats of running runs: one small JSON object per run beside the tables, ``_runs/RUN_ID.json``.

A run rewrites its object every few seconds (``tasks.runs.HEARTBEAT_S``) instead of committing to
the ``runs`` table, whose Delta log would grow by a commit per beat. Local stores write a temporary
file and rename it (a reader never sees half an object); object stores put the object whole.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tasks.runs import Heartbeat

from .store import Store

FOLDER = "_runs"


class Heartbeats:
    """Read and write the heartbeat objects of ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._fs: Any = None
        self._root = ""

    # -- where ---------------------------------------------------------------------------------------
    def _remote(self) -> tuple[Any, str]:
        """The store's object store as a pyarrow filesystem, and the folder's path in it."""
        if self._fs is None:
            self._fs, self._root = _filesystem(self.store.uri, self.store.storage_options)
        return self._fs, f"{self._root}/{FOLDER}"

    def _local(self) -> Path:
        return Path(self.store.uri) / FOLDER

    # -- verbs ---------------------------------------------------------------------------------------
    def write(self, beat: Heartbeat) -> None:
        data = json.dumps(beat.as_dict()).encode()
        name = f"{beat.run_id}.json"
        if self.store.is_local:
            folder = self._local()
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".beat-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, folder / name)
            return
        fs, remote = self._remote()
        with fs.open_output_stream(f"{remote}/{name}") as out:
            out.write(data)

    def read(self, run_id: str) -> Heartbeat | None:
        try:
            if self.store.is_local:
                raw = (self._local() / f"{run_id}.json").read_bytes()
            else:
                fs, folder = self._remote()
                with fs.open_input_stream(f"{folder}/{run_id}.json") as f:
                    raw = f.read()
            return Heartbeat.of(json.loads(raw))
        except (OSError, ValueError, TypeError, KeyError):  # none yet, or being replaced: no beat
            return None

    def read_all(self) -> dict[str, Heartbeat]:
        """Every run's heartbeat, by run id (an unreadable object is skipped, not fatal)."""
        if self.store.is_local:
            folder = self._local()
            names = [p.stem for p in folder.glob("*.json")] if folder.is_dir() else []
        else:
            from pyarrow.fs import FileSelector

            fs, remote = self._remote()
            try:
                infos = fs.get_file_info(FileSelector(remote, allow_not_found=True))
            except OSError:
                return {}
            names = [i.base_name.removesuffix(".json") for i in infos if i.base_name.endswith(".json")]
        beats = {name: self.read(name) for name in names}
        return {k: v for k, v in beats.items() if v is not None}


def _filesystem(uri: str, options: dict[str, str]) -> tuple[Any, str]:
    """A pyarrow filesystem for an object-store URI, configured from the store's options (the same
    AWS_* settings deltalake is given), and the path of the store in it."""
    from pyarrow import fs

    scheme, _, path = uri.partition("://")
    if scheme not in ("s3", "s3a"):
        filesystem, root = fs.FileSystem.from_uri(uri)
        return filesystem, root.rstrip("/")
    endpoint = options.get("AWS_ENDPOINT_URL")
    kwargs: dict[str, Any] = {
        "access_key": options.get("AWS_ACCESS_KEY_ID"),
        "secret_key": options.get("AWS_SECRET_ACCESS_KEY"),
        "session_token": options.get("AWS_SESSION_TOKEN"),
        "region": options.get("AWS_REGION"),
    }
    if endpoint:
        url_scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or url_scheme, scheme=url_scheme if host else "https")
    return fs.S3FileSystem(**{k: v for k, v in kwargs.items() if v is not None}), path.rstrip("/")

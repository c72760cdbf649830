"""A Prefect home for a test's run, its database already migrated.

Every CLI run in the tests gets a Prefect home of its own (two runs' temporary APIs on one SQLite
file lock each other out). In a new home Prefect runs its hundred-odd database migrations on start:
5-9 of the 40-50 CPU-seconds of a run on the tiny model (measured here), on a machine whose suite
keeps both cores busy. The migrated database is made once per Prefect version (``prefect server
database upgrade``) and copied into each new home, so Prefect finds it at head. Nothing else is
shared.

``tests/integration/test_long_pairs.py`` runs from a bare home, as a new user's first run does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

DATABASE = "prefect.db"  # Prefect's default: sqlite under PREFECT_HOME


def seeded(home: Path) -> Path:
    """``home`` with a migrated copy of Prefect's database in it (an existing one is kept)."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / DATABASE).exists():
        shutil.copyfile(_template(), home / DATABASE)
    return home


def _template() -> Path:
    """The migrated database of this Prefect version, made on first use (one maker at a time)."""
    root = Path(tempfile.gettempdir()) / f"reflectory-test-prefect-{version('prefect')}-{os.getuid()}"
    made = root / DATABASE
    if made.exists():
        return made
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        if made.exists():  # another worker made it meanwhile
            return made
        scratch = Path(tempfile.mkdtemp(dir=root))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        out = subprocess.run(
            [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
            env={**env, "PREFECT_HOME": str(scratch)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0 or not (scratch / DATABASE).exists():
            raise RuntimeError(
                f"prefect could not migrate a database:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
            )
        os.replace(scratch / DATABASE, made)  # whole or not at all
        shutil.rmtree(scratch, ignore_errors=True)
    return made


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

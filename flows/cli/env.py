"""Environment defaults of a command-line run, set before Prefect, Ray or torch load."""

from __future__ import annotations

import os


def prefect_defaults() -> None:
    """Settings that make a serverless Prefect run work on small machines (docs/architecture.md).

    Nothing here forces offline mode: a Hub model id downloads on a connected machine.
    """
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Before torch loads here or in a Ray replica (they inherit this environment): spinning idle
    # OpenMP threads made CPU decoding several times slower on a busy machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

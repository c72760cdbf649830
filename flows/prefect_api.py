"""Prefect's API for a command-line run: bring it up early, and hand everything over before exit.

With a server configured (``PREFECT_API_URL``, or the active profile) the run uses it. Without one,
Prefect starts its own temporary API in a second process on first use (7-8 s on 2 cores):
``ensure_api`` triggers that from a thread while Ray and the replicas start, so the flow finds it
up. (An in-process API, served from a thread, was measured as no faster here: 22-27 s a run either
way, because the import it saves competes with Ray's start for the same two cores.)

``finish`` is the other end: Prefect's log and event workers are drained, so the API gets every
task state and log line, and Prefect's temporary API is told to stop (its own exit handler would
not run: the command ends with ``os._exit``, and an orphaned server would keep the command's
output pipe open). The process may then exit at once.

The temporary API writes to ``$PREFECT_HOME/temporary-api.log``, not to the terminal: it is in the
terminal's process group, so a Ctrl-C reaches it too, and what it printed while its services were
torn down (tracebacks of cancelled database sessions) read as the run's own failure. Prefect starts
it with the terminal's output and no option to change that, so ``ensure_api`` replaces the one
method that spawns it with the same command and environment, and a log file for its output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DRAIN_TIMEOUT_S = 10.0


class PrefectAPIError(RuntimeError):
    """Prefect's API could not be reached or started; says which and what to do."""


def configured_url() -> str | None:
    """The API URL from the environment or the active Prefect profile, or None (no server)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def temporary_api_log() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home) / "temporary-api.log"


def _spawn_quietly(server: Any) -> subprocess.Popen[Any]:
    """Prefect's temporary API process, as Prefect starts it, with its output in a log file."""
    import prefect
    from prefect.settings import get_current_settings

    log = temporary_api_log()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
                "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
                "--port", str(server.port), "--log-level", "error", "--lifespan", "on",
            ],
            env={
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            },
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def quiet_temporary_api() -> None:
    """Make Prefect's temporary API write to its log file (once per process)."""
    from prefect.server.api.server import SubprocessASGIServer

    SubprocessASGIServer._run_uvicorn_command = _spawn_quietly  # type: ignore[method-assign,assignment]


def ensure_api() -> None:
    """Raise PrefectAPIError unless Prefect's API answers (starting the temporary one if needed)."""
    from prefect.client.orchestration import get_client

    if configured_url() is None:
        quiet_temporary_api()

    url = configured_url()
    try:
        with get_client(sync_client=True) as client:
            failure = client.api_healthcheck()
    except Exception as exc:
        failure = exc
    if failure is None:
        return
    where = f"the Prefect server at {url}" if url else "Prefect's temporary local API"
    if "401" in str(failure) or "Unauthorized" in str(failure):
        raise PrefectAPIError(
            f"{where} refused this run's credentials: set PREFECT_API_AUTH_STRING=user:password to the "
            "server's PREFECT_SERVER_API_AUTH_STRING, and unset PREFECT_API_KEY (it takes precedence)"
        )
    hint = (
        "check PREFECT_API_URL and that the server is up (prefect server start)"
        if url
        else "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or start a server (prefect server "
        f"start); its output is in {temporary_api_log()}"
    )
    raise PrefectAPIError(f"{where} did not answer: {failure}; {hint}")


def finish(timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """Hand Prefect's queued task states, events and log lines to the API before the process ends."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout_s)
        except Exception:  # a server gone already: nothing more can be handed over
            continue
    stop_temporary_api()


def stop_temporary_api(wait_s: float = 0.0) -> None:
    """Signal Prefect's temporary API processes to stop. Without ``wait_s`` they are not waited for
    (they exit in about a second, after answering what they hold); with it, one still running after
    ``wait_s`` seconds is killed (after a Ctrl-C, which it got too, it may never finish stopping)."""
    module = sys.modules.get("prefect.server.api.server")
    if module is None:  # never imported: this process started no temporary API
        return
    servers = getattr(module, "SubprocessASGIServer", None)
    if servers is None:  # still being imported (a command that failed while the API was starting)
        return
    stopping = []
    for server in list(servers._instances.values()):
        process = server.server_process
        if process is not None and process.poll() is None:
            process.terminate()
            stopping.append(process)
        server.server_process = None
        server.running = False
    servers._instances.clear()
    if wait_s > 0:
        deadline = time.monotonic() + wait_s
        for process in stopping:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()

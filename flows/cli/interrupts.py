"""Ctrl-C for a command that runs a flow: the first cancels cleanly within seconds, a second exits at once.

Ctrl-C reaches the terminal's whole process group, so Prefect's temporary API and Ray's local
processes get it too and start to stop; a flow left to notice that on its own retries tasks against
them and prints errors for a minute. So the first signal (SIGINT, or SIGTERM) does not interrupt the
flow: it silences the command's output, ends every active run as ``cancelled`` (its ``runs`` row,
its last heartbeat, its replicas released: ``flows.run_context``), stops Ray and Prefect's API,
prints how to resume, and exits with 130. Committed shards stay committed; a rerun with the same
run id computes only the rest. A second signal exits at once.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar

T = TypeVar("T")

EXIT_CODE = 130  # 128 + SIGINT, as a shell reports an interrupted command
DEADLINE_S = 30.0  # a cleanup that hangs (a Ray that died first) does not keep the terminal


class Interrupts:
    """Install with ``install()`` before the services start; ``cancelling`` says whether it fired."""

    def __init__(self, command: str, stop_services: Callable[[], None]) -> None:
        self.command = command
        self.stop_services = stop_services
        self.cancelling = threading.Event()
        self._out: IO[str] | None = None

    def install(self) -> dict[int, Any]:
        """Handle SIGINT and SIGTERM (from the main thread only); the handlers they had."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def uninstall(self, previous: dict[int, Any]) -> None:
        """Put the handlers back, unless a signal came (then the process is on its way out)."""
        if not self.cancelling.is_set():
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.cancelling.is_set():
            os._exit(EXIT_CODE)
        self.cancelling.set()
        self._out = _silence_output()
        self._say("cancelling: releasing the replicas; committed shards are kept (Ctrl-C again to exit now)")
        cause = (
            "interrupted (Ctrl-C)"
            if signum == signal.SIGINT
            else f"terminated ({signal.Signals(signum).name})"
        )
        threading.Thread(target=self._cancel, args=(cause,), name="cancel-run", daemon=True).start()
        threading.Timer(DEADLINE_S, os._exit, args=(EXIT_CODE,)).start()

    def _cancel(self, cause: str) -> None:
        from flows.run_context import cancel_active

        try:
            ended = cancel_active(cause)
        except Exception as exc:  # the row could not be written: say so, still stop
            ended = []
            self._say(f"could not record the cancellation: {exc}")
        with contextlib.suppress(Exception):
            self.stop_services()
        for run_id in ended:
            self._say(f"run {run_id} cancelled. Resume it with: {resume_command(self.command, run_id)}")
        if not ended:
            self._say("interrupted before the run started")
        os._exit(EXIT_CODE)

    def _say(self, line: str) -> None:
        out = self._out or sys.stderr
        out.write(line + "\n")
        out.flush()

    def wait(self) -> None:
        """Block while the cancellation ends the process (the main thread, once the flow returned)."""
        threading.Event().wait()


def resume_command(command: str, run_id: str, argv: list[str] | None = None) -> str:
    """The command line that was run, with ``--run-id RUN_ID`` (added or replaced)."""
    args = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--run-id":
            skip = True
            continue
        if arg.startswith("--run-id="):
            continue
        out.append(arg)
    return shlex.join([command, *out, "--run-id", run_id])


def _silence_output() -> IO[str]:
    """Point stdout and stderr at /dev/null (what Prefect, Ray and the bars still print while they
    stop is noise now), and return a stream on the terminal's stderr for the cancellation's lines."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
    return os.fdopen(saved, "w", buffering=1)


def stop_services() -> None:
    """Stop what a command started for its run: Prefect's temporary API, and Ray (a local Ray is
    stopped; a cluster is only left)."""
    from flows.prefect_api import stop_temporary_api
    from infra.cluster import shutdown

    stop_temporary_api(wait_s=3.0)
    shutdown()
    # Prefect's client may have started a fresh temporary API meanwhile (the first one got the
    # Ctrl-C too): nothing of this command's may outlive it.
    kill_own_children("prefect.server.api.server")


def kill_own_children(marker: str) -> list[int]:
    """SIGKILL this process's children whose command line names ``marker``; their ids (Linux's /proc;
    elsewhere nothing is found)."""
    me, killed = os.getpid(), []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rpartition(")")[2].split()[1])
            if ppid == me and marker.encode() in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours
            continue
    return killed


def cancellable(call: Callable[[], T], command: str = "reflectory") -> T:
    """``call()`` (a command's whole run) with Ctrl-C handled as above; once a signal has come, the
    calling thread waits for the cancellation to end the process, whatever ``call`` did meanwhile.
    Prefect's temporary API, if the run starts one, writes to its log file (flows.prefect_api)."""
    from flows.prefect_api import configured_url, quiet_temporary_api

    if configured_url() is None:
        quiet_temporary_api()
    interrupts = Interrupts(command, stop_services)
    previous = interrupts.install()
    try:
        result = call()
    except BaseException:
        if interrupts.cancelling.is_set():
            interrupts.wait()
        raise
    finally:
        interrupts.uninstall(previous)
    if interrupts.cancelling.is_set():
        interrupts.wait()
    return result

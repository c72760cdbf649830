"""Run ``reflectory`` with a crash at a known point, for the resume tests (fault injection, tests only).

    python -m tests.crash_points kill-after-commits TABLE N -- run recycle ...
        SIGKILL this process group right after the N-th shard commit to TABLE. Commits are
        serialised, so exactly N shards of TABLE are in the store when the process dies.
    python -m tests.crash_points signal-after-commits SIGNAL TABLE N -- run recycle ...
        Send SIGNAL (INT: what Ctrl-C sends) to this process group right after the N-th shard
        commit to TABLE, once, and carry on as the command would.

Everything else is the real command: real Prefect, Ray, Delta and engines.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any


def say(text: str) -> None:
    """Straight to file descriptor 2: a progress display may hold ``sys.stderr`` when we are killed."""
    os.write(2, (text + "\n").encode())


def kill_after_commits(table: str, n: int) -> None:
    signal_after_commits("KILL", table, n)


def signal_after_commits(name: str, table: str, n: int) -> None:
    from storage.store import Store

    sig = signal.Signals[f"SIG{name}"]

    original = Store.commit_shard
    lock = threading.Lock()
    done = 0

    def commit_shard(self: Store, name: str, rows: Any, **kw: Any) -> bool:
        nonlocal done
        with lock:
            committed = original(self, name, rows, **kw)
            if name == table and committed:
                done += 1
                if done == n:
                    at = f"{time.time():.3f}"
                    say(f"crash point: {n} shards of {table} committed; sending {sig.name} at {at}")
                    os.killpg(os.getpgrp(), sig)
            return committed

    Store.commit_shard = commit_shard  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    split = argv.index("--")
    point, cli = argv[:split], argv[split + 1 :]
    if point[0] == "kill-after-commits":
        kill_after_commits(point[1], int(point[2]))
    elif point[0] == "signal-after-commits":
        signal_after_commits(point[1], point[2], int(point[3]))
    else:
        raise SystemExit(f"unknown crash point {point[0]!r}")
    from flows.cli import entry

    sys.argv = ["reflectory", *cli]  # what the command sees of its own command line
    entry(cli)


if __name__ == "__main__":
    main(sys.argv[1:])

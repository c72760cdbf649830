"""A soak of the production route with faults on a schedule: does a three-node run lose or duplicate rows?

A head and two worker nodes (``tests/cluster.py``: each its own ``ray start`` process group, token
authentication on), a Prefect server with basic auth (``PREFECT_API_URL``), and the store on S3
(SeaweedFS). ``reflectory run recycle`` on the tiny local Llama (free-text replies, small budgets:
the faults are the point, not the model), replicas spread over the nodes. While it runs, by the
share of its shard commits done (every stage's):

- 1/4: a worker node is killed (its raylet, SIGKILL; its replicas die with it);
- 1/2: S3 is stopped for ``--outage`` seconds and started again;
- 3/4: the Prefect server is SIGKILLed and started again on its port and database.

A run that exits non-zero is rerun with its id (the store resumes it); a fault counts as survived
when the run, or its rerun, completes. Then it counts, against the pairs given: rows lost (a pair
with no ``selected`` row), rows duplicated (a pair with two), and decisions that differ from a
one-node run of the same pairs (a local Ray, a local store, no faults), which also gives the
baseline of pairs/s. Usage:
    OMP_WAIT_POLICY=PASSIVE python bench/cluster.py [--pairs 256] [--shard-size 16] [--max-tokens 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.overhead import write_pairs  # noqa: E402
from storage.store import Store  # noqa: E402
from tests.cluster import RayCluster  # noqa: E402
from tests.integration.conftest import PrefectServer, prefect_env  # noqa: E402
from tests.s3_server import BUCKET, SeaweedS3  # noqa: E402


@dataclass
class Fault:
    name: str
    at: float  # the share of the run's shard commits (all stages) done when it is injected
    inject: Callable[[], None]
    injected_s: float | None = None


@dataclass
class Soak:
    faults: list[Fault]
    reruns: int = 0
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)


def params(model: Path, address: str, max_tokens: int, shard_size: int, replicas: int) -> dict[str, Any]:
    role = {"spec": f"hf:{model}", "replicas": replicas, "spread": replicas > 1, "num_cpus": 1}
    return {"teacher": role, "student": role, "ray_address": address, "shard_size": shard_size,
            "constrained": False, "sampling": {"max_tokens": max_tokens}, "report": False}  # fmt: skip


def run_cmd(inp: Path, store: str, run_id: str, config: Path) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "run", "recycle", "-i", str(inp), "-s", store,
            "--run-id", run_id, "--config", str(config)]  # fmt: skip


def decisions(store: Store, run_id: str) -> list[tuple[Any, ...]]:
    return store.sql(
        f"SELECT source_id, kept, variant, reason FROM selected WHERE run_id = '{run_id}' ORDER BY source_id"
    ).fetchall()


def one_node(
    work: Path, inp: Path, model: Path, args: argparse.Namespace
) -> tuple[float, list[tuple[Any, ...]]]:
    """The baseline: the same pairs on a local Ray of one node, a local store, no faults."""
    config = work / "one.json"
    config.write_text(json.dumps(params(model, "local", args.max_tokens, args.shard_size, 1)))
    env = dict(os.environ, PYTHONPATH=str(ROOT), PREFECT_HOME=str(work / "one-prefect"), HF_HUB_OFFLINE="1",
               RAY_TMPDIR=tempfile.mkdtemp(prefix="bc1", dir="/tmp"))  # fmt: skip
    t0 = time.perf_counter()
    out = subprocess.run(run_cmd(inp, str(work / "one"), "one", config), env=env, cwd=ROOT,
                         capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"the one-node run failed:\n{out.stderr[-3000:]}")
    return seconds, decisions(Store(str(work / "one")), "one")


def committed_share(store: Store, run_id: str, shards: int) -> float:
    """The share of the run's shard commits done, over its four stages (two of them in reflections)."""
    query = " UNION ALL ".join(
        f"SELECT count(DISTINCT shard_key) FROM {t} WHERE run_id = '{run_id}'"
        for t in ("reflections", "scores", "selected")
    )
    try:
        n = sum(row[0] for row in store.sql(query).fetchall())
    except Exception:  # S3 is out for a moment
        return -1.0
    return n / (4 * shards)


def soak(
    work: Path, inp: Path, model: Path, n_pairs: int, args: argparse.Namespace
) -> tuple[Soak, list[tuple[Any, ...]]]:
    (work / "s3").mkdir()
    (work / "server").mkdir()
    s3 = SeaweedS3(work / "s3").start()
    server = PrefectServer(work / "server").start()
    cluster = RayCluster(work).start_head(cpus=2)
    try:
        cluster.add_worker("worker1", cpus=2)
        cluster.add_worker("worker2", cpus=2)
        config = work / "cluster.json"
        config.write_text(json.dumps(params(model, cluster.address, args.max_tokens, args.shard_size, 2)))
        store_uri = f"s3://{BUCKET}/soak"
        store = Store(store_uri, storage_options=s3.env(), create=True)
        env = {**prefect_env(work / "prefect", server.api), **s3.env(),
               **{k: v for k, v in cluster.env().items() if k.startswith("RAY_")}}  # fmt: skip

        def outage() -> None:
            s3.stop()
            time.sleep(args.outage)
            s3.start()

        def restart() -> None:
            server.kill()
            server.start()

        def kill_node() -> None:
            cluster.node("worker2").kill_raylet()

        result = Soak(
            [
                Fault("worker node killed", 0.25, kill_node),
                Fault(f"S3 out for {args.outage:g} s", 0.5, outage),
                Fault("Prefect server SIGKILLed and restarted", 0.75, restart),
            ]
        )
        shards = -(-n_pairs // args.shard_size)
        t0 = time.perf_counter()
        for attempt in range(3):
            proc = subprocess.Popen(run_cmd(inp, store_uri, "soak", config), env=env, cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
            output: list[str] = []
            reader = threading.Thread(target=lambda p=proc, o=output: o.extend(p.stdout or []), daemon=True)
            reader.start()
            while proc.poll() is None:
                share = committed_share(store, "soak", shards)
                for fault in result.faults:
                    if fault.injected_s is None and share >= fault.at:
                        fault.injected_s = time.perf_counter() - t0
                        print(
                            f"  {fault.injected_s:6.1f} s  {share:.0%} of shards done: {fault.name}",
                            flush=True,
                        )
                        fault.inject()
                time.sleep(1)
            reader.join(10)
            if proc.returncode == 0:
                break
            result.reruns += 1
            result.log.append("".join(output)[-2000:])
            print(f"  the run exited {proc.returncode}; rerun {attempt + 1} with its id", flush=True)
        else:
            raise SystemExit("the soak did not complete in 3 attempts:\n" + "\n".join(result.log))
        result.seconds = time.perf_counter() - t0
        return result, decisions(store, "soak")
    finally:
        cluster.stop()
        server.stop()
        s3.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--outage", type=float, default=5.0, help="seconds S3 is out")
    args = ap.parse_args()
    from infra.models.tiny import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        model = build_tiny_model(work / "tiny")
        inp = work / "pairs.jsonl"
        write_pairs(inp, args.pairs)
        print(
            f"{args.pairs} pairs in shards of {args.shard_size}, tiny model, {args.max_tokens} tokens a reply"
        )
        base_s, base = one_node(work, inp, model, args)
        print(f"one node: {base_s:.1f} s")
        result, got = soak(work, inp, model, args.pairs, args)
        ids = [row[0] for row in got]
        expected = {row[0] for row in base}
        lost = len(expected - set(ids))
        duplicated = len(ids) - len(set(ids))
        differ = len(set(got) ^ set(base)) // 2 if not lost and not duplicated else None
        survived = sum(1 for f in result.faults if f.injected_s is not None)
        print()
        print(f"three nodes with faults: {result.seconds:.1f} s ({args.pairs / result.seconds:.2f} pairs/s), "
              f"reruns {result.reruns}")  # fmt: skip
        print(f"one node, no faults:     {base_s:.1f} s ({args.pairs / base_s:.2f} pairs/s)")
        print(f"ratio (three nodes with faults / one node): {base_s / result.seconds:.2f}x pairs/s")
        print(
            f"faults injected {survived} of {len(result.faults)}, survived {survived if lost == 0 else 0}: "
            + "; ".join(
                f"{f.name} at {f.injected_s:.0f} s" for f in result.faults if f.injected_s is not None
            )
        )
        print(
            f"rows lost {lost}, rows duplicated {duplicated}, decisions that differ from one node: {differ}"
        )
        if lost or duplicated:
            raise SystemExit(1)


if __name__ == "__main__":
    main()

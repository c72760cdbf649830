"""What the factory costs around the engine: the recycle flow against the same engine calls in one process.

The model is the tiny local Llama, so the engine's own work is nearly free and what is left is
orchestration: Prefect tasks, Ray actors, store commits, result handling. Teacher replies are free
text (``--free-text``), so that tiny budgets work and a checkout from before constrained forms
compares like for like. For each size:

- raw: the recycle stages in this process, shard by shard (instruction reflections, response
  reflections of the original and the reflected pairs, scoring of every variant, selection), on
  one ``hf`` engine: the engine calls the flow makes, with no Prefect, no Ray and no store.
- flow: ``reflectory run recycle`` in a subprocess (Prefect without a server, a local Ray, a local
  Delta store), timed from start to exit, model loading and Ray start-up included.

``--warm`` runs the flows the way a long-lived installation does: against a Ray head started once
(``ray start --head``, which a run without ``--ray-address`` joins), a Prefect server (``prefect
server start``, through ``PREFECT_API_URL``) and persistent replicas (loaded by one untimed run of a
single pair first), so a run pays neither Ray's nor Prefect's start nor the model load.

At the end it fits flow seconds = intercept + slope x pairs over the sizes (least squares, per
replica count): the intercept is a run's fixed start-up and exit, the slope its cost per pair.

It prints the ratio raw / flow (1.0 = no overhead), seconds per pair, the flow process's peak
memory (RSS, sampled) and the bytes the flow wrote outside the store (its ``PREFECT_HOME``: the
ephemeral API's database and any result storage). ``--root`` runs the flow of another checkout, to
measure the same numbers before a change. Usage:
    OMP_WAIT_POLICY=PASSIVE python bench/overhead.py [--pairs 256 1024 4096] [--replicas 1 2]
        [--shard-size 64] [--max-tokens 8] [--root /path/to/other/checkout] [--skip-raw] [--warm]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from infra.ray_auth import write_token

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "alpaca_sample.json"


def write_pairs(path: Path, n: int) -> None:
    """``n`` distinct Alpaca pairs (the bundled 500, cycled with a numbered suffix to stay distinct)."""
    rows = [r for r in json.loads(DATA.read_text()) if r["output"].strip()]
    with path.open("w") as fh:
        for i in range(n):
            r = dict(rows[i % len(rows)])
            if i >= len(rows):
                r["instruction"] = f"{r['instruction']} ({i // len(rows)})"
            fh.write(json.dumps(r) + "\n")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def peak_rss(pid: int, stop: threading.Event, out: list[int]) -> None:
    import psutil

    peak = 0
    try:
        proc = psutil.Process(pid)
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.2)
    except psutil.NoSuchProcess:
        pass
    out.append(peak)


def run_flow(
    root: Path,
    model: Path,
    inp: Path,
    work: Path,
    shard_size: int,
    max_tokens: int,
    free_text: list[str],
    replicas: int = 1,
    warm: Warm | None = None,
) -> dict:
    home = work / f"prefect-home-{replicas}"
    store = work / f"store-{replicas}"
    env = dict(
        os.environ,
        PYTHONPATH=str(root),
        PREFECT_HOME=str(home),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        **(warm.env if warm else {}),
    )
    roles = ["--teacher", f"hf:{model}", "--student", f"hf:{model}"]
    if warm:  # the same roles, persistent: the replicas the warm-up run loaded
        roles = ["--config", str(warm.config(model, replicas))]
    cmd = [
        sys.executable, "-m", "flows.cli", "run", "recycle", "-i", str(inp), "-s", str(store),
        *roles, "--run-id", "bench",
        "--shard-size", str(shard_size), "--max-tokens", str(max_tokens), *free_text,
        *(["--teacher-replicas", str(replicas), "--student-replicas", str(replicas)] if replicas > 1 else []),
    ]  # fmt: skip
    log = (work / "flow.log").open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    stop, peak = threading.Event(), list[int]()
    watcher = threading.Thread(target=peak_rss, args=(proc.pid, stop, peak))
    watcher.start()
    code = proc.wait()
    seconds = time.perf_counter() - t0
    stop.set()
    watcher.join()
    if code != 0:
        raise SystemExit(f"the flow failed ({code}); log: {work / 'flow.log'}")
    return {
        "seconds": seconds,
        "peak_rss_mb": peak[0] / 2**20,
        "outside_store_mb": folder_bytes(home) / 2**20,
        "result_storage_mb": folder_bytes(home / "storage") / 2**20,
        "store_mb": folder_bytes(store) / 2**20,
    }


class Warm:
    """A Ray head and a Prefect server for the runs to find, as a long-lived installation has."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        ray_tmp = tempfile.mkdtemp(prefix="rayb", dir="/tmp")  # short: Ray's socket paths
        api_port, ray_port = _free_port(), _free_port()
        token = write_token(Path(ray_tmp) / "auth_token")  # the head and every run use it
        self.env = {
            "RAY_TMPDIR": ray_tmp,
            "PREFECT_API_URL": f"http://127.0.0.1:{api_port}/api",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
        }
        base = dict(os.environ, PREFECT_HOME=str(work / "server"), **self.env)
        base.pop("PREFECT_API_URL")
        head = ["start", "--head", "--block", f"--port={ray_port}", "--include-dashboard=false"]
        self._start([sys.executable, "-m", "ray.scripts.scripts", *head, "--node-ip-address=127.0.0.1"], base)
        self._start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                     "--port", str(api_port)], base)  # fmt: skip
        self._wait(f"http://127.0.0.1:{api_port}/api/health")
        self._wait_ray(Path(ray_tmp) / "ray" / "ray_current_cluster")

    def config(self, model: Path, replicas: int) -> Path:
        path = self.work / f"warm-{replicas}.json"
        role = {"spec": f"hf:{model}", "persistent": True}
        path.write_text(json.dumps({"teacher": role, "student": role}))
        return path

    def _start(self, cmd: list[str], env: dict[str, str]) -> None:
        log = (self.work / f"warm-{len(self.procs)}.log").open("wb")
        self.procs.append(
            subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def _wait(self, url: str) -> None:
        import httpx

        for _ in range(240):
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{url} did not answer; logs in {self.work}")

    def _wait_ray(self, address_file: Path) -> None:
        for _ in range(240):
            if address_file.exists():
                time.sleep(1)
                return
            time.sleep(0.5)
        raise SystemExit(f"the Ray head did not start; logs in {self.work}")

    def close(self) -> None:
        import signal

        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fit(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """Least-squares intercept and slope of seconds against pairs (None with fewer than 2 sizes)."""
    if len({n for n, _ in points}) < 2:
        return None
    mean_n = sum(n for n, _ in points) / len(points)
    mean_s = sum(s for _, s in points) / len(points)
    slope = sum((n - mean_n) * (s - mean_s) for n, s in points) / sum((n - mean_n) ** 2 for n, _ in points)
    return mean_s - slope * mean_n, slope


def run_raw(model: Path, inp: Path, shard_size: int, max_tokens: int) -> dict:
    from infra.engines import load_engine
    from storage.sources import load_pairs
    from tasks.engine import Sampling
    from tasks.recycle.variants import SimplePair, candidates, reflected_pairs, score_rows, selection_rows
    from tasks.scoring.score import score_pairs
    from tasks.teacher.stages import reflect_instructions, reflect_responses

    t0 = time.perf_counter()
    engine = load_engine(f"hf:{model}", {})
    sampling = Sampling(max_tokens=max_tokens)
    pairs = [SimplePair(p.id, p.instruction, p.input, p.output) for p in load_pairs(str(inp)).pairs]
    for start in range(0, len(pairs), shard_size):
        seeds = pairs[start : start + shard_size]
        ins, _ = reflect_instructions(seeds, engine, sampling, constrained=False)
        orig, _ = reflect_responses(seeds, engine, sampling, which="original", constrained=False)
        refl, _ = reflect_responses(
            reflected_pairs(ins), engine, sampling, which="reflected", constrained=False
        )
        cands = candidates(seeds, ins, [*orig, *refl])
        rows = score_rows(cands, score_pairs([c.text for c in cands], engine), engine.spec)
        selection_rows(rows, teacher=engine.spec, student=engine.spec, prompt_version="bench")
    return {"seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=8, help="teacher tokens per reply")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose flow runs (default: this one)")
    ap.add_argument("--skip-raw", action="store_true", help="flow only (e.g. for --root of an old checkout)")
    ap.add_argument(
        "--replicas", type=int, nargs="+", default=[1], help="engine replicas of the flow (one run each)"
    )
    ap.add_argument(
        "--warm", action="store_true", help="a running Ray head, Prefect server and loaded replicas"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from infra.models.tiny import build_tiny_model

    results = []
    with tempfile.TemporaryDirectory(prefix="reflectory-overhead-") as tmp:
        model = build_tiny_model(Path(tmp) / "tiny")
        warm = Warm(Path(tmp)) if args.warm else None
        free = ["--free-text"] if (args.root / "tasks" / "teacher" / "forms.py").exists() else []
        if warm:  # load the persistent replicas once, untimed
            for replicas in args.replicas:
                (Path(tmp) / "warmup").mkdir(exist_ok=True)
                write_pairs(Path(tmp) / "warmup" / "one.jsonl", 1)
                run_flow(args.root, model, Path(tmp) / "warmup" / "one.jsonl", Path(tmp) / "warmup",
                         args.shard_size, args.max_tokens, free, replicas, warm)  # fmt: skip
        print(
            f"flow of {args.root}; tiny model; shard size {args.shard_size}; {args.max_tokens} tokens/reply; "
            + (
                "warm: running Ray head, Prefect server, loaded replicas"
                if warm
                else "cold: each run starts all"
            )
        )
        print(
            "| pairs | replicas | raw s | flow s | raw / flow | flow s/pair | peak RSS MB "
            "| outside store MB | store MB |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for n in args.pairs:
            work = Path(tmp) / f"n{n}"
            work.mkdir()
            inp = work / "pairs.jsonl"
            write_pairs(inp, n)
            raw = None if args.skip_raw else run_raw(model, inp, args.shard_size, args.max_tokens)
            # Free text (``free``): the engine's work stays nearly free (8 tokens hold no reply form),
            # and an older checkout (``--root``, before constrained forms) runs the same flow.
            for replicas in args.replicas:
                flow = run_flow(
                    args.root, model, inp, work, args.shard_size, args.max_tokens, free, replicas, warm
                )
                ratio = f"{raw['seconds'] / flow['seconds']:.2f}x" if raw else "-"
                raw_s = f"{raw['seconds']:.1f}" if raw else "-"
                print(
                    f"| {n} | {replicas} | {raw_s} | {flow['seconds']:.1f} | {ratio} | "
                    f"{flow['seconds'] / n:.3f} | {flow['peak_rss_mb']:.0f} | "
                    f"{flow['outside_store_mb']:.1f} | {flow['store_mb']:.1f} |",
                    flush=True,
                )
                results.append({"pairs": n, "replicas": replicas, "raw": raw, "flow": flow})
        if warm:
            warm.close()
    for replicas in args.replicas:
        line = fit([(r["pairs"], r["flow"]["seconds"]) for r in results if r["replicas"] == replicas])
        raw_line = fit(
            [(r["pairs"], r["raw"]["seconds"]) for r in results if r["replicas"] == replicas and r["raw"]]
        )
        if line:
            raw_text = f"; raw = {raw_line[0]:.1f} s + {raw_line[1] * 1000:.1f} ms/pair" if raw_line else ""
            print(
                f"fit, {replicas} replica(s): flow = {line[0]:.1f} s + {line[1] * 1000:.1f} ms/pair{raw_text}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

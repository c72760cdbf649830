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

It prints the ratio raw / flow (1.0 = no overhead), seconds per pair, the flow process's peak
memory (RSS, sampled) and the bytes the flow wrote outside the store (its ``PREFECT_HOME``: the
ephemeral API's database and any result storage). ``--root`` runs the flow of another checkout, to
measure the same numbers before a change. Usage:
    OMP_WAIT_POLICY=PASSIVE python bench/overhead.py [--pairs 256 1024 4096] [--replicas 1 2]
        [--shard-size 64] [--max-tokens 8] [--root /path/to/other/checkout] [--skip-raw]
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
from pathlib import Path

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
) -> dict:
    home = work / f"prefect-home-{replicas}"
    store = work / f"store-{replicas}"
    env = dict(
        os.environ,
        PYTHONPATH=str(root),
        PREFECT_HOME=str(home),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        RAY_AUTH_MODE="disabled",
        OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    )
    cmd = [
        sys.executable, "-m", "flows.cli", "run", "recycle", "-i", str(inp), "-s", str(store),
        "--teacher", f"hf:{model}", "--student", f"hf:{model}", "--run-id", "bench",
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


def run_raw(model: Path, inp: Path, shard_size: int, max_tokens: int) -> dict:
    from infra.engines import load_engine
    from storage.sources import load_pairs
    from tasks.engine import Sampling
    from tasks.recycle import SimplePair, candidates, reflected_pairs, score_rows, selection_rows
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
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from infra.models.tiny import build_tiny_model

    results = []
    with tempfile.TemporaryDirectory(prefix="reflectory-overhead-") as tmp:
        model = build_tiny_model(Path(tmp) / "tiny")
        print(
            f"flow of {args.root}; tiny model; shard size {args.shard_size}; {args.max_tokens} tokens/reply"
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
            # Free text: the engine's work stays nearly free (8 tokens hold no reply form), and an older
            # checkout (``--root``, before constrained forms) runs the same flow.
            free = ["--free-text"] if (args.root / "tasks" / "teacher" / "forms.py").exists() else []
            for replicas in args.replicas:
                flow = run_flow(args.root, model, inp, work, args.shard_size, args.max_tokens, free, replicas)
                ratio = f"{raw['seconds'] / flow['seconds']:.2f}x" if raw else "-"
                raw_s = f"{raw['seconds']:.1f}" if raw else "-"
                print(
                    f"| {n} | {replicas} | {raw_s} | {flow['seconds']:.1f} | {ratio} | "
                    f"{flow['seconds'] / n:.3f} | {flow['peak_rss_mb']:.0f} | "
                    f"{flow['outside_store_mb']:.1f} | {flow['store_mb']:.1f} |",
                    flush=True,
                )
                results.append({"pairs": n, "replicas": replicas, "raw": raw, "flow": flow})
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

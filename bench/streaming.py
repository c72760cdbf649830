"""Streaming replicas against merged calls and raw vLLM, on long-tailed reply lengths, in one run.

The workload: ``--requests`` prompts whose reply budgets are drawn from a lognormal (median
``--median-tokens``, spread ``--sigma``), written to the end with ``ignore_eos``, so a few replies
are many times longer than most. They are cut into ``--shards`` shards submitted at once through
an ``EnginePool`` of one replica, as a flow's shard tasks do. Three ways:
- raw: one ``LLM.generate`` over every request, in this process: the engine's own throughput and
  the baseline of the ratios;
- streaming: the replica's step loop (requests join the running engine between steps);
- merged: the older replica (``streaming: false``) that runs concurrent batches as merged
  ``LLM.generate`` calls, each ending with its longest reply.
It prints output tokens/s and the ratio against raw for each, and for the pool modes the
occupancy (running / min(capacity, outstanding), time-averaged) and the engine's idle seconds
while work waited. Model loading and Ray start-up are outside the timings; the modes alternate
over ``--rounds`` rounds, the order rotating, and each figure is the median round.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/streaming.py [--requests 24] [--rounds 3] [--shards 8]
        [--median-tokens 40] [--sigma 0.8] [--spec vllm:smollm2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tasks.engine import ChatRequest, ModelRole, Sampling
from tasks.usage import metering

TOPICS = ["rivers", "bridges", "volcanoes", "bees", "comets", "markets", "glaciers", "libraries"]


def workload(n: int, median: int, sigma: float, seed: int) -> list[ChatRequest]:
    """Prompts with lognormal reply budgets (at least 4 tokens, at most 8x the median)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        budget = int(min(8 * median, max(4, round(rng.lognormvariate(math.log(median), sigma)))))
        topic = TOPICS[i % len(TOPICS)]
        out.append(
            ChatRequest(({"role": "user", "content": f"Write about {topic}, part {i}."},), max_tokens=budget)
        )
    return out


class RawWorker:
    """The raw engine in a process of its own: one ``LLM.generate`` over every request (the engine's
    own scheduling). Apart, so that its threads and memory never sit beside the pool modes."""

    def __init__(self, spec: str) -> None:
        import multiprocessing

        self.pool = multiprocessing.get_context("spawn").Pool(1, initializer=_raw_load, initargs=(spec,))

    def run(self, requests: list[ChatRequest], sampling: Sampling) -> dict[str, Any]:
        return dict(self.pool.apply(_raw_run, (requests, sampling)))

    def close(self) -> None:
        self.pool.terminate()


_ENGINE: Any = None


def _raw_load(spec: str) -> None:
    global _ENGINE
    from infra.engines import load_engine

    _ENGINE = load_engine(spec, {"streaming": False})


def _raw_run(requests: list[ChatRequest], sampling: Sampling) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = _ENGINE.generate(requests, sampling)
    return {"seconds": time.perf_counter() - t0, "tokens": sum(c.completion_tokens for c in out)}


class PoolMode:
    """One replica (streaming or merged); every shard's requests sent at once, as concurrent shard
    tasks send them."""

    def __init__(self, spec: str, streaming: bool) -> None:
        from infra.pool import EnginePool

        self.pool = EnginePool(ModelRole(spec=spec, options={"streaming": streaming}, batch_size=16))

    def run(self, requests: list[ChatRequest], sampling: Sampling, shards: int) -> dict[str, Any]:
        from infra.occupancy import OccupancyMeter

        self.pool.occupancy = OccupancyMeter()  # this round's alone
        size = math.ceil(len(requests) / shards)
        parts = [requests[s : s + size] for s in range(0, len(requests), size)]

        def shard(part: list[ChatRequest]) -> int:
            with metering("generate"):
                return sum(c.completion_tokens for c in self.pool.generate(part, sampling))

        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(parts)) as ex:
            tokens = sum(ex.map(shard, parts))
        seconds = time.perf_counter() - t0
        occ = self.pool.occupancy.report().get("generate", {"occupancy": 0.0, "idle_seconds": 0.0})
        return {
            "seconds": seconds,
            "tokens": tokens,
            "occupancy": occ["occupancy"],
            "idle_s": occ["idle_seconds"],
        }

    def close(self) -> None:
        self.pool.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--median-tokens", type=int, default=40)
    ap.add_argument("--sigma", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spec", default="vllm:smollm2")
    ap.add_argument("--modes", default="raw,streaming,merged")
    ap.add_argument("--json", default=None, help="write the figures here too")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Every mode computes on every core: vLLM in this process would drop to one thread, and a
    # replica takes its threads from this variable (infra.pool.cpu_threads).
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    requests = workload(args.requests, args.median_tokens, args.sigma, args.seed)
    budgets = sorted(r.max_tokens or 0 for r in requests)
    sampling = Sampling(max_tokens=max(budgets), temperature=0.0, ignore_eos=True)
    print(
        f"{len(requests)} requests in {args.shards} shards, {args.spec}; reply budgets: median "
        f"{budgets[len(budgets) // 2]}, max {budgets[-1]}, {sum(budgets)} tokens in all; "
        f"{os.cpu_count()} cores"
    )
    modes = args.modes.split(",")
    warm = sampling.model_copy(update={"max_tokens": 2})
    runners: dict[str, Any] = {}
    if "raw" in modes:
        runners["raw"] = RawWorker(args.spec)
    if {"streaming", "merged"} & set(modes):
        from infra.cluster import connect

        connect("local")
        for mode in ("streaming", "merged"):
            if mode in modes:
                runners[mode] = PoolMode(args.spec, mode == "streaming")
    rounds: dict[str, list[dict[str, Any]]] = {mode: [] for mode in runners}
    try:
        for mode, runner in runners.items():  # load and warm up every engine before any timing
            runner.run(requests[:2], warm) if mode == "raw" else runner.run(requests[:2], warm, 1)
        names = list(runners)
        for r in range(args.rounds):  # the order rotates, so the machine's background load hits all alike
            for mode in names[r % len(names) :] + names[: r % len(names)]:
                runner = runners[mode]
                got = (
                    runner.run(requests, sampling)
                    if mode == "raw"
                    else runner.run(requests, sampling, args.shards)
                )
                rounds[mode].append(got)
    finally:
        for runner in runners.values():
            runner.close()
    results = {mode: _median(rs) for mode, rs in rounds.items()}
    raw_rate = results["raw"]["tokens_per_s"] if "raw" in results else None
    for mode, r in results.items():
        # Against raw within each round (the machine's speed drifts between rounds), then the median.
        ratios = sorted(
            a["tokens_per_s"] / b["tokens_per_s"]
            for a, b in zip(rounds[mode], rounds.get("raw", []), strict=False)
        )
        r["vs_raw"] = ratios[len(ratios) // 2] if ratios else None
        rate, n = r["tokens_per_s"], r["tokens"]
        line = f"{mode:>9}: {rate:7.1f} tok/s (median of {args.rounds} rounds of {n} tokens)"
        if raw_rate and mode != "raw":
            line += f", {r['vs_raw']:.2f}x raw"
        if "occupancy" in r:
            line += f", occupancy {r['occupancy']:.2f}, idle {r['idle_s']:.1f} s while work waited"
        print(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median rate, its figures, and every round's rate."""
    for r in runs:
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
    ordered = sorted(runs, key=lambda r: r["tokens_per_s"])
    return {**ordered[len(ordered) // 2], "rounds": [round(r["tokens_per_s"], 1) for r in runs]}


if __name__ == "__main__":
    main()

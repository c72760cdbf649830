"""Teacher generation through the factory (Ray replicas) against the raw engine, in one run.

- raw: ``engine.generate`` in this process: the floor, no Ray, no actor, no serialisation.
- factory x1: the same requests through an ``EnginePool`` of one replica (a Ray actor with all the
  cores), which is what every flow task calls.
- factory x2: two replicas with half the cores each, batches balanced between them.

Every method runs the instruction-reflection prompts of the same Alpaca pairs with greedy decoding,
so their outputs must match exactly (printed as a mismatch count). Rounds rotate the order of the
methods, so a background load slows them alike. Model loading and Ray start-up are timed apart.
Usage:
    OMP_WAIT_POLICY=PASSIVE python bench/factory.py [--prompts 16] [--rounds 3] [--max-tokens 32]
        [--spec hf:smollm2] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from infra.engines import load_engine
from infra.pool import EnginePool
from tasks.engine import ChatRequest, Completion, ModelRole, Sampling
from tasks.ingest.records import Pair, normalise
from tasks.prompts import render

DATA = Path(__file__).resolve().parents[1] / "data" / "alpaca_sample.json"

Generate = Callable[[Sequence[ChatRequest]], list[Completion]]


def requests(n: int) -> list[ChatRequest]:
    """The teacher's real instruction-reflection prompts for the first ``n`` Alpaca pairs."""
    out = []
    for line, record in enumerate(json.loads(DATA.read_text()), 1):
        p = normalise(record, line)
        if isinstance(p, Pair):
            out.append(
                ChatRequest.user(
                    render("reflect_instruction", instruction=p.instruction, input=p.input, output=p.output)
                )
            )
        if len(out) == n:
            return out
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--spec", default="hf:smollm2")
    ap.add_argument("--batch-size", type=int, default=8, help="requests per batch (engine and pool alike)")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    sampling = Sampling(max_tokens=args.max_tokens, temperature=0.0)
    hf = args.spec.startswith("hf:")

    def options(threads: int) -> dict[str, int]:
        """Each replica computes with its share of the cores (a different share: other replicas)."""
        return {"generation_batch": args.batch_size, "threads": threads} if hf else {}

    prompts = requests(args.prompts)

    setup: dict[str, float] = {}
    t0 = time.perf_counter()
    engine = load_engine(args.spec, options(cores))
    setup["raw: load model"] = time.perf_counter() - t0

    from infra.cluster import connect

    t0 = time.perf_counter()
    connect(None)
    setup["ray: start local"] = time.perf_counter() - t0
    pools = {}
    for replicas in (1, 2):
        t0 = time.perf_counter()
        pools[replicas] = EnginePool(
            ModelRole(
                spec=args.spec,
                options=options(max(cores // replicas, 1)),
                replicas=replicas,
                num_cpus=cores / replicas / 2,  # Ray's logical CPUs; compute threads are the option
                batch_size=args.batch_size,
            )
        )
        setup[f"factory x{replicas}: start replicas"] = time.perf_counter() - t0

    methods: dict[str, Generate] = {
        "raw": lambda rs: engine.generate(rs, sampling),
        "factory x1": lambda rs: pools[1].generate(rs, sampling),
        "factory x2": lambda rs: pools[2].generate(rs, sampling),
    }
    names = list(methods)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    tokens: dict[str, list[int]] = {name: [] for name in names}
    texts: dict[str, list[str]] = {}
    print(
        f"{len(prompts)} prompts x {args.rounds} rounds, {args.spec}, "
        f"{args.max_tokens} new tokens, {cores} cores"
    )
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            out = methods[name](prompts)
            seconds[name].append(time.perf_counter() - t0)
            tokens[name].append(sum(c.completion_tokens for c in out))
            texts.setdefault(name, [c.text for c in out])
        print(f"  round {r + 1}: " + ", ".join(f"{n} {seconds[n][-1]:.1f} s" for n in names))

    rate = {n: statistics.median(t / s for t, s in zip(tokens[n], seconds[n], strict=True)) for n in names}
    print("\nsetup (not in the rates):")
    for what, s in setup.items():
        print(f"  {what:<28} {s:7.1f} s")
    print("\ncompletion tokens/s (median of rounds), requests/s:")
    for n in names:
        print(f"  {n:<11} {rate[n]:8.1f} tok/s  {len(prompts) / statistics.median(seconds[n]):6.2f} req/s")
    print(f"factory x1 / raw        = {rate['factory x1'] / rate['raw']:.2f}x  (target >= 0.9)")
    print(f"factory x2 / factory x1 = {rate['factory x2'] / rate['factory x1']:.2f}x  ({cores} cores)")
    for n in names[1:]:
        mismatches = sum(a != b for a, b in zip(texts["raw"], texts[n], strict=True))
        print(f"outputs differing from raw ({n}): {mismatches} of {len(prompts)}")
    print("\nrequests in flight per replica (held by the replica: queued or in its engine):")
    in_flight = {}
    for replicas, pool in pools.items():
        for i, s in enumerate(pool.stats()):
            in_flight[f"factory x{replicas} replica {i}"] = s
            print(
                f"  factory x{replicas} replica {i}: peak {s['peak_in_flight']:.0f}, "
                f"mean {s['mean_in_flight']:.1f}, "
                f"{s['calls']:.0f} engine calls for {s['batches']:.0f} batches "
                f"({s['mean_requests_per_call']:.1f} requests per call, merge bound {pool.merge_bounds[i]})"
            )
    print(
        json.dumps(
            {
                "rates_tok_s": rate,
                "setup_s": setup,
                "prompts": len(prompts),
                "spec": args.spec,
                "in_flight": in_flight,
            }
        )
    )
    for pool in pools.values():
        pool.close()


if __name__ == "__main__":
    main()

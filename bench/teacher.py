"""Constrained teacher replies against free text, on the hf and vllm engines, in one run.

For each engine and mode (``constrained``: the reply forms of ``tasks.teacher.forms``; ``free``:
free text, parsed as before) the teacher writes the instruction and response reflections of the
demo sample and reflection traces for the math sample. Per task it reports the parse rate (valid
traces for the math sample), the truncation rate (replies cut by ``max_tokens``), completion tokens
per reply and seconds per reply (the stage's wall time over its replies, batched as the factory
batches). Usage:
    OMP_WAIT_POLICY=PASSIVE python bench/teacher.py [--engines hf vllm] [--pairs 8] [--questions 8]
        [--model smollm2] [--max-tokens 320] [--trace-tokens 512] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.engines import load_engine
from tasks.engine import Sampling
from tasks.ingest.records import Question
from tasks.recycle.variants import SimplePair
from tasks.teacher.stages import generate_traces, reflect_instructions, reflect_responses

DATA = Path(__file__).resolve().parents[1] / "data"


def pairs(n: int) -> list[SimplePair]:
    rows = [json.loads(line) for line in (DATA / "demo_sample.jsonl").read_text().splitlines()][:n]
    return [SimplePair(str(i), r["instruction"], r.get("input", ""), r["output"]) for i, r in enumerate(rows)]


def questions(n: int) -> list[Question]:
    rows = [json.loads(line) for line in (DATA / "math_sample.jsonl").read_text().splitlines()][:n]
    return [Question(str(i), r["question"], r["answer"]) for i, r in enumerate(rows)]


def measure(name: str, run: Callable[[], list[Any]], ok: Callable[[Any], bool]) -> dict[str, Any]:
    t0 = time.perf_counter()
    rows = run()
    seconds = time.perf_counter() - t0
    n = len(rows)
    return {
        "task": name,
        "replies": n,
        "parsed": sum(ok(r) for r in rows) / n,
        "truncated": sum(r.finish_reason == "length" for r in rows) / n,
        "tokens_per_reply": sum(r.completion_tokens for r in rows) / n,
        "seconds_per_reply": seconds / n,
        "verified": sum(bool(getattr(r, "verified", False)) for r in rows),
    }


def stage(task: str, engine: Any, args: argparse.Namespace, constrained: bool) -> list[Any]:
    """One task's replies: the factory's own stage functions, one batched call each."""
    reflect = Sampling(max_tokens=args.max_tokens, temperature=0.0, repetition_penalty=1.1)
    if task == "instruction reflection":
        return reflect_instructions(pairs(args.pairs), engine, reflect, constrained=constrained)[0]
    if task == "response reflection":
        return reflect_responses(
            pairs(args.pairs), engine, reflect, which="original", constrained=constrained
        )[0]
    trace = Sampling(max_tokens=args.trace_tokens, temperature=0.0, repetition_penalty=1.1)
    return generate_traces(questions(args.questions), engine, trace, constrained=constrained)[0]


TASKS = ("instruction reflection", "response reflection", "trace (math)")


def run_engine(spec: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    engine = load_engine(spec, {})
    out = []
    try:
        for mode in ("free", "constrained"):
            for task in TASKS:
                ok: Callable[[Any], bool] = (
                    (lambda r: r.valid) if task.startswith("trace") else (lambda r: r.ok)
                )
                row = {
                    "engine": spec,
                    "mode": mode,
                    **measure(task, lambda t=task, m=mode: stage(t, engine, args, m == "constrained"), ok),
                }
                out.append(row)
                print(
                    f"| {spec} | {mode} | {task} | {row['parsed']:.0%} | {row['truncated']:.0%} | "
                    f"{row['tokens_per_reply']:.0f} | {row['seconds_per_reply']:.1f} |",
                    flush=True,
                )
    finally:
        engine.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", nargs="+", default=["hf", "vllm"])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=320)
    ap.add_argument("--trace-tokens", type=int, default=512)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    print(
        f"{args.model}: {args.pairs} demo pairs ({args.max_tokens} tokens), {args.questions} math questions "
        f"({args.trace_tokens} tokens), greedy, repetition penalty 1.1"
    )
    print("| engine | mode | task | parsed | truncated | tokens/reply | s/reply |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    results = [row for kind in args.engines for row in run_engine(f"{kind}:{args.model}", args)]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

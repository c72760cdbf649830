"""How close a recycle run with an API teacher comes to the provider's per-minute limit.

The teacher is ``tests.teacher_server``: OpenAI's protocol over real HTTP, limits stated only in
``x-ratelimit-*`` headers, 429 past them, and ``full`` of the minute's budget left when the run's
first request comes (the key is in use elsewhere too). The student is the tiny local model, so the
teacher's limit is what paces the run. ``reflectory run recycle`` runs in a subprocess, as a user
runs it, with ``--teacher-replicas`` replicas sharing one limiter.

It prints, over the span from the first answered request to the last: the tokens per minute the
provider counted (prompt plus max_tokens, as OpenAI counts them) as a fraction of the limit, and the
share of requests answered 429. The goal is at least 0.85 of the limit with at most 1% 429s.
A run with a budget less than a minute long is mostly burst; the default sizes take a few minutes.
Usage:
    OMP_WAIT_POLICY=PASSIVE python bench/ratelimit.py [--pairs 48] [--replicas 2] [--tpm 20000]
        [--rpm 10000] [--full 0.05] [--max-tokens 96] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.teacher_server import teacher_server  # noqa: E402


def write_pairs(path: Path, n: int) -> None:
    """``n`` distinct pairs from the bundled sample (numbered, so no two requests are the same)."""
    rows = [
        json.loads(line) for line in (ROOT / "data" / "demo_sample.jsonl").read_text().splitlines() if line
    ]
    with path.open("w") as out:
        for i in range(n):
            row = dict(rows[i % len(rows)])
            row["instruction"] = f"{row['instruction']} (case {i})"
            out.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--rpm", type=int, default=10_000)
    ap.add_argument("--tpm", type=int, default=20_000)
    ap.add_argument("--full", type=float, default=0.05, help="share of the minute's limits left at the start")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per request")
    args = ap.parse_args()

    from infra.models.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        model = build_tiny_model(tmp / "tiny")
        inp = tmp / "pairs.jsonl"
        write_pairs(inp, args.pairs)
        with teacher_server(args.rpm, args.tpm, full=args.full, latency_s=args.latency) as server:
            cmd = [
                sys.executable, "-m", "flows.cli", "run", "recycle", "-i", str(inp),
                "-s", str(tmp / "factory"),
                "--teacher", f"openai:teacher@{server.url}", "--teacher-replicas", str(args.replicas),
                "--student", f"hf:{model}", "--shard-size", "8", "--max-tokens", str(args.max_tokens),
                "--run-id", "ratelimit",
            ]  # fmt: skip
            env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect")}
            t0 = time.monotonic()
            out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            wall = time.monotonic() - t0
            if out.returncode != 0:
                sys.exit(f"the run failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
            answered = sorted(server.answered, key=lambda a: a["at"])
            throttled = server.throttled
    counted = sum(a["counted"] for a in answered)
    span = answered[-1]["at"] - answered[0]["at"]
    # What the limit allowed over the span: what was left at the start, plus the refill meanwhile.
    allowed = args.full * args.tpm + span * args.tpm / 60
    tpm = (counted - args.full * args.tpm) / span * 60 if span else float("nan")
    share_429 = throttled / (len(answered) + throttled)
    print(
        f"{args.pairs} pairs, {len(answered)} teacher requests through {args.replicas} replicas; limit "
        f"{args.tpm:,} tokens/min ({args.full:.0%} left at the start), {args.rpm:,} requests/min"
    )
    print(
        f"run: {wall:.1f} s; teacher span {span:.1f} s; tokens counted {counted:,} of {allowed:,.0f} allowed"
    )
    print(f"tokens per minute reached: {tpm:,.0f} = {tpm / args.tpm:.3f} of the limit (goal >= 0.85)")
    print(f"429s: {throttled} = {share_429:.2%} of requests (goal <= 1%)")


if __name__ == "__main__":
    main()

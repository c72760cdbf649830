#!/usr/bin/env bash
# Proves that the GPU install (REFLECTORY_TARGET=gpu bash scripts/install.sh) resolves, on any
# machine, CPU-only included: pip resolves step 1 (vLLM 0.33.0's requirements with prefect's
# fastapi, CUDA torch 2.14.0, Reflectory) in a scratch venv without installing anything; step 2 is
# the vllm wheel with --no-deps. Prints the versions that matter and exits non-zero on a conflict.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
"$PYTHON" -m venv "$SCRATCH/venv"
"$SCRATCH/venv/bin/python" -m pip install -q --disable-pip-version-check --dry-run --ignore-installed \
  --report "$SCRATCH/report.json" -r infra/requirements/vllm-gpu.txt -e '.[dev]'
"$SCRATCH/venv/bin/python" - "$SCRATCH/report.json" <<'PY'
import json, sys
got = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]}
for name in ("torch", "fastapi", "prefect", "transformers", "llguidance", "xgrammar", "ray", "reflectory"):
    print(f"{name:>12} {got.get(name, 'MISSING')}")
print(f"resolved {len(got)} packages for the GPU install; then: pip install --no-deps vllm==0.33.0")
PY

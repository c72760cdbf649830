#!/usr/bin/env bash
# Fills bench/wheels with the wheels bench/gpu.sh installs on a bare GPU machine that lacks them
# (pydantic and what it needs, for CPython 3.12 on x86_64 Linux), on a connected machine. They
# travel with the device call (a few MB), since the GPU machine has no network.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
DEST="${1:-bench/wheels}"
mkdir -p "$DEST"
"$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$DEST" \
  "pydantic>=2.7" typing-extensions annotated-types typing-inspection
ls -1 "$DEST"
du -sh "$DEST"

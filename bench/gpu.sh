#!/usr/bin/env bash
# Scoring speed on a GPU: the reference method (one pair at a time, four forward passes with labels)
# against Reflectory's hf engine (length-sorted batches, projection only at target positions), on
# a ~1B-parameter Llama with random bf16 weights built on the machine, over 512 Alpaca pairs.
# Prints pairs/s of both, the ratio and the largest loss difference, and checks them against the
# targets (>= 20x, <= 1e-3 in bf16). Made for a bare H200 with no network: Python 3.12, torch and
# transformers, no pydantic: missing pure-Python dependencies come from carried wheels
# (WHEELS=bench/wheels by default; scripts/gpu_wheels.sh fills it on a connected machine).
#
#   bash bench/gpu.sh              # on the GPU machine, under 8 minutes
#   bash bench/gpu.sh --cpu-smoke  # the same code on CPU with a tiny model, under a minute
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
[ "${1:-}" = "--cpu-smoke" ] && MODE=cpu
# The project's environment when there is one (make install), else the machine's python3 (the bare
# GPU machine, with wheels carried in); PYTHON overrides both.
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
WHEELS="${WHEELS:-bench/wheels}"
WORK="${WORK:-${TMPDIR:-/tmp}/reflectory-gpu-bench}"
RESULTS="${OUT:-$WORK}"
mkdir -p "$WORK" "$RESULTS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE

# Pure-Python dependencies a bare machine may lack, from the carried wheels (never the network).
for pair in pydantic:pydantic typing_inspection:typing-inspection annotated_types:annotated-types; do
  module="${pair%%:*}" dist="${pair##*:}"
  if ! "$PY" -c "import $module" 2>/dev/null; then
    [ -d "$WHEELS" ] || { echo "error: $module is missing and there are no wheels in $WHEELS" >&2; exit 2; }
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" "$dist"
  fi
done
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"

if [ "$MODE" = gpu ]; then
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no GPU: use --cpu-smoke'" || exit 2
  "$PY" -c "import torch; print(torch.cuda.get_device_name(0))"
  "$PY" bench/build_llama.py --size 1b --dtype bfloat16 --device cuda --out "$WORK/llama-1b"
  ARGS=(--model "$WORK/llama-1b" --device cuda --dtype bfloat16 --pairs 512 --rounds 2 --batch-tokens 65536)
  TARGET_RATIO=20 TARGET_DIFF=1e-3
else
  "$PY" bench/build_llama.py --size tiny --dtype float32 --out "$WORK/llama-tiny"
  ARGS=(--model "$WORK/llama-tiny" --device cpu --dtype float32 --pairs 24 --rounds 1)
  TARGET_RATIO=0 TARGET_DIFF=1e-4
fi
"$PY" bench/score.py "${ARGS[@]}" --template vicuna --methods reference,reflectory --json "$RESULTS/gpu-score.json"
"$PY" - "$RESULTS/gpu-score.json" "$TARGET_RATIO" "$TARGET_DIFF" <<'EOF'
import json, sys
report, ratio_target, diff_target = json.load(open(sys.argv[1])), float(sys.argv[2]), float(sys.argv[3])
ratio, diff = report["reflectory/reference"], report["max_loss_diff_vs_reference"]
print(f"result: reflectory {ratio:.1f}x the reference's pairs/s (target >= {ratio_target:g}x), "
      f"largest loss difference {diff:.2e} (target <= {diff_target:g})")
sys.exit(0 if ratio >= ratio_target and diff <= diff_target else 1)
EOF

# Streaming replicas against merged calls and raw vLLM (bench/streaming.py), where vLLM is installed:
# the GPU machine lent so far has none (no network, and a vLLM wheel is far over what travels with a
# call), so this says so instead of failing. On a GPU: many shards, GPU-sized batches, long tails.
if [ "$MODE" = gpu ]; then
  if "$PY" -c "import vllm" 2>/dev/null; then
    MODEL_SPEC="${STREAM_SPEC:-vllm:$WORK/llama-1b}"
    "$PY" bench/streaming.py --spec "$MODEL_SPEC" --requests 2048 --shards 64 --median-tokens 128 --sigma 1.0 \
      --rounds 2 --json "$RESULTS/gpu-streaming.json"
  else
    echo "streaming: skipped, vLLM is not installed here (bench/streaming.py needs it)"
  fi
fi

# Training speed through the product's own path (bench/train.py: infra.training, trl's SFTTrainer),
# LoRA against full fine-tuning, where trl, peft and datasets import: datasets needs pyarrow, which
# is too large to carry to a bare machine, so there this says so. GPU: the 1B llama, 512 pairs.
if "$PY" -c "import trl, peft, datasets" 2>/dev/null; then
  if [ "$MODE" = gpu ]; then
    TRAIN_ARGS=(--model "$WORK/llama-1b" --pairs 512 --micro-batch 16 --max-length 1024)
  else
    TRAIN_ARGS=(--model "$WORK/llama-tiny" --pairs 16 --micro-batch 4 --max-length 128)
  fi
  "$PY" bench/train.py "${TRAIN_ARGS[@]}" --chat-template vicuna --json "$RESULTS/gpu-train.json"
else
  echo "training: skipped, trl, peft or datasets is not installed here (bench/train.py needs them)"
fi

# An evaluate run (reflectory run evaluate: two arms of 256 Alpaca pairs each, trained on the bundled
# SmolLM2 or EVAL_BASE, both answering 8 questions of each test set, judged by the same model), where
# the project's whole environment is installed (Prefect, Ray, the store); its wall time is printed.
if [ "$MODE" = gpu ]; then
  if "$PY" -c "import prefect, ray, deltalake, trl" 2>/dev/null; then
    "$PY" - "$WORK" <<'PYEOF'
import json, sys
rows = json.load(open("data/alpaca_sample.json"))
for name, part in (("a", rows[:256]), ("b", rows[256:512])):
    open(f"{sys.argv[1]}/arm-{name}.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in part))
PYEOF
    BASE="${EVAL_BASE:-hf:smollm2}"
    start=$(date +%s)
    "$PY" -m flows.cli run evaluate --base "$BASE" --train-a "$WORK/arm-a.jsonl" --train-b "$WORK/arm-b.jsonl" \
      --judge "$BASE" --limit 8 --max-tokens 256 --store "$WORK/evaluate-store" --json > "$RESULTS/gpu-evaluate.json"
    echo "evaluate: $(( $(date +%s) - start )) s for two arms of 256 pairs and 40 judged items ($RESULTS/gpu-evaluate.json)"
  else
    echo "evaluate: skipped, the project's environment (Prefect, Ray, deltalake, trl) is not installed here"
  fi
fi

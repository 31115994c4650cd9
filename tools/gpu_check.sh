#!/usr/bin/env bash
# A short check of the project on one GPU (under 8 minutes): the environment, the miniature's
# stage 1 and stage 2 through train_net.py on CUDA (each evaluated), and
# tools/benchmark_alignment_stage.py on CUDA (training step of stage 2 against stage 1, and the
# inference latency of the DisAlign model against its baseline). Prints a summary and writes it,
# with every step's log, to the output directory. With --smoke-lvis, then also
# tools/smoke_lvis.py on the device (make smoke-lvis: the shipped LVIS configs at LVIS's scale;
# its own time limit, SMOKE_LVIS_LIMIT_S, default 900 s; its datasets cached under
# output/smoke_lvis/datasets).
#
#   tools/gpu_check.sh [--device cuda|cpu] [--output-dir DIR] [--smoke-lvis]
#                                                                  (default: cuda, output/gpu_check)
#
# --device cpu is a dry run of the same steps with fewer iterations and no evaluation, to check
# the script itself on a machine without a GPU (a few minutes on 2 cores).
# Each of the three steps has a time limit (STEP_LIMIT_S, default 150 s on CUDA: at most 7.5
# minutes in all; 600 s for the CPU dry run).
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
OUT=output/gpu_check
SMOKE_LVIS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --output-dir) OUT=$2; shift 2 ;;
        --smoke-lvis) SMOKE_LVIS=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "error: --device must be cuda or cpu" >&2; exit 2 ;; esac
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
STEP_LIMIT_S=${STEP_LIMIT_S:-$( [ "$DEVICE" = cuda ] && echo 150 || echo 600 )}
STAGE1=configs/Miniature-LVIS/mask_rcnn_R_18_FPN_baseline.yaml
STAGE2=configs/Miniature-LVIS/mask_rcnn_R_18_FPN_disalign.yaml

if [ "$DEVICE" = cuda ]; then
    # the demo's own schedules, evaluated on miniature LVIS val
    STAGE1_OPTS=()
    STAGE2_OPTS=()
    BENCH_OPTS=(--iters 10 --warmup 3 --repeats 2 --inference-iters 20)
else
    # dry run: a few iterations of small batches, no evaluation
    STAGE1_OPTS=(SOLVER.MAX_ITER 4 SOLVER.WARMUP_ITERS 2 SOLVER.STEPS "(3,)" SOLVER.IMS_PER_BATCH 2
                 DATALOADER.NUM_WORKERS 0 DATASETS.TEST "()")
    STAGE2_OPTS=("${STAGE1_OPTS[@]}")
    BENCH_OPTS=(--iters 1 --warmup 1 --memory-iters 1 --repeats 1 --inference-iters 1
                SOLVER.IMS_PER_BATCH 2)
fi

mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=0
note() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME LOG COMMAND...: run with the time limit, note its wall time and status
step() {
    local name=$1 log=$2; shift 2
    echo "=== $name: $*"
    local start end status
    start=$(date +%s.%N)
    timeout "$STEP_LIMIT_S" "$@" > "$log" 2>&1
    status=$?
    end=$(date +%s.%N)
    local seconds
    seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    if [ $status -eq 0 ]; then
        note "$name: ok in $seconds s (log: $log)"
    else
        FAILED=1
        [ $status -eq 124 ] && note "$name: TIMED OUT after $STEP_LIMIT_S s (log: $log)" \
            || note "$name: FAILED with status $status after $seconds s (log: $log)"
        tail -n 5 "$log" | sed 's/^/    /' | tee -a "$SUMMARY"
    fi
    return $status
}

note "gpu_check on $DEVICE, $(date -u +%Y-%m-%dT%H:%MZ)"
if [ "$DEVICE" = cuda ] && command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/GPU: /' \
        | tee -a "$SUMMARY"
fi
"$PYTHON" - <<'EOF' 2>/dev/null | tee -a "$SUMMARY"
import torch
from disalign.evaluation.build import has_compiled_ops
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), GPU visible to torch: {gpu}, "
      f"detectron2 compiled ops: {has_compiled_ops()}")
EOF

# stage 1 and stage 2 of the miniature through train_net.py
step "stage 1 (baseline, train_net.py)" "$OUT/stage1.log" \
    "$PYTHON" train_net.py --config-file "$STAGE1" MODEL.DEVICE "$DEVICE" "${STAGE1_OPTS[@]}" \
    OUTPUT_DIR "$OUT/stage1"
if [ -f "$OUT/stage1/model_final.pth" ]; then
    step "stage 2 (DisAlign, train_net.py)" "$OUT/stage2.log" \
        "$PYTHON" train_net.py --config-file "$STAGE2" MODEL.DEVICE "$DEVICE" "${STAGE2_OPTS[@]}" \
        MODEL.WEIGHTS "$OUT/stage1/model_final.pth" OUTPUT_DIR "$OUT/stage2"
else
    FAILED=1
    note "stage 2: skipped, stage 1 wrote no model_final.pth"
fi
for stage in stage1 stage2; do
    if [ -s "$OUT/$stage/eval_results.json" ] && [ "$(cat "$OUT/$stage/eval_results.json")" != "{}" ]; then
        "$PYTHON" -c "
import json, sys
r = json.load(open(sys.argv[1]))
print(sys.argv[2] + ': ' + ', '.join(
    f'{t} AP {r[t][\"AP\"]:.1f} APr {r[t][\"APr\"]:.1f} APc {r[t][\"APc\"]:.1f} APf {r[t][\"APf\"]:.1f}'
    for t in ('bbox', 'segm')))" "$OUT/$stage/eval_results.json" "$stage" | tee -a "$SUMMARY"
    fi
    # detectron2's own timing lines: training speed and inference time per image
    grep -hoE "Overall training speed: .*|Total inference pure compute time: .*" \
        "$OUT/$stage/log.txt" 2>/dev/null | sed "s/^/$stage: /" | tee -a "$SUMMARY"
done

# training step and inference latency, stage 2 against stage 1, on the stage-1 model just trained
step "benchmark_alignment_stage.py" "$OUT/benchmark_alignment_stage.log" \
    "$PYTHON" tools/benchmark_alignment_stage.py "${BENCH_OPTS[@]}" MODEL.DEVICE "$DEVICE" \
    MODEL.WEIGHTS "$OUT/stage1/model_final.pth"
sed -n '/^config /,$p' "$OUT/benchmark_alignment_stage.log" >> "$SUMMARY"

# the shipped LVIS configs at LVIS's scale (tools/smoke_lvis.py), on the same device
if [ "$SMOKE_LVIS" = 1 ]; then
    LIMIT=$STEP_LIMIT_S
    STEP_LIMIT_S=${SMOKE_LVIS_LIMIT_S:-900}
    step "smoke_lvis.py (LVIS scale)" "$OUT/smoke_lvis.log" \
        "$PYTHON" tools/smoke_lvis.py --device "$DEVICE" --output-dir "$OUT/smoke_lvis" \
        --datasets-dir output/smoke_lvis/datasets
    STEP_LIMIT_S=$LIMIT
    sed -n '/^--- summary/,$p' "$OUT/smoke_lvis.log" >> "$SUMMARY"
fi

echo
echo "--- summary ($SUMMARY)"
cat "$SUMMARY"
exit $FAILED

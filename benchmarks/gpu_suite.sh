#!/usr/bin/env bash
# The GPU figures of the README in one run (about 6-8 minutes on one H200-class GPU):
#   B1  extraction at its ceilings: random-weight RN50 in fp16, photo-like JPEGs of real sizes,
#       one decode worker per core, for --decode exact, draft and gpu
#   B2  streaming training from the cache    B3  what the cache buys    B6  head step at paper shapes
#   E5  an RN50-shaped planted world trained and evaluated in float32, --amp bf16 and --amp fp16
# and writes every figure into one JSON file (default gpu_suite.json).
#
#   benchmarks/gpu_suite.sh [--out FILE]           # on cuda:0
#   benchmarks/gpu_suite.sh --cpu-smoke [--out F]  # every step, tiny sizes, on the CPU (checks the script)
#
# A step that fails or runs past its time limit is recorded as such; the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python}
OUT=gpu_suite.json
SMOKE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-smoke) SMOKE=1 ;;
        --out) OUT=$2; shift ;;
        *) echo "usage: $0 [--cpu-smoke] [--out FILE]" >&2; exit 2 ;;
    esac
    shift
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
CORES=$(nproc)

if [ "$SMOKE" = 1 ]; then     # tiny sizes, one CPU thread each (a shared CPU stalls torch's thread teams)
    export OMP_NUM_THREADS=1
    DEVICE=()
    B1=(--shape tiny --images 48 --batch-size 8 --unit-rows 8 --workers 2 --repeats 1)
    B2=(--small --images 256 --epochs 2)
    B3=(--shape tiny --images 16 --batch-size 8)
    B6=(--images 2 --reps 1)
    AMP=(--small --train-images 256 --epochs 1)
    LIMITS=(600 600 600 600 600 600 900)
else                          # seconds per step, 470 in all: the suite ends within 8 minutes
    DEVICE=(--gpu)
    B1=(--shape rn50 --images 8192 --batch-size 128 --unit-rows 128 --workers "$CORES" --repeats 2)
    B2=(--images 1024 --epochs 3)
    B3=(--images 1024 --batch-size 64)
    B6=(--reps 9)
    AMP=(--train-images 1024 --epochs 2)
    LIMITS=(110 70 70 60 40 40 80)
fi

step() {  # step NAME LIMIT COMMAND...: run one benchmark, keep its log, note how it ended
    local name=$1 limit=$2; shift 2
    local started=$SECONDS
    echo "== $name: $*" >&2
    timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
    local status=$?
    tail -n 3 "$WORK/$name.log" >&2
    echo "{\"step\": \"$name\", \"status\": $status, \"seconds\": $((SECONDS - started))}" > "$WORK/$name.status.json"
}

index=0
for mode in exact draft gpu; do   # the first writes the photos and the model, the others reuse them
    step "B1_$mode" "${LIMITS[$index]}" "$PYTHON" -m benchmarks.speed.b1_extract "${DEVICE[@]}" "${B1[@]}" \
        --decode "$mode" --data "$WORK/b1data" --json "$WORK/B1_$mode.json"
    index=$((index + 1))
done
step B2 "${LIMITS[3]}" "$PYTHON" -m benchmarks.speed.b2_stream "${DEVICE[@]}" "${B2[@]}" --json "$WORK/B2.json"
step B3 "${LIMITS[4]}" "$PYTHON" -m benchmarks.speed.b3_backbone_loop "${DEVICE[@]}" "${B3[@]}" --json "$WORK/B3.json"
step B6 "${LIMITS[5]}" "$PYTHON" -m benchmarks.speed.b6_head "${DEVICE[@]}" "${B6[@]}" --json "$WORK/B6.json"
step planted_amp "${LIMITS[6]}" "$PYTHON" -m benchmarks.experiments.e5_planted_amp "${DEVICE[@]}" "${AMP[@]}" \
    --json "$WORK/planted_amp.json"

"$PYTHON" - "$WORK" "$OUT" "$SMOKE" <<'EOF'
"""Merge the steps' JSON files, their logs' RATIO lines and the machine into one document."""
import glob, json, os, platform, sys
import torch
work, out, smoke = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
doc = {"smoke": smoke, "python": platform.python_version(), "torch": torch.__version__,
       "cpus": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
       "steps": {}}
for status_file in sorted(glob.glob(os.path.join(work, "*.status.json"))):
    with open(status_file) as handle:
        status = json.load(handle)
    name = status["step"]
    with open(os.path.join(work, name + ".log"), errors="replace") as handle:
        lines = handle.read().splitlines()
    status["ratio_line"] = next((line for line in reversed(lines) if line.startswith("RATIO")), None)
    figures = os.path.join(work, name + ".json")
    if os.path.exists(figures):
        with open(figures) as handle:
            status["figures"] = json.load(handle)
    else:
        status["log_tail"] = lines[-20:]
    doc["steps"][name] = status
with open(out, "w") as handle:
    json.dump(doc, handle, indent=2)
failed = [name for name, step in doc["steps"].items() if step["status"] != 0]
print(f"wrote {out}: {len(doc['steps'])} steps" + (f", failed: {', '.join(failed)}" if failed else ", all passed"))
sys.exit(1 if failed else 0)
EOF

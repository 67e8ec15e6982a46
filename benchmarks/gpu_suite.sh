#!/usr/bin/env bash
# The GPU figures of the README in one command on a lent GPU machine, ending within 6 minutes on
# 16 cores: every step has a time limit, and the limits add up to 340 s (the merge takes seconds).
#   install  the wheels benchmarks/gpu_prepare.sh brought (--no-index, into a private folder)
#   imports  every module the suite uses imports (benchmarks/gpu_packages.py check)
#   B1       extraction at its ceilings: random-weight RN50 in fp16, photo-like JPEGs of real sizes,
#            one decode worker per core, for --decode exact, draft and gpu
#   B2       streaming training from the cache    B3  what the cache buys    B6  head step at paper shapes
#   E5       an RN50-shaped planted world trained and evaluated in float32, --amp bf16 and --amp fp16
#
#   bash benchmarks/gpu_prepare.sh                     # here, once: benchmarks/wheels/ (git ignores it)
#   bash benchmarks/gpu_suite.sh --out "$OUT"          # on the lent machine (carry benchmarks/wheels)
#   bash benchmarks/gpu_suite.sh --cpu-smoke --out D   # here: every step at tiny sizes on the CPU, in
#                                                      # this environment, E5's amp arms under
#                                                      # tests/autocast_emulation.py
#
# Writes OUT/gpu_suite.json (the machine; per step OK, FAILED or TIMEOUT, its seconds, limit, figures
# and RATIO line, the end of its log when it failed) and OUT/gpu_suite.log (the install's and every
# step's output). A step that fails or reaches its limit (stopped with its child processes) is
# recorded as such and the others still run; the exit status is 1 when any step was not OK.
# PYTHON: the interpreter (default python3, the one holding PyTorch on a lent machine).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PYTHON=${PYTHON:-python3}
OUT_DIR=${OUT:-}
SMOKE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-smoke) SMOKE=1 ;;
        --out) OUT_DIR=$2; shift ;;
        *) echo "usage: $0 [--cpu-smoke] --out DIR" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$OUT_DIR" ]; then
    echo "usage: $0 [--cpu-smoke] --out DIR  (or \$OUT set)" >&2
    exit 2
fi
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG="$OUT_DIR/gpu_suite.log"
: > "$LOG"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/steps"
CORES=$(nproc)
SUITE_STARTED=$SECONDS
export PYTHONUNBUFFERED=1 OVML_PROGRESS=log

if [ "$SMOKE" = 1 ]; then     # tiny sizes, one CPU thread each (a shared CPU stalls torch's thread teams)
    export OMP_NUM_THREADS=1
    DEVICE=()
    B1=(--shape tiny --images 48 --batch-size 8 --unit-rows 8 --workers 2 --repeats 1)
    B2=(--small --images 256 --epochs 2)
    B3=(--shape tiny --images 16 --batch-size 8)
    B6=(--images 2 --reps 1)
    E5=(--small --train-images 256 --epochs 1 --emulate-autocast)
    declare -A LIMIT=([install]=60 [imports]=300 [B1_exact]=600 [B1_draft]=600 [B1_gpu]=600 [B2]=600 [B3]=600
                      [B6]=600 [planted_amp]=900)
else                          # seconds per step, 340 in all; sized from estimates (not yet run on a GPU)
    DEVICE=(--gpu)
    B1=(--shape rn50 --images 2048 --batch-size 64 --unit-rows 64 --workers "$CORES" --repeats 2)
    B2=(--images 512 --epochs 3)
    B3=(--images 512 --batch-size 64)
    B6=(--reps 9)
    E5=(--train-images 512 --epochs 2)
    declare -A LIMIT=([install]=30 [imports]=20 [B1_exact]=45 [B1_draft]=35 [B1_gpu]=35 [B2]=35 [B3]=30
                      [B6]=20 [planted_amp]=90)
fi

step() {  # step NAME COMMAND...: run it within its limit, keep its log, note how it ended
    local name=$1; shift
    local limit=${LIMIT[$name]} started=$SECONDS
    echo "== $name (limit ${limit} s): $*" | tee -a "$LOG" >&2
    timeout --kill-after=5 "$limit" "$@" > "$WORK/steps/$name.log" 2>&1
    local code=$?
    cat "$WORK/steps/$name.log" >> "$LOG"
    local status=OK
    if [ "$code" = 124 ] || [ "$code" = 137 ]; then status=TIMEOUT; elif [ "$code" != 0 ]; then status=FAILED; fi
    echo "== $name: $status (exit $code) after $((SECONDS - started)) s" | tee -a "$LOG" >&2
    printf '{"step": "%s", "status": "%s", "exit_code": %d, "seconds": %d, "limit": %d}\n' \
        "$name" "$status" "$code" "$((SECONDS - started))" "$limit" > "$WORK/steps/$name.status.json"
}

SITE="$WORK/site"
if [ "$SMOKE" = 1 ]; then
    echo "== install: skipped (--cpu-smoke runs in this environment)" | tee -a "$LOG" >&2
else
    step install "$PYTHON" -m pip install --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --target "$SITE" benchmarks/wheels/*.whl
fi
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"

step imports "$PYTHON" -m benchmarks.gpu_packages check
for mode in exact draft gpu; do   # the first writes the photos and the model, the others reuse them
    step "B1_$mode" "$PYTHON" -m benchmarks.speed.b1_extract "${DEVICE[@]}" "${B1[@]}" \
        --decode "$mode" --data "$WORK/b1data" --json "$WORK/steps/B1_$mode.json"
done
step B2 "$PYTHON" -m benchmarks.speed.b2_stream "${DEVICE[@]}" "${B2[@]}" --json "$WORK/steps/B2.json"
step B3 "$PYTHON" -m benchmarks.speed.b3_backbone_loop "${DEVICE[@]}" "${B3[@]}" --json "$WORK/steps/B3.json"
step B6 "$PYTHON" -m benchmarks.speed.b6_head "${DEVICE[@]}" "${B6[@]}" --json "$WORK/steps/B6.json"
step planted_amp "$PYTHON" -m benchmarks.experiments.e5_planted_amp "${DEVICE[@]}" "${E5[@]}" \
    --json "$WORK/steps/planted_amp.json"

timeout 60 "$PYTHON" - "$WORK/steps" "$OUT_DIR/gpu_suite.json" "$SMOKE" "$((SECONDS - SUITE_STARTED))" \
    2>&1 <<'EOF' | tee -a "$LOG"
"""Merge the steps' status and figures, their RATIO lines and the machine into one document."""
import glob, json, os, platform, sys
steps_folder, out, smoke, seconds = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
doc = {"smoke": smoke, "amp_under_emulation": smoke, "seconds_before_merge": seconds,
       "python": platform.python_version(), "cpus": os.cpu_count(), "steps": {}}
try:
    import torch, torchvision
    doc.update(torch=torch.__version__, torchvision=torchvision.__version__, cuda=torch.version.cuda,
               gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
except Exception as err:  # the document is written whatever the machine lacks
    doc["torch_error"] = f"{type(err).__name__}: {err}"
for status_file in sorted(glob.glob(os.path.join(steps_folder, "*.status.json")), key=os.path.getmtime):
    with open(status_file) as handle:
        status = json.load(handle)
    name = status["step"]
    with open(os.path.join(steps_folder, name + ".log"), errors="replace") as handle:
        lines = handle.read().splitlines()
    status["ratio_line"] = next((line for line in reversed(lines) if line.startswith("RATIO")), None)
    figures = os.path.join(steps_folder, name + ".json")
    if os.path.exists(figures):
        with open(figures) as handle:
            status["figures"] = json.load(handle)
    if status["status"] != "OK":
        status["log_tail"] = lines[-30:]
    doc["steps"][name] = status
with open(out, "w") as handle:
    json.dump(doc, handle, indent=2)
failed = [f"{name} {step['status']}" for name, step in doc["steps"].items() if step["status"] != "OK"]
print(f"wrote {out}: {len(doc['steps'])} steps" + (f", not OK: {', '.join(failed)}" if failed else ", all OK"))
sys.exit(1 if failed else 0)
EOF

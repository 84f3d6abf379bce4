#!/usr/bin/env bash
# The prepared device check of mtard's CUDA path: one command, about 8 minutes at most on one GPU.
#
#   benchmarks/gpu_check.sh OUT_DIR            # on a CUDA machine
#   benchmarks/gpu_check.sh OUT_DIR --quick    # plumbing only, tiny sizes (what the CPU test runs)
#
# Parts, each under its own time cap and all inside one overall budget (GPU_CHECK_BUDGET_S, 460 s;
# the install below, when needed, comes on top):
#   tests      pytest -m gpu tests/test_gpu.py: MTARD training + exact resume in fp32 and bf16,
#              bf16 really changing the arithmetic, the device-side divergence flag, channels_last,
#              a search trial on half a GPU,
#              a 2-worker NCCL run (skipped, with its reason, on fewer than 2 GPUs)
#   step_cost  benchmarks/step_cost.py: ResNet-18 student, ResNet-56 + WRN-34-10 teachers, batch 128,
#              fp32 / bf16 / bf16+channels_last / +torch.compile: step time, samples/s,
#              step / Σ primitives, peak GPU memory, compile warm-up apart
#   bf16       benchmarks/bf16_robustness.py: PGD-20 robust accuracy of one trained digits model
#              with the attack in bf16 autocast vs fp32
#   search     `mtard search`: a 2-trial digits search with 0.5 GPU per trial (both at once)
# Without CUDA the GPU parts say "no CUDA: skipped" and the CPU stand-ins run (step_cost on digits,
# bf16 autocast on CPU), so the plumbing is exercised anywhere.
#
# It installs nothing but the project's own install command, and only when no .venv exists:
#   python3 -m venv .venv && .venv/bin/pip install -e '.[test]'
# OUT_DIR gets at most 8 small files: env.txt, summary.json, tests.log, step_cost.{log,json},
# bf16_robustness.{log,json}, search.log. Scratch (runs, Ray's files) goes to a temporary directory.
set -u -o pipefail

if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: $0 OUT_DIR [--quick]" >&2
    exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd) || { echo "cannot create $1" >&2; exit 2; }
QUICK=0
[ "${2:-}" = "--quick" ] && QUICK=1
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1
BUDGET=${GPU_CHECK_BUDGET_S:-460}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")

if [ ! -x .venv/bin/python ]; then
    echo "no .venv: running the project's install command (log: $WORK/install.log)"
    { python3 -m venv .venv && .venv/bin/pip install -e '.[test]'; } >"$WORK/install.log" 2>&1 \
        || { tail -20 "$WORK/install.log"; echo "install failed" >&2; exit 1; }
fi
PY=.venv/bin/python
START=$(date +%s)  # the budget counts from here: the install is not part of the check

"$PY" - >"$OUT/env.txt" 2>&1 <<'EOF'
import os, platform, torch
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, python {platform.python_version()}, {os.cpu_count()} CPUs")
print(f"cuda available: {torch.cuda.is_available()}, devices: {torch.cuda.device_count()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}, bf16 {torch.cuda.is_bf16_supported()}")
EOF
command -v nvidia-smi >/dev/null && nvidia-smi >>"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)

RESULTS=()
# part NAME CAP_S LOG COMMAND...: run under min(CAP_S, what is left of the budget); record status.
part() {
    local name=$1 cap=$2 log=$3
    shift 3
    local left=$((BUDGET - ($(date +%s) - START)))
    [ "$left" -lt "$cap" ] && cap=$left
    if [ "$cap" -le 5 ]; then
        RESULTS+=("\"$name\": {\"status\": \"skipped: budget spent\"}")
        echo "== $name: skipped, budget spent"
        return
    fi
    echo "== $name (at most ${cap} s): $*"
    local t0=$(date +%s)
    timeout --kill-after=10 "$cap" "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local secs=$(($(date +%s) - t0)) status=ok
    [ "$rc" -ne 0 ] && status="failed (exit $rc)"
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && status="timed out after ${cap} s"
    RESULTS+=("\"$name\": {\"status\": \"$status\", \"seconds\": $secs, \"log\": \"$(basename "$log")\"}")
}
skip() {
    RESULTS+=("\"$1\": {\"status\": \"skipped: $2\"}")
    echo "== $1: skipped: $2" | tee "$OUT/$1.log"
}

# --- 1. the GPU-marked tests (each skips with its reason where it cannot run)
part tests 170 "$OUT/tests.log" "$PY" -m pytest -m gpu -q -rs -n 0 -p no:cacheprovider tests/test_gpu.py  # one process: the GPU is not shared

# --- 2. step cost
if [ "$CUDA" = 1 ] && [ "$QUICK" = 0 ]; then
    part step_cost 200 "$OUT/step_cost.log" "$PY" benchmarks/step_cost.py --device cuda --settings cifar_paper \
        --variants fp32 bf16 bf16_cl bf16_cl_compile --repeats 10 --warmup 3 --json "$OUT/step_cost.json"
else
    # no CUDA (or --quick): the same script on the digits setting, a CPU stand-in for its plumbing
    part step_cost 120 "$OUT/step_cost.log" "$PY" benchmarks/step_cost.py --device cpu --settings digits --threads 1 \
        --variants fp32 bf16 --repeats 2 --warmup 1 --compare-host-syncs --json "$OUT/step_cost.json"
fi

# --- 3. PGD-20 in bf16 vs fp32 on one trained model (CPU autocast without CUDA: the mechanism)
DEV=cpu; [ "$CUDA" = 1 ] && DEV=cuda
BF16_ARGS=(--epochs 8); [ "$QUICK" = 1 ] && BF16_ARGS=(--epochs 1 --steps 3)
BF16_CAP=60; [ "$CUDA" = 1 ] || BF16_CAP=180  # a CPU stand-in trains slower
part bf16 "$BF16_CAP" "$OUT/bf16_robustness.log" "$PY" benchmarks/bf16_robustness.py --out "$WORK/bf16" --device "$DEV" --threads 2 "${BF16_ARGS[@]}"
[ -f "$WORK/bf16/bf16_robustness.json" ] && cp "$WORK/bf16/bf16_robustness.json" "$OUT/"

# --- 4. a 2-trial digits search, 0.5 GPU per trial, through the public CLI
if [ "$CUDA" = 1 ] && [ "$QUICK" = 0 ]; then
    cat >"$WORK/half_gpu.yaml" <<'EOF'
base: digits
set: {method.name: sat, attack.steps: 5, attack.step_size: 0.08}
objectives:
  - {metric: val_clean_acc, direction: max}
  - {metric: val_pgd_acc, direction: max}
sampler: {name: random, seed: 0}
num_samples: 2
max_concurrent: 2
resources: {workers: 1, cpus_per_worker: 1, gpus_per_worker: 0.5}
budget: {epochs: 3, scale_milestones: true, time_budget_s: null}
enqueue_defaults: true
space:
  optim.lr: {loguniform: [0.02, 0.1]}
EOF
    cat >"$WORK/trial_devices.py" <<'EOF'
import csv, sys, torch
for row in csv.DictReader(open(sys.argv[1])):
    path = row.get("checkpoint")
    where = sorted({t.device.type for t in torch.load(path, weights_only=True)["state_dict"].values()}) if path else "no checkpoint"
    print(row.get("trial_id"), row.get("status"), where)
EOF
    cat >"$WORK/search.sh" <<EOF
set -e
'$PWD/.venv/bin/mtard' search '$WORK/half_gpu.yaml' --storage '$WORK/runs' --name half_gpu
echo '--- trials.csv'; cat '$WORK/runs/half_gpu/trials.csv'
echo '--- the device each trial saved its student from (cuda: it trained on the GPU)'
'$PWD/$PY' '$WORK/trial_devices.py' '$WORK/runs/half_gpu/trials.csv'
EOF
    part search 120 "$OUT/search.log" bash "$WORK/search.sh"
else
    skip search "no CUDA (or --quick): a search on fractional GPUs needs a GPU"
fi

TOTAL=$(($(date +%s) - START))
{
    echo "{"
    echo "  \"cuda\": $CUDA, \"quick\": $QUICK, \"seconds\": $TOTAL, \"budget_s\": $BUDGET,"
    for i in "${!RESULTS[@]}"; do
        sep=","; [ "$i" -eq $((${#RESULTS[@]} - 1)) ] && sep=""
        echo "  ${RESULTS[$i]}$sep"
    done
    echo "}"
} >"$OUT/summary.json"
cat "$OUT/summary.json"
rm -rf "$WORK"
grep -q '"failed\|timed out' "$OUT/summary.json" && exit 1
exit 0

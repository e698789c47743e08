#!/usr/bin/env bash
# One prepared run on a bare GPU machine with no network: versions, build, GPU tests, benchmark.
#
#   bash bench/gpu_check.sh                 # on the GPU machine (about 5 minutes, each step bounded)
#   bash bench/gpu_check.sh --skip-build    # reuse the build that is there
#   bash bench/gpu_check.sh --dry           # on any machine: the same steps with the GPU parts
#                                           # replaced (pytest --collect-only, gpu_bench.py --dry)
#   bash bench/gpu_check.sh --only sst2     # one step (versions, build, tests, bench or sst2)
#
# Steps: versions (python, numpy, cupy and its CUDA, the GPU, torch and its CUDA, nvcc), build
# (pip install --no-build-isolation --no-deps -e .), tests (the device-aware test files with
# MINILLM_DEVICE=cuda), bench (bench/gpu_bench.py: the table against torch on the same GPU).
# Each step runs under its own time limit and the script goes on when one fails or times out, so
# the logs, the table and the summary are always written. They go to $OUT (default ./gpu-out), at
# most 8 files, as the device tool brings back: versions.log build.log tests.log bench.log
# gpu_bench.txt gpu_bench.json summary.txt. The table and the summary are printed last (the tool
# returns the end of the output). Exit status 0 when every step passed.
#
# Environment: PYTHON (default python3), OUT, GPU_CHECK_TESTS (test files, space-separated, to
# replace the default list), GPU_CHECK_LIMIT_{VERSIONS,BUILD,TESTS,BENCH,SST2} (seconds).
# GPU_CHECK_SST2="MODEL_DIR DATA_DIR" adds a last step, the real fine-tune on the GPU (minillm
# finetune --device cuda, the recipe of bench/sst2_finetune.py; its dev accuracy is the last line of
# sst2.log). The GPU machine has no network: carry the model in (the device tool carries 64 MiB; a
# float16 copy of all-MiniLM-L6-v2 is 44 MiB and loads upcast to float32) and SST-2 beside it:
# bench/gpu_payload.py writes both to .device/, whose model cache this script then uses as MINILLM_HOME.
set -u
cd "$(dirname "$0")/.." || exit 2
SCRIPT=bench/gpu_check.sh

# ---- one step, run by the driver below as `bash bench/gpu_check.sh --step NAME` under `timeout` ----
step_versions() {
    "$PYTHON" - <<'EOF'
"""Versions, and on a GPU run exit 1 when CuPy or torch sees no GPU."""
import importlib
import os
import platform
import sys

dry = os.environ["DRY"] == "1"
missing = []
print(f"python {platform.python_version()} ({sys.executable}), {platform.machine()}, {os.cpu_count()} CPUs")
for name in ("numpy", "scipy", "Cython", "tokenizers", "safetensors", "transformers", "pytest", "hypothesis"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as err:
        print(f"{name}: {err}")
try:
    import cupy
    runtime = cupy.cuda.runtime
    print(f"cupy {cupy.__version__}, CUDA runtime {runtime.runtimeGetVersion()}, driver {runtime.driverGetVersion()}")
    for index in range(runtime.getDeviceCount()):
        p = runtime.getDeviceProperties(index)
        print(f"  GPU {index}: {p['name'].decode()}, sm_{p['major']}{p['minor']}, "
              f"{p['totalGlobalMem'] / 2 ** 30:.0f} GiB, {p['multiProcessorCount']} SMs")
except Exception as err:
    print(f"cupy: no GPU through CuPy ({type(err).__name__}: {err})")
    missing.append("cupy")
try:
    import torch
    gpu = torch.cuda.is_available()
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
          + (f"GPU {torch.cuda.get_device_name()}" if gpu else "no GPU"))
    if not gpu:
        missing.append("torch.cuda")
except Exception as err:
    print(f"torch: {type(err).__name__}: {err}")
    missing.append("torch")
sys.path.insert(0, os.getcwd())
from minillm import cuda  # noqa: E402
print(f"minillm.cuda.is_available(): {cuda.is_available()}" + ("" if cuda.is_available() else
                                                                f" ({cuda.unavailable_reason()})"))
if missing and not dry:
    sys.exit(f"no GPU for: {', '.join(missing)}")
EOF
    local status=$?
    if command -v nvcc > /dev/null; then nvcc --version | tail -n 2; else echo "nvcc: not on PATH"; fi
    if command -v nvidia-smi > /dev/null; then  # read-only queries: the card's settings are left alone
        nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,temperature.gpu \
            --format=csv
    fi
    return $status
}

step_build() {
    PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$PYTHON" -m pip install --no-build-isolation --no-deps -e .
}

step_tests() {
    if [ -z "$TESTS" ]; then echo "no test files to run"; return 1; fi  # pytest alone would run them all
    local mode=(-q -rs --durations=15)
    if [ "$DRY" = 1 ]; then mode=(--collect-only -q); fi
    # shellcheck disable=SC2086  # TESTS is a space-separated list of paths
    MINILLM_DEVICE=cuda MINILLM_REQUIRE_PARITY=1 "$PYTHON" -m pytest -p no:cacheprovider "${mode[@]}" $TESTS
}

step_sst2() {
    local model data
    read -r model data <<< "$GPU_CHECK_SST2"
    if [ "$DRY" = 1 ]; then  # the same command on a sliver of the data, on the host
        "$PYTHON" -m minillm finetune --model "$model" --data "$data" --out "$OUT/sst2-model" --overwrite \
            --limit 64 --eval-limit 64 --max-length 64 --no-progress
    else
        "$PYTHON" -m minillm finetune --model "$model" --data "$data" --out "$OUT/sst2-model" --overwrite \
            --epochs 1 --batch-size 32 --lr 5e-5 --max-length 64 --seed 42 --no-progress --device cuda
    fi
    local status=$?
    rm -rf "$OUT/sst2-model"  # the weights would not come back anyway (the tool's file limits)
    return $status
}

step_bench() {
    local dry=()
    if [ "$DRY" = 1 ]; then dry=(--dry); fi
    # the bench's own budget ends it, table written, before this step's limit kills it
    "$PYTHON" bench/gpu_bench.py --out "$OUT" --budget $((LIMIT_BENCH - 25)) "${dry[@]}"
}

if [ "${1:-}" = --step ]; then
    "step_$2"
    exit
fi

# ---- the driver ------------------------------------------------------------------------------------
DRY=0
SKIP_BUILD=0
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry) DRY=1 ;;
        --skip-build) SKIP_BUILD=1 ;;
        --only)
            case "${2:-}" in
                versions | build | tests | bench | sst2) ONLY=$2; shift ;;
                *) echo "gpu_check.sh: --only takes versions, build, tests, bench or sst2" >&2; exit 2 ;;
            esac ;;
        -h | --help) sed -n '2,25p' "$SCRIPT"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (expected --dry, --skip-build, --only STEP)" >&2; exit 2 ;;
    esac
    shift
done
export DRY PYTHON="${PYTHON:-python3}" OUT="${OUT:-$PWD/gpu-out}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1  # minillm even if the build fails
export LIMIT_BENCH="${GPU_CHECK_LIMIT_BENCH:-200}"
if [ -d .device/home ]; then  # bench/gpu_payload.py's model cache, carried in: the pretrained tests run too
    export MINILLM_HOME="$PWD/.device/home"
fi
mkdir -p "$OUT"

# The GPU tests: every test file with a test that takes the `device` fixture (MINILLM_DEVICE picks
# the device) or the `cupy` fixture (GPU only), and every CUDA test file.
DEFAULT_TESTS=$( (grep -lE '^def test_\w*\(.*\b(device|cupy)\b' tests/test_*.py; ls tests/test_*cuda*.py) 2> /dev/null \
    | sort -u | tr '\n' ' ')
TESTS=""
for file in ${GPU_CHECK_TESTS:-$DEFAULT_TESTS}; do
    if [ -e "$file" ]; then TESTS="$TESTS $file"; else echo "gpu_check.sh: no $file, not run"; fi
done
export TESTS

SUMMARY=()
FAILED=()
run_step() {  # NAME LIMIT_SECONDS: run one step under `timeout`, its output to the screen and NAME.log
    local name=$1 limit=$2 started=$SECONDS status result
    if [ -n "$ONLY" ] && [ "$name" != "$ONLY" ]; then return; fi
    echo
    echo "=== $name (limit $limit s)"
    timeout -k 5 "$limit" bash "$SCRIPT" --step "$name" 2>&1 | tee "$OUT/$name.log"
    status=${PIPESTATUS[0]}
    case $status in
        0) result=pass ;;
        124 | 137) result="TIMEOUT"; FAILED+=("$name") ;;
        *) result="FAIL (exit $status)"; FAILED+=("$name") ;;
    esac
    SUMMARY+=("$(printf '%-9s %-16s %4d s' "$name" "$result" $((SECONDS - started)))")
}

run_step versions "${GPU_CHECK_LIMIT_VERSIONS:-60}"
if [ "$SKIP_BUILD" = 1 ] && [ -z "$ONLY" ]; then
    SUMMARY+=("$(printf '%-9s %-16s' build skipped)")
else
    run_step build "${GPU_CHECK_LIMIT_BUILD:-120}"
fi
run_step tests "${GPU_CHECK_LIMIT_TESTS:-150}"
if [ -z "$ONLY" ] || [ "$ONLY" = tests ]; then
    TEST_COUNTS=$(grep -E '[0-9]+ (passed|failed|error|tests? collected)' "$OUT/tests.log" | tail -n 1)
    SUMMARY[${#SUMMARY[@]} - 1]+="   $TEST_COUNTS"  # pytest's last line: passed, failed, skipped
fi
run_step bench "$LIMIT_BENCH"
if [ -n "${GPU_CHECK_SST2:-}" ]; then
    run_step sst2 "${GPU_CHECK_LIMIT_SST2:-240}"
elif [ "$ONLY" = sst2 ]; then
    echo "gpu_check.sh: --only sst2 needs GPU_CHECK_SST2=\"MODEL_DIR DATA_DIR\"" >&2; exit 2
fi

{
    echo
    echo "=== summary ($([ "$DRY" = 1 ] && echo "dry run" || echo "GPU run"), $SECONDS s)"
    printf '%s\n' "${SUMMARY[@]}"
    if [ ${#FAILED[@]} -eq 0 ]; then
        echo "all steps passed"
    else
        echo "steps not passed: ${FAILED[*]}"
    fi
    echo "logs and table: $OUT"
} | tee "$OUT/summary.txt"
[ ${#FAILED[@]} -eq 0 ]

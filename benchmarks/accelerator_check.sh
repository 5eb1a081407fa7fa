#!/usr/bin/env bash
# Headline benchmark rows and the multi-device tests on an accelerator, in < 8 minutes.
#
#   bash benchmarks/accelerator_check.sh [OUT_DIR] [--device gpu|tpu|cpu] [--quick]
#
# OUT_DIR defaults to $OUT, else benchmarks/accelerator_out (inside the repository);
# nothing is written elsewhere (XLA/JAX caches are pointed under OUT_DIR too).
# Runs from the repository root with the Python in $PYTHON (default: python), which
# must already have mtl_jax's dependencies (and torch/torchjd for the torchjd rows).
#   1. environment: jax.devices(), nvidia-smi if present         -> OUT/env.txt
#   2. python -m benchmarks --device DEVICE on the headline rows  -> OUT/bench/
#      (W1 K=10,40 and W3 K=10,40 for EW, MGDA, UPGrad, PCGrad in every mode, f32 and
#      bf16; W2; torchjd on the same device where it has the method)
#   3. the test files that exercise multi-device code (Mesh / data parallel), on
#      DEVICE's devices                                             -> OUT/tests.xml
# --quick: tiny sizes and test collection only (a dry run of the paths; seconds on CPU).
set -u -o pipefail

OUT_DIR="${OUT:-}"
DEVICE=gpu
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --device=*) DEVICE="${1#--device=}"; shift ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n 2,17p "$0"; exit 0 ;;
    *) OUT_DIR="$1"; shift ;;
  esac
done
case "$DEVICE" in cpu|gpu|tpu) ;; *) echo "--device must be cpu, gpu or tpu, got '$DEVICE'" >&2; exit 2 ;; esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT_DIR="${OUT_DIR:-$ROOT/benchmarks/accelerator_out}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
PY="${PYTHON:-python}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export MPLCONFIGDIR="$OUT_DIR/.mpl" XDG_CACHE_HOME="$OUT_DIR/.cache"
case "$DEVICE" in
  gpu) PLATFORM=cuda ;;
  tpu) PLATFORM=tpu ;;
  *) PLATFORM=cpu ;;
esac
status=0
t0=$(date +%s)
log() { echo "[accelerator_check $(( $(date +%s) - t0 ))s] $*" | tee -a "$OUT_DIR/log.txt"; }

log "1/3 environment ($DEVICE) -> $OUT_DIR/env.txt"
{
  date -u
  command -v nvidia-smi >/dev/null && nvidia-smi
  JAX_PLATFORMS="$PLATFORM" "$PY" -c "import jax; print(jax.__version__, jax.default_backend(), jax.devices())"
} > "$OUT_DIR/env.txt" 2>&1 || { log "cannot start JAX on $DEVICE (see env.txt)"; exit 1; }

log "2/3 headline benchmark rows -> $OUT_DIR/bench"
if [ "$QUICK" = 1 ]; then
  BENCH=(--quick --workloads w2,w3 --methods mgda)
else
  BENCH=(--methods mgda,upgrad,pcgrad --workloads w3,w2,w1 --num-tasks 10,40
         --precision f32,bf16 --bf16-methods equal_weighting,mgda --steps 5 --budget-min 4)
fi
timeout 330 "$PY" -m benchmarks --device "$DEVICE" --out "$OUT_DIR/bench" "${BENCH[@]}" \
  > "$OUT_DIR/bench.log" 2>&1 || { status=1; log "benchmark failed (see bench.log)"; }
tail -n 40 "$OUT_DIR/bench.log"

log "3/3 multi-device tests -> $OUT_DIR/tests.xml"
TESTS=(tests/training/test_data_parallel.py tests/training/test_nonfinite.py
       tests/training/test_scale_agreement.py tests/models/test_architectures_training.py
       tests/data/test_pipeline.py)
PYTEST=(-q -p no:cacheprovider --junitxml "$OUT_DIR/tests.xml")
[ "$QUICK" = 1 ] && PYTEST+=(--collect-only)
# tests/conftest.py only sets JAX_PLATFORMS=cpu when it is unset.
JAX_PLATFORMS="$PLATFORM" timeout 150 "$PY" -m pytest "${PYTEST[@]}" "${TESTS[@]}" \
  > "$OUT_DIR/tests.log" 2>&1 || { status=1; log "tests failed (see tests.log)"; }
tail -n 15 "$OUT_DIR/tests.log"
log "done, status $status"
exit $status

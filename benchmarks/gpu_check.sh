#!/usr/bin/env bash
# Keras on JAX on an accelerator machine with no TensorFlow and no network.
#
#   benchmarks/gpu_check.sh --prepare WHEELS_DIR   # on a networked machine: download what is missing
#   benchmarks/gpu_check.sh WHEELS_DIR [DATA_DIR]  # on the GPU machine: install offline, run, compare
#
# The GPU machine has Python 3.12 with JAX (CUDA), NumPy, pandas, scikit-learn, SciPy,
# matplotlib, Pillow, PyYAML and tqdm. What the harness needs beyond that for keras-jax
# is pure Python or small binary wheels (keras and its helpers, pydantic): --prepare
# downloads them for CPython 3.12 on x86-64 into WHEELS_DIR (git-ignored, about 15 MB).
# The run then makes a virtual environment that sees the system's packages, installs
# the wheels with --no-index, runs experiments/gpu_check.yaml on keras-jax, checks that
# every trial's env.json names a GPU, and trains the first trial again with JAX on the
# CPU (JAX_PLATFORMS=cpu) to print training images/s on GPU against CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
WANTED=(keras pydantic)

if [ "${1:-}" = "--prepare" ]; then
  out=${2:?usage: benchmarks/gpu_check.sh --prepare WHEELS_DIR}
  mkdir -p "$out"
  python3 -m pip download --dest "$out" --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --implementation cp "${WANTED[@]}"
  # What the GPU machine already has, so its own builds (CUDA JAX above all) stay in use.
  for present in numpy jax jaxlib ml_dtypes scipy; do rm -f "$out"/${present}-*.whl; done
  du -sh "$out"
  exit 0
fi

wheels=${1:?usage: benchmarks/gpu_check.sh WHEELS_DIR [DATA_DIR]}
data=${2:-../shared/datasets/UTKFace}
python=${PYTHON:-python3}
venv=.venv-gpu
[ -x $venv/bin/python ] || $python -m venv --system-site-packages $venv
$venv/bin/python -m pip install --quiet --no-index --find-links "$wheels" "${WANTED[@]}"
# The harness itself from this checkout, without its TensorFlow-side dependencies.
export PYTHONPATH=$PWD
$venv/bin/python - <<'PY'
import jax
print("JAX", jax.__version__, "devices:", jax.devices())
PY
$venv/bin/python benchmarks/gpu_check.py --data "$data" --results "${RESULTS:-results}"

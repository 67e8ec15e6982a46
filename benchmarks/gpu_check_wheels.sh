#!/usr/bin/env bash
# Run here: proves that a lent machine's kind of environment plus the prepared wheels imports every
# module benchmarks/gpu_suite.sh uses. A fresh virtual environment (no system site-packages) gets
# only torch, torchvision, numpy, pillow, h5py, click and matplotlib (and what they depend on),
# from the package index this machine's pip is set up with and at constraints.txt's pins, as
# `make test` installs them; the wheels are prepared for this interpreter's Python version
# (gpu_prepare.sh: pure-Python wheels are the lent machine's; a few compiled ones differ by
# version) and installed into a private folder as the suite installs them; then
# `python -m benchmarks.gpu_packages check` runs there.
#
#   bash benchmarks/gpu_check_wheels.sh [WORK]     # WORK: where the venv is kept (default a temporary folder)
#
# PYTHON: the interpreter that makes the venv (default python3); PREPARE_PYTHON: the one holding
# ovml's requirements, whose versions are prepared (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WORK=${1:-$(mktemp -d)}
VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYTHON=${PREPARE_PYTHON:-.venv/bin/python} bash benchmarks/gpu_prepare.sh --python-version "$VERSION" \
    --dest "$WORK/wheels"
test -x "$WORK/venv/bin/python" || "$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet -c constraints.txt torch torchvision numpy pillow h5py click matplotlib
rm -rf "$WORK/site"
"$WORK/venv/bin/python" -m pip install --quiet --no-index --no-deps --no-compile --target "$WORK/site" \
    "$WORK"/wheels/*.whl
echo "fresh environment: $("$WORK/venv/bin/python" -m pip list --format=freeze | grep -ciE '^(torch|torchvision|numpy|pillow|h5py|click|matplotlib)==') of the lent packages, $("$WORK/venv/bin/python" -m pip list --format=freeze | wc -l) distributions; $(ls "$WORK"/wheels/*.whl | wc -l) prepared wheels"
PYTHONPATH="$PWD:$WORK/site" "$WORK/venv/bin/python" -m benchmarks.gpu_packages check

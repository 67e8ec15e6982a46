#!/usr/bin/env bash
# Run here (a machine that reaches the package index) before a GPU run: downloads, for the lent
# machine's Python (3.12, manylinux x86_64), the wheels of every package benchmarks/gpu_suite.sh
# needs that a lent machine lacks (benchmarks/gpu_packages.py lists them, at this environment's
# versions) into benchmarks/wheels/, which git ignores and the device tool carries
# (carry ["benchmarks/wheels"]); gpu_suite.sh installs them there with --no-index.
#
#   bash benchmarks/gpu_prepare.sh [--python-version 3.12] [--dest benchmarks/wheels]
#
# PYTHON is the interpreter whose environment holds ovml's requirements (default .venv/bin/python,
# the one `make test` builds). The folder is replaced whole: one version of each package.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
VERSION=3.12
DEST=benchmarks/wheels
while [ $# -gt 0 ]; do
    case "$1" in
        --python-version) VERSION=$2; shift ;;
        --dest) DEST=$2; shift ;;
        *) echo "usage: $0 [--python-version X.Y] [--dest DIR]" >&2; exit 2 ;;
    esac
    shift
done
FRESH=$(mktemp -d)
trap 'rm -rf "$FRESH"' EXIT
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m benchmarks.gpu_packages requirements \
    --python-version "$VERSION" > "$FRESH/requirements.txt"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$FRESH/wheels" -r "$FRESH/requirements.txt"
mv "$FRESH/requirements.txt" "$FRESH/wheels/requirements.txt"
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$FRESH/wheels" "$DEST"
echo "$DEST: $(ls "$DEST"/*.whl | wc -l) wheels for Python $VERSION, $(du -sh "$DEST" | cut -f1)"

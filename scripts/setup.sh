#!/usr/bin/env bash
# Installs the libtorch that bayes_perception builds against: PyTorch 2.11.0 from the Python
# package index, in a venv in a cache directory outside the repository.
#
# - Does nothing when LIBTORCH is set (the user brings their own libtorch, e.g. on a Jetson).
# - Idempotent: a venv is only trusted when its completion marker matches what we want; a
#   half-finished install (no marker, wrong versions) is removed and redone.
set -euo pipefail

TORCH_VERSION="2.11.0"
# Python packages the test suite uses as independent readers/writers of rosbag2 files.
# Bump STAMP when this list changes so existing caches are completed.
PY_TEST_PACKAGES=()
STAMP="torch==${TORCH_VERSION} ${PY_TEST_PACKAGES[*]:-}"

CACHE_DIR="${BAYES_PERCEPTION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bayes_perception}"
VENV="$CACHE_DIR/venv"
MARKER="$VENV/.bayes_perception_complete"

if [[ -n "${LIBTORCH:-}" ]]; then
    echo "setup: LIBTORCH=$LIBTORCH is set; using that libtorch, installing nothing."
    exit 0
fi

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$STAMP" ]]; then
    echo "setup: $VENV is complete ($STAMP)."
    exit 0
fi

if [[ -d "$VENV" ]]; then
    echo "setup: $VENV is incomplete or out of date; removing it and installing again."
    rm -rf "$VENV"
fi

mkdir -p "$CACHE_DIR"
PYTHON="${PYTHON:-python3}"
echo "setup: creating venv $VENV with $($PYTHON --version)"
"$PYTHON" -m venv "$VENV"
echo "setup: installing torch==$TORCH_VERSION ${PY_TEST_PACKAGES[*]:-} (about 2 minutes, 4.6 GB with the CUDA wheels)"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
    "torch==$TORCH_VERSION" "${PY_TEST_PACKAGES[@]}"

installed="$("$VENV/bin/python" -W ignore -c 'import torch; print(torch.__version__.split("+")[0])')"
if [[ "$installed" != "$TORCH_VERSION" ]]; then
    echo "setup: expected torch $TORCH_VERSION, the venv has $installed" >&2
    exit 1
fi
libdir="$("$VENV/bin/python" -W ignore -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
if [[ ! -f "$libdir/libtorch_cpu.so" ]]; then
    echo "setup: $libdir/libtorch_cpu.so is missing; the torch install is broken" >&2
    exit 1
fi
printf '%s' "$STAMP" > "$MARKER"
echo "setup: done; libtorch is in $libdir"

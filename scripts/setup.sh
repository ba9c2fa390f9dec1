#!/usr/bin/env bash
# Installs what bayes_perception builds and tests against, in a venv in a cache directory
# outside the repository (default ${XDG_CACHE_HOME:-$HOME/.cache}/bayes_perception/venv):
#
# - PyTorch 2.11.0 from the Python package index, whose libtorch the build links. Skipped
#   when LIBTORCH is set (the user brings their own libtorch, e.g. on a Jetson).
# - The Python packages the tests use as independent rosbag2/MCAP readers and writers.
#
# Idempotent: each part is trusted only when its completion marker matches what we want.
# A half-finished torch install (no marker, wrong version) is removed and redone.
set -euo pipefail

TORCH_VERSION="2.11.0"
TORCH_STAMP="torch==${TORCH_VERSION}"
# Test-only packages (independent rosbag2 / MCAP implementations).
TEST_PACKAGES=(numpy rosbags==0.11.9 mcap==1.6.0 mcap-ros2-support==0.6.0)
TEST_STAMP="${TEST_PACKAGES[*]}"
# The Ray fleet driver (scripts/fleet.py) and its tests (tests/fleet, local Ray cluster).
FLEET_PACKAGES=(ray==2.60.0 pytest==8.3.4)
FLEET_STAMP="${FLEET_PACKAGES[*]}"

CACHE_DIR="${BAYES_PERCEPTION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bayes_perception}"
VENV="$CACHE_DIR/venv"
TORCH_MARKER="$VENV/.torch_complete"
TEST_MARKER="$VENV/.test_packages_complete"
FLEET_MARKER="$VENV/.fleet_packages_complete"
PYTHON="${PYTHON:-python3}"
PIP=("$VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir)

marker_is() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

new_venv() {
    rm -rf "$VENV"
    mkdir -p "$CACHE_DIR"
    echo "setup: creating venv $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
}

if [[ -n "${LIBTORCH:-}" ]]; then
    echo "setup: LIBTORCH=$LIBTORCH is set; using that libtorch, not installing torch."
    [[ -x "$VENV/bin/python" ]] || new_venv
elif marker_is "$TORCH_MARKER" "$TORCH_STAMP"; then
    echo "setup: $VENV has $TORCH_STAMP."
else
    if [[ -d "$VENV" ]]; then
        echo "setup: $VENV has no complete torch install; removing it and installing again."
    fi
    new_venv
    echo "setup: installing $TORCH_STAMP (about 2 minutes, 4.6 GB with the CUDA wheels)"
    "${PIP[@]}" "$TORCH_STAMP"
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
    printf '%s' "$TORCH_STAMP" > "$TORCH_MARKER"
    echo "setup: torch done; libtorch is in $libdir"
fi

if marker_is "$TEST_MARKER" "$TEST_STAMP"; then
    echo "setup: test packages present ($TEST_STAMP)."
else
    echo "setup: installing test packages: $TEST_STAMP"
    "${PIP[@]}" "${TEST_PACKAGES[@]}"
    "$VENV/bin/python" -c 'import rosbags, mcap, mcap_ros2, numpy'
    printf '%s' "$TEST_STAMP" > "$TEST_MARKER"
fi

if marker_is "$FLEET_MARKER" "$FLEET_STAMP"; then
    echo "setup: fleet packages present ($FLEET_STAMP)."
else
    echo "setup: installing the fleet driver's packages: $FLEET_STAMP"
    "${PIP[@]}" "${FLEET_PACKAGES[@]}"
    "$VENV/bin/python" -c 'import ray, pytest'
    printf '%s' "$FLEET_STAMP" > "$FLEET_MARKER"
fi

#!/usr/bin/env bash
# Installs a ROS 2 Jazzy core from the Python package index (the ros-python-wheels
# project) into a venv in the cache directory, for building bayes_perception_node and
# testing it end to end on a machine without ROS 2:
#
#   ${BAYES_PERCEPTION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bayes_perception}/ros
#
# That venv is a ROS install prefix (lib/librcl.so, include/, share/ament_index/...) with
# rclpy, Fast DDS and the message packages the node uses, plus libclang for r2r's bindgen
# and the Python packages of the end-to-end tests. `source scripts/ros-env.sh` then gives a
# shell where the node builds and runs.
#
#   scripts/ros-setup.sh           the ROS core, libclang and the test packages
#   scripts/ros-setup.sh colcon    also colcon with colcon-ros-cargo (its cargo-ament-build
#                                  comes from the package index too)
#
# Not needed with a real ROS 2 install (`source /opt/ros/jazzy/setup.bash`): ros-env.sh
# uses a sourced ROS 2 when there is one.
#
# Idempotent like scripts/setup.sh: each part is trusted only when its completion marker
# matches what is wanted; a half-finished venv is removed and installed again.
set -euo pipefail

ROS_PACKAGES=(
    "ros-jazzy-rclpy[fastrtps]==7.1.6"
    ros-jazzy-std-msgs==5.3.6
    ros-jazzy-sensor-msgs==5.3.6
    ros-jazzy-diagnostic-msgs==5.3.6
    ros-jazzy-rosgraph-msgs==2.0.3
    ros-jazzy-rcl-interfaces==2.0.3
    # bindgen's libclang for r2r (no root needed, unlike Debian's libclang-dev).
    libclang==18.1.1
    # The end-to-end tests: pytest, Pillow for TIFF and JPEG, PyYAML for params files.
    pytest==9.2.0
    numpy==2.4.6
    pillow==13.0.0
    pyyaml==6.0.4
)
COLCON_PACKAGES=(
    colcon-common-extensions==0.3.0
    colcon-core==0.21.3
    colcon-ros==0.5.0
    colcon-cargo==0.2.0
    colcon-ros-cargo==0.2.0
    colcon-library-path==0.2.1
    cargo-ament-build==0.1.11
)

CACHE_DIR="${BAYES_PERCEPTION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bayes_perception}"
ROS_VENV="$CACHE_DIR/ros"
ROS_MARKER="$ROS_VENV/.ros_complete"
COLCON_MARKER="$ROS_VENV/.colcon_complete"
ROS_STAMP="${ROS_PACKAGES[*]}"
COLCON_STAMP="${COLCON_PACKAGES[*]}"
PYTHON="${PYTHON:-python3}"
PIP=("$ROS_VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir)

marker_is() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

if marker_is "$ROS_MARKER" "$ROS_STAMP"; then
    echo "ros-setup: $ROS_VENV has the ROS 2 Jazzy core."
else
    if [[ -d "$ROS_VENV" ]]; then
        echo "ros-setup: $ROS_VENV is incomplete or outdated; removing it and installing again."
    fi
    rm -rf "$ROS_VENV"
    mkdir -p "$CACHE_DIR"
    echo "ros-setup: creating $ROS_VENV with $($PYTHON --version) (ROS 2 Jazzy wheels, about a minute, 300 MB)"
    "$PYTHON" -m venv "$ROS_VENV"
    if ! "${PIP[@]}" "${ROS_PACKAGES[@]}"; then
        echo "ros-setup: pip could not install the ROS 2 Jazzy wheels with $($PYTHON --version)" >&2
        echo "ros-setup: they are published for CPython 3.10 to 3.12 on x86-64 Linux (this set tested with 3.11);" >&2
        echo "ros-setup: set PYTHON=python3.11," >&2
        echo "ros-setup: or source a ROS 2 installation (source /opt/ros/jazzy/setup.bash)" >&2
        exit 1
    fi
    # The wheels link rcl statically to rmw_fastrtps_cpp and ship no
    # librmw_implementation.so, which r2r links by name: point that name at Fast DDS's rmw.
    ln -sf librmw_fastrtps_cpp.so "$ROS_VENV/lib/librmw_implementation.so"
    for needed in lib/librcl.so lib/librmw_fastrtps_cpp.so share/sensor_msgs/msg/Image.msg \
                  share/rosgraph_msgs/msg/Clock.msg; do
        if [[ ! -e "$ROS_VENV/$needed" ]]; then
            echo "ros-setup: $ROS_VENV/$needed is missing; the ROS wheels changed layout" >&2
            exit 1
        fi
    done
    printf '%s' "$ROS_STAMP" > "$ROS_MARKER"
    # The colcon part was installed into the removed venv, if at all.
    rm -f "$COLCON_MARKER"
    echo "ros-setup: ROS 2 Jazzy core done"
fi

if [[ "${1:-}" == "colcon" ]]; then
    if marker_is "$COLCON_MARKER" "$COLCON_STAMP"; then
        echo "ros-setup: colcon present."
    else
        echo "ros-setup: installing colcon, colcon-ros-cargo and cargo-ament-build"
        "${PIP[@]}" "${COLCON_PACKAGES[@]}"
        "$ROS_VENV/bin/colcon" --help > /dev/null
        "$ROS_VENV/bin/cargo-ament-build" --help > /dev/null
        printf '%s' "$COLCON_STAMP" > "$COLCON_MARKER"
    fi
fi

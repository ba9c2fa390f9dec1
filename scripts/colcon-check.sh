#!/usr/bin/env bash
# The colcon route, checked as a user would take it: this package (the files git tracks,
# nothing built) in the src/ of a colcon workspace, `colcon build` with the README's
# arguments, then the installed node, started from the installed params file by the
# launch file's command line, probed end to end (tests/ros/test_launch.py).
#
# Run by `make colcon-check` (CI): it needs scripts/ros-env.sh sourced, colcon installed
# (`scripts/ros-setup.sh colcon`) and the torch venv first on PATH. The workspace lives in
# the cache directory, so a second run rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
cache="${BAYES_PERCEPTION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bayes_perception}"
ws="$cache/colcon_ws"
pkg="$ws/src/bayes_perception"

echo "colcon-check: workspace $ws"
rm -rf "$pkg"
mkdir -p "$pkg"
# Tracked and new files, not ignored ones; tar keeps their times, so cargo sees unchanged
# files as unchanged.
git ls-files -z --cached --others --exclude-standard |
    tar --null --files-from - -cf - | tar -xf - -C "$pkg"

cd "$ws"
started=$SECONDS
colcon build --packages-select bayes_perception --cargo-args --release --features ros
echo "colcon-check: colcon build took $((SECONDS - started)) s"

# What `ros2 run` and `ros2 launch` look for.
install="$ws/install/bayes_perception"
for needed in lib/bayes_perception/bayes_perception_node lib/bayes_perception/bayes_perception \
              share/bayes_perception/package.xml share/bayes_perception/launch/perception.launch.py \
              share/bayes_perception/config/params.yaml share/bayes_perception/rviz/bayes_perception.rviz \
              share/bayes_perception/LICENSE share/bayes_perception/NOTICE \
              share/ament_index/resource_index/packages/bayes_perception; do
    if [[ ! -e "$install/$needed" ]]; then
        echo "colcon-check: $install/$needed was not installed" >&2
        exit 1
    fi
done

# colcon's setup scripts read unset variables.
set +u
# shellcheck disable=SC1091
source "$ws/install/setup.bash"
set -u
case ":$AMENT_PREFIX_PATH:" in
    *":$install:"*) ;;
    *) echo "colcon-check: install/setup.bash did not add $install to AMENT_PREFIX_PATH" >&2; exit 1 ;;
esac

cd "$repo"
BAYES_PERCEPTION_NODE="$install/lib/bayes_perception/bayes_perception_node" \
BAYES_PERCEPTION_BIN="$install/lib/bayes_perception/bayes_perception" \
BAYES_PERCEPTION_SHARE="$install/share/bayes_perception" \
    "$BAYES_ROS_PYTHON" -m pytest tests/ros/test_launch.py
echo "colcon-check: the installed node ran from its installed launch arguments and params file"

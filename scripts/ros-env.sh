# Source this file (bash): `source scripts/ros-env.sh`. It gives a shell where
# bayes_perception_node builds (r2r) and runs, and where Python's rclpy runs.
#
# - With a sourced ROS 2 (`source /opt/ros/jazzy/setup.bash`, Humble or Jazzy) it only
#   sets IDL_PACKAGE_FILTER (which message packages r2r generates).
# - Otherwise it uses the ROS 2 Jazzy wheels that `make ros-setup` installed into the
#   cache (${BAYES_PERCEPTION_CACHE:-~/.cache/bayes_perception}/ros) and applies the
#   workarounds those wheels need. They belong to the wheels, not to ROS, so they live
#   here and not in the node:
#   1. rcl is linked statically to rmw_fastrtps_cpp and there is no
#      librmw_implementation.so, which r2r links by name (ros-setup.sh adds a symlink);
#   2. librcl.so needs the rosidl Python generators, which need libpython: LD_PRELOAD it;
#   3. vendored libraries live in site-packages/ros_*.libs: add them to LD_LIBRARY_PATH.
#   bindgen (r2r) uses the libclang wheel of that venv.
#
# PATH gets the venv's bin first, so `python3` there imports rclpy; BAYES_ROS_PYTHON names
# the Python with rclpy in either case. Building libtorch's side (torch-sys) asks the first
# `python3` on PATH for torch, so the Makefile puts the torch venv back in front for builds.

# The message packages the node uses, with the dependencies r2r needs (the filter does not
# resolve dependencies).
export IDL_PACKAGE_FILTER="std_msgs;builtin_interfaces;sensor_msgs;geometry_msgs;diagnostic_msgs;rcl_interfaces;rosgraph_msgs;action_msgs;unique_identifier_msgs;service_msgs;type_description_interfaces"

_bp_ros_env() {
    local cache="${BAYES_PERCEPTION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bayes_perception}"
    local venv="$cache/ros"
    if [[ -n "${ROS_DISTRO:-}" && -n "${AMENT_PREFIX_PATH:-}" && "${AMENT_PREFIX_PATH}" != "$venv" ]]; then
        echo "ros-env: using the sourced ROS 2 ${ROS_DISTRO} (AMENT_PREFIX_PATH=${AMENT_PREFIX_PATH})" >&2
        # The Python with that ROS's rclpy (for the end-to-end tests): the first python3 on
        # PATH, else the system's.
        local candidate
        for candidate in "$(command -v python3)" /usr/bin/python3; do
            if [[ -x "$candidate" ]] && "$candidate" -c "import rclpy" 2>/dev/null; then
                export BAYES_ROS_PYTHON="$candidate"
                return 0
            fi
        done
        export BAYES_ROS_PYTHON=/usr/bin/python3
        echo "ros-env: warning: no python3 here imports rclpy; the end-to-end tests will not run" >&2
        return 0
    fi
    if [[ ! -f "$venv/.ros_complete" ]]; then
        echo "ros-env: no ROS 2: source your ROS 2 setup.bash, or run \`make ros-setup\` to install the Jazzy wheels into $venv" >&2
        return 1
    fi
    local site
    site="$(echo "$venv"/lib/python3.*/site-packages)"
    local pylib
    pylib="$("$venv/bin/python" -c 'import os, sysconfig as s; print(os.path.join(s.get_config_var("LIBDIR"), s.get_config_var("INSTSONAME")))')" || return 1
    local libs="$venv/lib" dir
    for dir in "$site"/ros_*.libs; do
        libs="$libs:$dir"
    done
    export ROS_DISTRO=jazzy
    export AMENT_PREFIX_PATH="$venv"
    # The Python with rclpy (the Makefile's build PATH puts another python3 first).
    export BAYES_ROS_PYTHON="$venv/bin/python"
    # Prepend once, however often this file is sourced.
    case ":${LD_LIBRARY_PATH:-}:" in
        *":$venv/lib:"*) ;;
        *) export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
    esac
    case ":${LD_PRELOAD:-}:" in
        *":$pylib:"*) ;;
        *) export LD_PRELOAD="$pylib${LD_PRELOAD:+:$LD_PRELOAD}" ;;
    esac
    case ":$PATH:" in
        *":$venv/bin:"*) ;;
        *) export PATH="$venv/bin:$PATH" ;;
    esac
    export LIBCLANG_PATH="$site/clang/native"
    # The libclang wheel has no compiler headers (stddef.h, ...); use gcc's.
    BINDGEN_EXTRA_CLANG_ARGS="-I$(gcc -print-file-name=include)"
    export BINDGEN_EXTRA_CLANG_ARGS
}

_bp_ros_env
_bp_ros_env_status=$?
unset -f _bp_ros_env
# `return` when sourced; a failed set-up is the caller's to handle.
return "$_bp_ros_env_status" 2>/dev/null || exit "$_bp_ros_env_status"

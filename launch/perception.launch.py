"""Start bayes_perception_node with a params file, and optionally RViz2.

    ros2 launch bayes_perception perception.launch.py model:=/path/to/model \
        image:=/camera/image_raw camera_info:=/camera/camera_info [mode:=mc|moments] [rviz:=true] \
        [respawn:=true [respawn_max_retries:=N]]

The node's parameters given as launch arguments (model, mode, use_sim_time) keep the params
file's value when left empty.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "bayes_perception"


def as_bool(name, value):
    """A launch argument's true/false (also 1/0, yes/no; ValueError for anything else)."""
    v = value.strip().lower()
    if v not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"{name}:={value}: expected true or false")
    return v in ("true", "1", "yes")


def launch_setup(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    # Parameters set from launch arguments (each is a key of config/params.yaml); one left
    # empty keeps the params file's value (`use_sim_time: true` there included).
    overrides = {}
    if arg("model"):
        overrides["model"] = arg("model")
    if arg("mode"):
        overrides["mode"] = arg("mode")
    if arg("use_sim_time").strip():
        overrides["use_sim_time"] = as_bool("use_sim_time", arg("use_sim_time"))
    # RViz follows the launch argument (false when it is left empty).
    use_sim_time = overrides.get("use_sim_time", False)

    image = arg("image")
    try:
        respawn_delay = float(arg("respawn_delay"))
    except ValueError:
        respawn_delay = -1.0
    if not 0.0 <= respawn_delay < float("inf"):
        raise ValueError(f"respawn_delay:={arg('respawn_delay')}: expected seconds >= 0")
    # Given only when set: Humble's launch has no respawn_max_retries (Iron added it).
    process_options = {}
    retries = arg("respawn_max_retries").strip()
    if retries:
        if not retries.isdecimal():
            raise ValueError(
                f"respawn_max_retries:={retries}: expected a whole number >= 0 (empty: no limit)")
        process_options["respawn_max_retries"] = int(retries)
    node = Node(
        package=PACKAGE,
        executable="bayes_perception_node",
        name="bayes_perception",
        namespace=arg("namespace"),
        parameters=[arg("params_file")] + ([overrides] if overrides else []),
        remappings=[
            ("image", image),
            ("image/compressed", image + "/compressed"),
            ("camera_info", arg("camera_info")),
        ],
        output="screen",
        # Its shutdown finishes the frame in hand (up to 3 s) and gives subscribers 6.5 s
        # to receive the last messages: more than launch's default 5 s before SIGTERM.
        sigterm_timeout="15",
        # A node that exits (a dead device, a crashed thread, bad parameters) started again.
        respawn=as_bool("respawn", arg("respawn")),
        respawn_delay=respawn_delay,
        **process_options,
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", arg("rviz_config")],
        parameters=[{"use_sim_time": use_sim_time}],
        condition=IfCondition(str(as_bool("rviz", arg("rviz"))).lower()),
        output="screen",
    )
    return [node, rviz]


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument(
            "params_file", default_value=PathJoinSubstitution([share, "config", "params.yaml"]),
            description="Params file (ROS 2 format); every key is a node parameter"),
        DeclareLaunchArgument(
            "model", default_value="",
            description="Model directory (model.yaml + model.safetensors); empty keeps the params file's `model`"),
        DeclareLaunchArgument(
            "image", default_value="camera/image_raw",
            description="Camera image topic, relative to the namespace unless it starts with / "
            "(image/compressed is <image>/compressed)"),
        DeclareLaunchArgument(
            "camera_info", default_value="camera/camera_info",
            description="Camera info topic, relative to the namespace unless it starts with /"),
        DeclareLaunchArgument(
            "namespace", default_value="", description="Namespace of the node and its output topics"),
        DeclareLaunchArgument(
            "mode", default_value="", description="aleatoric, moments or mc; empty keeps the params file's `mode`"),
        DeclareLaunchArgument(
            "use_sim_time", default_value="",
            description="Use /clock (set true when replaying a bag with `ros2 bag play --clock`); "
            "empty keeps the params file's `use_sim_time` (false if it has none)"),
        DeclareLaunchArgument(
            "respawn", default_value="false",
            description="Start the node again whenever it exits (a crash, a dead device; also bad "
            "parameters, which fail every time)"),
        DeclareLaunchArgument(
            "respawn_delay", default_value="2.0", description="Seconds before a respawn"),
        DeclareLaunchArgument(
            "respawn_max_retries", default_value="",
            description="With respawn: at most this many respawns, then the node stays down "
            "(bad parameters would otherwise restart it for ever); empty: no limit. ROS 2 Iron "
            "and later (Humble's launch has no such option: leave it empty there)"),
        DeclareLaunchArgument("rviz", default_value="false", description="Also start RViz2"),
        DeclareLaunchArgument(
            "rviz_config", default_value=PathJoinSubstitution([share, "rviz", "bayes_perception.rviz"]),
            description="RViz2 config to open"),
        OpaqueFunction(function=launch_setup),
    ])

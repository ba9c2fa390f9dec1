"""The node started with exactly the command line `ros2 launch bayes_perception
perception.launch.py ...` would give it (the launch file's own code evaluated with stand-in
launch modules, tests/ros/launch_shim): params file, overrides, remappings, namespace.

BAYES_PERCEPTION_SHARE names the package's share directory (the repository by default; the
colcon check points it at install/share/bayes_perception)."""
import os
from pathlib import Path

import pytest
import yaml
from sensor_msgs.msg import CameraInfo, Image

from conftest import (
    ALL_TOPICS,
    NODE,
    REPO,
    NodeProcess,
    Outputs,
    RunningNode,
    camera_info_msg,
    rgb8_msg,
    send_until_output,
    test_pattern,
    write_params,
)
from launch_shim.shim import launch_command, launch_process_options

SHARE = Path(os.environ.get("BAYES_PERCEPTION_SHARE", REPO))


def test_node_runs_with_the_launch_files_arguments(probe, model_dir, tmp_path):
    executable, args = launch_command(
        SHARE / "launch" / "perception.launch.py",
        {
            "model": str(model_dir),
            "mode": "mc",
            "namespace": "robot1/perception",
            "image": "/robot1/front/image_raw",
            "camera_info": "/robot1/front/camera_info",
        },
        {"bayes_perception": str(SHARE)},
        tmp_path,
    )
    assert executable == Path(NODE).name
    assert ["--params-file", str(SHARE / "config" / "params.yaml")] == args[
        args.index("--params-file") : args.index("--params-file") + 2
    ]
    process = NodeProcess(tmp_path / "launched.log", args[1:])
    node = RunningNode(probe, process, "/robot1/perception")
    try:
        node.wait_ready(timeout=60)
        # The launch arguments reached the node; the rest comes from the shipped params file.
        got = node.get_params(["model", "mode", "use_sim_time", "mc.samples", "qos.input_reliability"])
        assert got == {
            "model": str(model_dir),
            "mode": "mc",
            "use_sim_time": False,
            "mc.samples": 50,
            "qos.input_reliability": "best_effort",
        }
        # Fewer samples so frames come out quickly (changed live; the file says 50).
        assert node.set_params({"mc.samples": 2})[0].successful
        outputs = Outputs(node, ALL_TOPICS)
        depth_info = probe.subscribe("/robot1/perception/depth/camera_info", CameraInfo)
        info = probe.publisher("/robot1/front/camera_info", CameraInfo)
        camera = probe.publisher("/robot1/front/image_raw", Image)
        frame = test_pattern(12)

        def make(stamp):
            info.publish(camera_info_msg(1))
            return rgb8_msg(frame, stamp)

        # The image and camera_info remappings: outputs and depth/camera_info come back.
        send_until_output(node, camera, make, outputs, ALL_TOPICS, 1, 60, also=[depth_info])
    finally:
        code = process.stop()
    assert code == 0, process.output()


def test_the_launch_files_default_camera_topics_follow_the_namespace(probe, model_dir, tmp_path):
    # One launch per camera: `namespace:=rear` alone subscribes to /rear/camera/*. A shared
    # params file's entry for this node loses to the launch argument `mode:=`, which
    # launch_ros passes under the node's full name after the file.
    doc = yaml.safe_load(write_params(tmp_path / "base.yaml", model_dir).read_text())
    doc["/rear_launch/bayes_perception"] = {"ros__parameters": {"mode": "moments", "mc": {"samples": 4}}}
    params_file = tmp_path / "robot.yaml"
    params_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    executable, args = launch_command(
        SHARE / "launch" / "perception.launch.py",
        {"namespace": "rear_launch", "mode": "mc", "params_file": str(params_file)},
        {"bayes_perception": str(SHARE)},
        tmp_path,
    )
    process = NodeProcess(tmp_path / "launched.log", args[1:])
    node = RunningNode(probe, process, "/rear_launch")
    try:
        node.wait_ready(timeout=60)
        assert node.get_params(["mode", "mc.samples"]) == {"mode": "mc", "mc.samples": 4}
    finally:
        code = process.stop()
    assert code == 0, process.output()
    assert (
        "ready: subscribed to /rear_launch/camera/image_raw and /rear_launch/camera/camera_info,"
        in process.output()
    ), process.output()


def test_use_sim_time_is_the_params_files_unless_the_launch_argument_gives_it(model_dir, tmp_path):
    """A params file's `use_sim_time: true` was overridden by the argument's default
    (false); now an empty argument passes nothing, and a given one wins."""

    def overrides(**arguments):
        _, args = launch_command(
            SHARE / "launch" / "perception.launch.py",
            {"model": str(model_dir), **arguments},
            {"bayes_perception": str(SHARE)},
            tmp_path,
        )
        files = [args[i + 1] for i, a in enumerate(args) if a == "--params-file"][1:]
        assert len(files) == 1, args
        (entry,) = yaml.safe_load(Path(files[0]).read_text()).values()
        return entry["ros__parameters"]

    assert "use_sim_time" not in overrides()
    assert overrides(use_sim_time="true")["use_sim_time"] is True
    assert overrides(use_sim_time="False")["use_sim_time"] is False
    with pytest.raises(ValueError, match="expected true or false"):
        overrides(use_sim_time="maybe")


def test_respawn_is_off_unless_asked_for():
    """`respawn:=true` has launch start the node again when it exits (it exits with the
    reason when a thread it needs dies, test_faults.py), `respawn_delay` seconds later, at
    most `respawn_max_retries` times when that is given (launch's default: no limit)."""

    def options(**arguments):
        return launch_process_options(
            SHARE / "launch" / "perception.launch.py", arguments, {"bayes_perception": str(SHARE)}
        )

    assert options() == {
        "respawn": False,
        "respawn_delay": 2.0,
        "respawn_max_retries": None,
        "sigterm_timeout": "15",
    }
    assert options(respawn="true", respawn_max_retries=" 3 ")["respawn_max_retries"] == 3
    assert options(respawn="true", respawn_max_retries="0")["respawn_max_retries"] == 0
    for bad in ("-1", "three", "2.5"):
        with pytest.raises(ValueError, match="respawn_max_retries:=.*expected a whole number >= 0"):
            options(respawn_max_retries=bad)
    assert options(respawn="true", respawn_delay="0.5")["respawn"] is True
    assert options(respawn="yes", respawn_delay="0.5")["respawn_delay"] == 0.5
    with pytest.raises(ValueError, match="respawn:=always: expected true or false"):
        options(respawn="always")
    # One rule for every true/false argument (rviz's was launch's own, without yes/no).
    with pytest.raises(ValueError, match="rviz:=maybe: expected true or false"):
        options(rviz="maybe")
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(ValueError, match="expected seconds >= 0"):
            options(respawn_delay=bad)

"""The YAML switch and the parameter services of the running node: aleatoric, moments and
mc mode live and from the params file, exactly one output per topic per frame around changes,
multi-value sets checked as a whole, refusals with reasons, read-only keys."""
import rclpy.node
import yaml
from rcl_interfaces.msg import ParameterEvent
from rcl_interfaces.srv import DescribeParameters, ListParameters

from conftest import (
    ALEATORIC_TOPICS,
    ALL_TOPICS,
    EPISTEMIC_TOPICS,
    Outputs,
    rgb8_msg,
    run_cli,
    send_until_output,
    test_pattern,
    wait_for,
    write_params,
)


def run_frames(node, camera, outputs, topics, first_stamp, count):
    """Publishes `count` frames one after another (each once the previous one's outputs
    are out, so keep-latest drops none) and returns their stamps. A last frame follows
    them: outputs come in order, so once its outputs are in, any late duplicate of the
    counted frames would be too."""
    stamps = []
    for i in range(count + 1):
        stamp = first_stamp + i
        camera.publish(rgb8_msg(test_pattern(stamp % 7), stamp))
        outputs.wait_frame(stamp, topics)
        stamps.append(stamp)
    return stamps[:-1]


def assert_one_output_per_topic_per_frame(outputs, stamps, topics):
    for topic in ALL_TOPICS:
        for stamp in stamps:
            n = len(outputs.recorders[topic].by_stamp(stamp))
            want = 1 if topic in topics else 0
            assert n == want, f"{topic}: {n} messages for stamp {stamp}, expected {want}"


def test_mode_switch_live_and_exactly_one_output_per_frame(start_node, probe):
    # Reliable input: each frame is published once and must arrive.
    node = start_node(params={"qos.input_reliability": "reliable"})
    outputs = Outputs(node)
    camera = probe.publisher(node.topic("image"))
    make = lambda s: rgb8_msg(test_pattern(0), s)  # noqa: E731
    send_until_output(node, camera, make, outputs, ALEATORIC_TOPICS, first_stamp=1)
    wait_for(lambda: outputs.matched(ALL_TOPICS), 10, "every output subscription matched")

    aleatoric = run_frames(node, camera, outputs, ALEATORIC_TOPICS, 1000, 4)
    assert_one_output_per_topic_per_frame(outputs, aleatoric, ALEATORIC_TOPICS)

    results = node.set_params({"mode": "mc", "mc.samples": 2})
    assert [r.successful for r in results] == [True, True], [r.reason for r in results]
    mc = run_frames(node, camera, outputs, ALL_TOPICS, 2000, 4)
    assert_one_output_per_topic_per_frame(outputs, mc, ALL_TOPICS)

    # Moments: one pass, epistemic topics too.
    results = node.set_params({"mode": "moments", "moments.head_samples": 4})
    assert [r.successful for r in results] == [True, True], [r.reason for r in results]
    moments = run_frames(node, camera, outputs, ALL_TOPICS, 2500, 4)
    assert_one_output_per_topic_per_frame(outputs, moments, ALL_TOPICS)

    results = node.set_params({"mode": "aleatoric"})
    assert results[0].successful, results[0].reason
    back = run_frames(node, camera, outputs, ALEATORIC_TOPICS, 3000, 4)
    assert_one_output_per_topic_per_frame(outputs, back, ALEATORIC_TOPICS)
    # No epistemic message ever carried an aleatoric-mode stamp.
    for topic in EPISTEMIC_TOPICS:
        stamps = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in outputs.recorders[topic].messages()}
        assert stamps and all(2000 <= s < 3000 for s in stamps), (topic, stamps)


def test_mc_mode_from_the_params_file(start_node, probe):
    node = start_node(params={"mode": "mc", "mc.samples": 2})
    assert node.get_params(["mode", "mc.samples"]) == {"mode": "mc", "mc.samples": 2}
    outputs = Outputs(node)
    camera = probe.publisher(node.topic("image"))
    make = lambda s: rgb8_msg(test_pattern(1), s)  # noqa: E731
    stamp = send_until_output(node, camera, make, outputs, ALL_TOPICS, first_stamp=1)
    assert all(outputs.recorders[t].by_stamp(stamp) for t in EPISTEMIC_TOPICS)


def test_params_file_entries_apply_to_the_node_as_in_rclpy(start_node, probe, model_dir, tmp_path):
    # One file for several cameras' nodes: the entries that name this node (with or without
    # the leading slash, by wildcard) apply, later ones over earlier ones; a bare
    # `bayes_perception:` is the root namespace's node only, another namespace's is not
    # this one's. rclpy, given the same file in the same namespace, is the reference. The
    # client library's own keys (use_sim_time, rclcpp's qos_overrides) may be there: the
    # node names the ignored overrides, and the CLI reads the same file for that node. So
    # may a camera driver's keys in an entry for every node in the namespace: passed over
    # with a warning, as rclcpp passes over overrides a node does not declare.
    namespace = "/front_e2e"
    base = yaml.safe_load(write_params(tmp_path / "base.yaml", model_dir).read_text())
    client_library = {
        "use_sim_time": False,
        "qos_overrides": {"/image": {"subscription": {"reliability": "reliable"}}},
    }
    doc = {
        **base,
        f"{namespace[1:]}/bayes_perception": {"ros__parameters": {"mode": "mc", "seed": 11, **client_library}},
        f"{namespace}/*": {"ros__parameters": {"mc": {"samples": 3}, "camera_name": "front", "image_width": 640}},
        "bayes_perception": {"ros__parameters": {"points": {"stride": 7}}},
        "/rear_e2e/bayes_perception": {"ros__parameters": {"mc": {"batch_size": 2}}},
        f"{namespace}/**": {"ros__parameters": {"seed": 12}},
    }
    params_file = tmp_path / "two_cameras.yaml"
    params_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    names = ["mode", "seed", "mc.samples", "points.stride", "mc.batch_size"]
    node = start_node(namespace=namespace, params_file=params_file)
    got = node.get_params(names)
    assert got == {"mode": "mc", "seed": 12, "mc.samples": 3, "points.stride": 2, "mc.batch_size": -1}, got
    reference = rclpy.node.Node(
        "bayes_perception",
        namespace=namespace,
        context=probe.node.context,
        cli_args=["--ros-args", "--params-file", str(params_file)],
        automatically_declare_parameters_from_overrides=True,
    )
    try:
        expected = {name: reference.get_parameter(name).value for name in names}
    finally:
        reference.destroy_node()
    assert got == expected
    warning = "`qos_overrides./image.subscription.reliability` ignored: this node takes no qos_overrides"
    assert warning in node.process.output(), node.process.output()
    warning = "`camera_name` and `image_width` passed over: not parameters of bayes_perception"
    assert warning in node.process.output(), node.process.output()
    checked = run_cli("model", "check", "--config", params_file, "--node", f"{namespace}/bayes_perception")
    assert "mode mc (3 passes" in checked, checked


def test_several_values_in_one_request_are_checked_together(start_node, probe):
    node = start_node(params={"mode": "mc"})
    events = probe.subscribe("/parameter_events", ParameterEvent)
    # Issue 9: refused before ("depth range [60, 50] must be finite with min < max"): each
    # value was checked alone against the values before the request.
    result = node.set_params_atomically({"colormap.depth_min_m": 60.0, "colormap.depth_max_m": 100.0})
    assert result.successful, result.reason
    assert node.get_params(["colormap.depth_min_m", "colormap.depth_max_m"]) == {
        "colormap.depth_min_m": 60.0,
        "colormap.depth_max_m": 100.0,
    }
    # Back down in one set_parameters request, maximum first: [60, 10] alone is invalid.
    results = node.set_params({"colormap.depth_max_m": 10.0, "colormap.depth_min_m": 0.0})
    assert all(r.successful for r in results), [r.reason for r in results]
    assert node.get_params(["colormap.depth_min_m", "colormap.depth_max_m"]) == {
        "colormap.depth_min_m": 0.0,
        "colormap.depth_max_m": 10.0,
    }
    # One sample is invalid in mc mode, fine in aleatoric: together, in this order.
    results = node.set_params({"mc.samples": 1, "mode": "aleatoric"})
    assert all(r.successful for r in results), [r.reason for r in results]
    assert node.get_params(["mode", "mc.samples"]) == {"mode": "aleatoric", "mc.samples": 1}
    # Each change is announced on /parameter_events, as rclcpp nodes do.
    def announced():
        changed = [
            (p.name, p.value.double_value)
            for e in events.messages()
            if e.node == node.fqn
            for p in e.changed_parameters
        ]
        return ("colormap.depth_max_m", 10.0) in changed and ("colormap.depth_min_m", 60.0) in changed

    wait_for(announced, 10, "the changes on /parameter_events")


def test_invalid_values_are_refused_with_a_reason_and_change_nothing(start_node, probe):
    node = start_node()
    before = node.get_params(["mode", "mc.samples", "colormap.depth_max_m", "model", "device"])

    result = node.set_params_atomically({"mode": "mc", "mc.samples": 1})
    assert not result.successful
    assert "mc.samples" in result.reason and "at least 2" in result.reason, result.reason

    cases = {
        "mode": ("turbo", "expected one of `aleatoric`, `moments`, `mc`"),
        "mc.samples": ("ten", "integer"),
        "colormap.depth_max_m": (80, "write reals with a decimal point"),
        "no.such.parameter": (1, "unknown parameter"),
        "model": ("/elsewhere", "restart the node"),
        "device": ("cpu", "restart the node"),
        "channels_last": (True, "restart the node"),
        "mc.max_gpu_memory_mb": (-1, "0 (no limit but the free memory)"),
        "input.transport": ("compressed", "restart the node"),
        "start_type_description_service": (False, "restart the node"),
    }
    for name, (value, reason) in cases.items():
        [result] = node.set_params({name: value})
        assert not result.successful, name
        assert reason in result.reason, f"{name}: {result.reason}"
    assert node.get_params(list(before)) == before

    described = node.probe.call(
        DescribeParameters,
        f"{node.fqn}/describe_parameters",
        DescribeParameters.Request(names=["model", "mode", "points.stride"]),
    ).descriptors
    assert [(d.name, d.read_only) for d in described] == [
        ("model", True), ("mode", False), ("points.stride", False)
    ]
    # Described with the comment of its key in config/params.yaml.
    assert described[1].description.startswith("aleatoric: one deterministic pass"), described[1]
    assert "restart the node" in described[0].description, described[0]
    # A number's allowed range, as rqt_reconfigure and `ros2 param describe` show it.
    [stride] = described[2].integer_range
    assert (stride.from_value, stride.to_value) == (1, 64), described[2]
    assert not described[1].integer_range and not described[1].floating_point_range
    # Declared though the node was started without it, as every ROS node does.
    assert node.get_params(["use_sim_time"]) == {"use_sim_time": False}
    [result] = node.set_params({"mdoe": "mc"})
    assert "did you mean `mode`?" in result.reason, result.reason
    listed = node.probe.call(
        ListParameters, f"{node.fqn}/list_parameters", ListParameters.Request(prefixes=["mc"])
    ).result
    assert sorted(listed.names) == ["mc.batch_size", "mc.max_gpu_memory_mb", "mc.samples"]

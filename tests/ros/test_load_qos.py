"""Keep-latest under a camera faster than inference, and the QoS parameters: camera
publishers of either reliability, and a live change of the output reliability (and one
that fails)."""
import time

from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from conftest import (
    ALEATORIC_TOPICS,
    ALL_TOPICS,
    Outputs,
    best_effort,
    reliable,
    rgb8_msg,
    send_until_output,
    stamp_ns,
    status_values,
    test_pattern,
    wait_for,
)

RATE_HZ = 30.0
LOAD_SECONDS = 20.0


def test_keep_latest_under_a_30_hz_camera(start_node, probe):
    # MC with 20 samples takes far longer than 33 ms per frame here. Reliable transport,
    # so every frame published reaches the node and each one is accounted for.
    node = start_node(params={"mode": "mc", "mc.samples": 20, "qos.input_reliability": "reliable"})
    outputs = Outputs(node, ["depth"])
    depth = outputs.recorders["depth"]
    camera = probe.publisher(node.topic("image"), Image, reliable())
    frame = test_pattern(3)
    send_until_output(node, camera, lambda s: rgb8_msg(frame, s), outputs, ["depth"], first_stamp=1)

    def idle(status):
        """Every frame received is dropped or out (none waiting or in flight)."""
        v = status_values(status)
        return int(v["frames received"]) - int(v["frames dropped (keep-latest)"]) == len(depth)

    before = status_values(node.wait_status(idle, 30, "the node idle after warm-up"))
    outputs_before = len(depth)

    # stamp -> monotonic time it was published.
    published = {}
    period = 1.0 / RATE_HZ
    stamp = 10**12
    started = next_at = time.monotonic()
    while time.monotonic() - started < LOAD_SECONDS:
        camera.publish(rgb8_msg(frame, stamp))
        published[stamp] = time.monotonic()
        stamp += 1
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
    # The last frame published is the newest one left: it must come out.
    outputs.wait_frame(stamp - 1, ["depth"], timeout=30)

    timed = depth.timed()[outputs_before:]
    stamps = [stamp_ns(m.header) for _, m in timed]
    assert all(s in published for s in stamps), "an output of a frame that was not published"
    assert stamps == sorted(set(stamps)), "output stamps not strictly increasing"
    # Each output after the first is of the newest frame there was when its inference
    # started, which is after the previous output was published: a frame at least as new
    # as the one published just before the previous output arrived (less a little
    # transport time). A queue (oldest first) would fall seconds behind this.
    slack = 0.1
    for (arrived, _), stamp in zip(timed, stamps[1:]):
        newest_then = max((s for s, t in published.items() if t <= arrived - slack), default=None)
        if newest_then is not None:
            assert stamp >= newest_then, f"stale frame {stamp}, {newest_then} was available"

    # Drops are counted: every frame the node received was dropped or processed. (Its
    # reliable subscription keeps the last 5 frames in DDS; should the node's spin thread
    # stall longer than that, DDS itself replaces frames before the node sees them.)
    after = status_values(node.wait_status(idle, 30, "the node idle after the load"))
    received = int(after["frames received"]) - int(before["frames received"])
    dropped = int(after["frames dropped (keep-latest)"]) - int(before["frames dropped (keep-latest)"])
    assert 0.9 * len(published) <= received <= len(published), (received, len(published))
    assert dropped + len(stamps) == received, (dropped, len(stamps), received)
    assert dropped > len(stamps), f"{dropped} dropped, {len(stamps)} processed: no load?"
    assert after["frames skipped (bad input)"] == "0"


def test_camera_publishers_of_either_reliability(start_node, probe):
    # Default input QoS (best effort) takes frames from both kinds of publisher.
    node = start_node()
    outputs = Outputs(node, ["depth"])
    frame = test_pattern(4)
    for qos in (best_effort(), reliable()):
        camera = probe.publisher(node.topic("image"), Image, qos)
        send_until_output(node, camera, lambda s: rgb8_msg(frame, s), outputs, ["depth"], first_stamp=10**6 * qos.reliability.value)
        probe.node.destroy_publisher(camera)

    # The ready line names the camera topic as resolved: in the node's namespace.
    assert f"ready: subscribed to {node.topic('image')} and {node.topic('camera_info')}," in node.process.output()

    # A point cloud subscribed to while no camera_info arrives (no test here publishes one):
    # /diagnostics says why there is none and names the topic it waits on.
    clouds = probe.subscribe(node.topic("points"), PointCloud2)
    camera = probe.publisher(node.topic("image"), Image, reliable())
    after = time.monotonic()
    deadline = after + 20
    warned = None
    stamp = 5 * 10**6
    while warned is None and time.monotonic() < deadline:
        stamp += 1
        camera.publish(rgb8_msg(frame, stamp))
        time.sleep(0.1)
        warned = next((s for s in node.statuses(after) if "without a point cloud or depth/camera_info" in s.message), None)
    assert warned is not None, [s.message for s in node.statuses(after)]
    assert f"no camera_info received on {node.topic('camera_info')}" in warned.message, warned.message
    assert status_values(warned)["camera_info"] == f"none received on {node.topic('camera_info')}"
    # The graph, looked up every second, shows that nothing publishes camera_info.
    nothing = node.wait_status(
        lambda s: "without a point cloud" in s.message and "nothing publishes on it: check its remapping" in s.message,
        10,
        "camera_info's missing publisher reported",
    )
    assert status_values(nothing)["camera_info publishers"] == f"0 on {node.topic('camera_info')} (0 reliable, 0 best effort)"
    assert not clouds.messages()
    assert "no point cloud or depth/camera_info: no camera_info has arrived" in node.process.output()

    # qos.input_reliability: reliable takes a reliable publisher, not a best-effort one.
    # (The camera remapped to a relative name: the ready line says where it resolved to.)
    node = start_node(params={"qos.input_reliability": "reliable"}, ros_args=["-r", "image:=cam/raw"])
    assert f"ready: subscribed to {node.topic('cam/raw')} and" in node.process.output()
    outputs = Outputs(node, ["depth"])
    camera = probe.publisher(node.topic("cam/raw"), Image, reliable())
    send_until_output(node, camera, lambda s: rgb8_msg(frame, s), outputs, ["depth"], first_stamp=1)
    probe.node.destroy_publisher(camera)
    lossy = probe.publisher(node.topic("cam/raw"), Image, best_effort())
    # Incompatible QoS: DDS never matches them, and the node counts nothing received.
    before = node.wait_status(lambda s: True, 5, "a diagnostics status")
    for stamp in range(100, 110):
        lossy.publish(rgb8_msg(frame, stamp))
    after_publish = time.monotonic()
    # Two reports after the last publish, the count has not moved.
    node.wait_status(lambda s: True, 5, "a report", after=after_publish)
    later = node.wait_status(lambda s: True, 5, "a second report", after=time.monotonic())
    assert status_values(later)["frames received"] == status_values(before)["frames received"]
    assert lossy.get_subscription_count() == 0
    assert not any(outputs.recorders["depth"].by_stamp(s) for s in range(100, 110))
    # The node sees the best-effort camera in the graph and says why nothing arrives.
    warned = node.wait_status(
        lambda s: "offer best effort only" in s.message, 10, "the incompatible camera reported"
    )
    assert node.topic("cam/raw") in warned.message, warned.message
    assert status_values(warned)["camera publishers"] == f"1 on {node.topic('cam/raw')} (0 reliable, 1 best effort)"
    assert "offer best effort only" in node.process.output()
    # A best-effort camera_info publisher: the same, for camera_info (the cloud and
    # depth/camera_info would never have one).
    probe.publisher(node.topic("camera_info"), CameraInfo, best_effort())
    info_topic = node.topic("camera_info")
    warned = node.wait_status(
        lambda s: f"publisher(s) on {info_topic} offer best effort only" in s.message, 10, "the incompatible camera_info reported"
    )
    assert status_values(warned)["camera_info publishers"] == f"1 on {info_topic} (0 reliable, 1 best effort)"
    wait_for(lambda: f"on {info_topic} offer best effort only" in node.process.output(), 10, "the log line")


def test_output_reliability_changes_live_without_losing_subscribers(start_node, probe):
    node = start_node()
    # A best-effort subscriber receives from a reliable and from a best-effort publisher.
    outputs = Outputs(node, ALEATORIC_TOPICS, best_effort(100))
    camera = probe.publisher(node.topic("image"))
    frame = test_pattern(5)
    make = lambda s: rgb8_msg(frame, s)  # noqa: E731
    send_until_output(node, camera, make, outputs, ALEATORIC_TOPICS, first_stamp=1)
    for reliability, first in (("best_effort", 1000), ("reliable", 2000), ("best_effort", 3000)):
        [result] = node.set_params({"qos.output_reliability": reliability})
        assert result.successful, result.reason
        stamp = send_until_output(node, camera, make, outputs, ALEATORIC_TOPICS, first_stamp=first)
        assert stamp < first + 60, f"outputs took {stamp - first} frames to come back after the change"
        wait_for(
            lambda: [p.qos_profile.reliability.name for p in probe.node.get_publishers_info_by_topic(node.topic("depth"))]
            == [reliability.upper()],
            10,
            f"one {reliability} publisher on depth",
        )
    status = node.wait_status(lambda s: True, 5, "a diagnostics status")
    values = status_values(status)
    assert values["publish failures"] == "0", values
    log = node.process.output()
    assert not [line for line in log.splitlines() if "ERROR" in line and "publish" in line], log
    assert node.process.proc.poll() is None
    wait_for(lambda: outputs.matched(ALEATORIC_TOPICS), 5, "subscribers matched after the changes")


def test_an_output_reliability_that_cannot_be_applied_leaves_the_outputs_as_they_were(start_node, probe):
    # Advertising fails from the 15th image topic on: the 12 at start pass, the new set of a
    # QoS change fails at its third, after two were advertised.
    node = start_node(env={"FAILPOINTS": f"node::advertise={len(ALL_TOPICS) + 2}*off->return"})
    outputs = Outputs(node, ALEATORIC_TOPICS, best_effort(100))
    camera = probe.publisher(node.topic("image"))
    frame = test_pattern(5)
    make = lambda s: rgb8_msg(frame, s)  # noqa: E731
    send_until_output(node, camera, make, outputs, ALEATORIC_TOPICS, first_stamp=1)
    [result] = node.set_params({"qos.output_reliability": "best_effort"})
    assert result.successful, result.reason
    wait_for(lambda: "the outputs keep their QoS (best_effort not applied)" in node.process.output(), 10,
             "the error logged")
    # The two advertised before the failure are gone again: one publisher per topic, the
    # old reliable one, which still publishes.
    reliabilities = lambda: {  # noqa: E731
        topic: [p.qos_profile.reliability.name for p in probe.node.get_publishers_info_by_topic(node.topic(topic))]
        for topic in ALL_TOPICS
    }
    wait_for(lambda: all(r == ["RELIABLE"] for r in reliabilities().values()), 10,
             "one reliable publisher per output topic")
    send_until_output(node, camera, make, outputs, ALEATORIC_TOPICS, first_stamp=1000)
    assert node.process.proc.poll() is None


def test_an_input_reliability_that_cannot_be_applied_keeps_the_camera(start_node, probe):
    # Subscribing to camera_info fails after start-up: the new image subscription made
    # before it is dropped and the node stays on its old subscriptions.
    node = start_node(env={"FAILPOINTS": "node::subscribe_camera_info=1*off->return"})
    outputs = Outputs(node, ["depth"])
    camera = probe.publisher(node.topic("image"))
    frame = test_pattern(6)
    make = lambda s: rgb8_msg(frame, s)  # noqa: E731
    send_until_output(node, camera, make, outputs, ["depth"], first_stamp=1)
    [result] = node.set_params({"qos.input_reliability": "reliable"})
    assert result.successful, result.reason
    wait_for(lambda: "the subscriptions keep their QoS (reliable not applied)" in node.process.output(), 10,
             "the error logged")
    send_until_output(node, camera, make, outputs, ["depth"], first_stamp=1000)
    # The dropped one leaves the graph once r2r finds its stream gone (at its next message).
    wait_for(lambda: [s.qos_profile.reliability.name
                      for s in probe.node.get_subscriptions_info_by_topic(node.topic("image"))] == ["BEST_EFFORT"],
             10, "one best-effort subscription on image")
    # A best-effort camera beside it: /diagnostics judges it by the subscription in use
    # (best effort, which receives from it), not by the value set (reliable, which would
    # not).
    probe.publisher(node.topic("image"), qos=best_effort())
    status = node.wait_status(lambda s: status_values(s)["camera publishers"].endswith("(1 reliable, 1 best effort)"),
                              10, "a report with both cameras")
    assert "offer best effort only" not in status.message, status.message
    assert node.process.proc.poll() is None

"""Every output topic of the running node, for raw input in several encodings and for JPEG
CompressedImage input: encodings, sizes, steps, the exact input header, and values equal to
`bayes_perception infer` on the same image with the same seed and params file."""
import io

import numpy as np
from PIL import Image as PILImage
from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2

from conftest import (
    ALEATORIC_TOPICS,
    ALL_TOPICS,
    CAMERA_HW,
    Outputs,
    as_array,
    camera_info_msg,
    compressed_msg,
    image_msg,
    rgb8_msg,
    run_cli,
    send_until_output,
    stamp_ns,
    test_pattern,
    wait_for,
)

# Node topic -> file `infer` writes for the same output.
INFER_FILES = {
    "semantic/labels": "labels.png",
    "semantic/color": "labels_color.png",
    "semantic/confidence": "confidence.tiff",
    "depth": "depth.tiff",
    "uncertainty/semantic/aleatoric": "semantic_aleatoric.tiff",
    "uncertainty/semantic/aleatoric/color": "semantic_aleatoric_color.png",
    "uncertainty/semantic/epistemic": "semantic_epistemic.tiff",
    "uncertainty/semantic/epistemic/color": "semantic_epistemic_color.png",
    "uncertainty/depth/aleatoric": "depth_aleatoric.tiff",
    "uncertainty/depth/aleatoric/color": "depth_aleatoric_color.png",
    "uncertainty/depth/epistemic": "depth_epistemic.tiff",
    "uncertainty/depth/epistemic/color": "depth_epistemic_color.png",
}
ENCODING_OF = {"labels.png": "mono8", ".tiff": "32FC1", "_color.png": "rgb8"}


def round_half_away(x):
    """Rust's f32::round for x >= -0.5 (negative values are clamped to 0 anyway)."""
    floor = np.floor(x)
    return floor + ((x - floor) >= np.float32(0.5))


def yuyv_to_rgb(yuyv, height, width):
    """The node's BT.601 video-range decode of yuv422_yuy2 (src/msg/encoding.rs), in f32."""
    row = yuyv.reshape(height, width * 2)
    y = row[:, 0::2].astype(np.float32)
    u = np.repeat(row[:, 1::4], 2, axis=1)[:, :width].astype(np.float32) - np.float32(128)
    v = np.repeat(row[:, 3::4], 2, axis=1)[:, :width].astype(np.float32) - np.float32(128)
    c = np.float32(1.164) * (y - np.float32(16))
    rgb = [
        c + np.float32(1.596) * v,
        c - np.float32(0.392) * u - np.float32(0.813) * v,
        c + np.float32(2.017) * u,
    ]
    return np.stack([np.clip(round_half_away(ch), 0, 255) for ch in rgb], -1).astype(np.uint8)


def raw_frames():
    """(name, make_msg(stamp), the RGB image the node decodes it to) per encoding; rows
    padded where the encoding allows, 16-bit data in both byte orders."""
    h, w = CAMERA_HW
    rng = np.random.default_rng(1)
    frames = []

    rgb = test_pattern(1)
    padded = np.zeros((h, w * 3 + 5), np.uint8)
    padded[:, : w * 3] = rgb.reshape(h, -1)
    frames.append(("rgb8", lambda s, d=padded: image_msg(d.tobytes(), "rgb8", h, w, w * 3 + 5, s), rgb))

    rgb = test_pattern(2)
    frames.append(
        ("bgr8", lambda s, d=rgb[..., ::-1].copy(): image_msg(d.tobytes(), "bgr8", h, w, w * 3, s), rgb)
    )

    grey = test_pattern(3)[..., 1].copy()
    frames.append(
        ("mono8", lambda s, d=grey: image_msg(d.tobytes(), "mono8", h, w, w, s), np.stack([grey] * 3, -1))
    )

    yuyv = rng.integers(16, 236, size=(h, w * 2), dtype=np.uint8)
    frames.append(
        (
            "yuv422_yuy2",
            lambda s, d=yuyv: image_msg(d.tobytes(), "yuv422_yuy2", h, w, w * 2, s),
            yuyv_to_rgb(yuyv, h, w),
        )
    )

    # 16-bit samples are scaled to 8 bits by 255/65535, rounded (as cv_bridge converts).
    def to8(wide):
        return ((wide.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)

    wide = test_pattern(4).astype(np.uint16) * 256 + rng.integers(0, 256, size=(h, w, 3), dtype=np.uint16)
    frames.append(
        (
            "rgb16 big-endian",
            lambda s, d=wide.astype(">u2"): image_msg(d.tobytes(), "rgb16", h, w, w * 6, s, bigendian=1),
            to8(wide),
        )
    )
    wide = test_pattern(5)[..., 2].astype(np.uint16) * 256 + 255
    frames.append(
        (
            "mono16 little-endian",
            lambda s, d=wide.astype("<u2"): image_msg(d.tobytes(), "mono16", h, w, w * 2, s),
            np.stack([to8(wide)] * 3, -1),
        )
    )
    return frames


def run_infer(tmp_path, params_file, images, *extra):
    """`bayes_perception infer` on {name: RGB array or encoded file bytes}; the output
    directory of each name."""
    inputs = tmp_path / "infer_in"
    inputs.mkdir(exist_ok=True)
    paths = []
    for name, image in images.items():
        if isinstance(image, bytes):
            path = inputs / f"{name}.jpg"
            path.write_bytes(image)
        else:
            path = inputs / f"{name}.png"
            PILImage.fromarray(image).save(path)
        paths.append(str(path))
    out = tmp_path / "infer_out"
    run_cli("infer", "--config", params_file, "--out", out, *extra, *paths)
    return {name: out / name for name in images}


def read_infer(path):
    if path.suffix == ".tiff":
        return np.asarray(PILImage.open(path), dtype=np.float32)
    return np.asarray(PILImage.open(path))


def check_like_infer(outputs, infer_dir, header):
    """Each output message: the input header, the input size, its encoding and step, and
    the value infer wrote (labels and colours identical, floats within 1e-5)."""
    h, w = CAMERA_HW
    for topic, msg in outputs.items():
        assert stamp_ns(msg.header) == stamp_ns(header), topic
        assert msg.header.frame_id == header.frame_id, topic
        assert (msg.height, msg.width) == (h, w), topic
        file = INFER_FILES[topic]
        encoding = next(e for suffix, e in ENCODING_OF.items() if file.endswith(suffix))
        assert msg.encoding == encoding, topic
        bytes_per_pixel = {"mono8": 1, "32FC1": 4, "rgb8": 3}[encoding]
        assert msg.step == w * bytes_per_pixel, topic
        got, want = as_array(msg), read_infer(infer_dir / file)
        assert got.shape == want.shape, topic
        if encoding == "32FC1":
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, equal_nan=True, err_msg=topic)
            assert np.isfinite(got[~np.isnan(got)]).all(), f"{topic}: Inf in output"
        else:
            np.testing.assert_array_equal(got, want, err_msg=topic)


# The point cloud's fields (sensor_msgs/PointField: 7 FLOAT32, 4 UINT16) and layout.
CLOUD_FIELDS = [
    ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 7), ("label", 16, 4),
    ("semantic_aleatoric", 20, 7), ("semantic_epistemic", 24, 7),
    ("depth_aleatoric", 28, 7), ("depth_epistemic", 32, 7),
]
CLOUD_DTYPE = np.dtype({
    "names": [n for n, _, _ in CLOUD_FIELDS],
    "formats": ["<f4" if d == 7 else "<u2" for _, _, d in CLOUD_FIELDS],
    "offsets": [o for _, o, _ in CLOUD_FIELDS],
    "itemsize": 36,
})


def undistorted(xd, yd, d):
    """The rays (x, y, 1) a plumb_bob lens puts at normalized coordinates (xd, yd), by
    OpenCV's fixed-point iteration (cvUndistortPoints), not the node's Newton steps."""
    k1, k2, p1, p2, k3 = d
    x, y = xd.copy(), yd.copy()
    for _ in range(100):
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        x, y = (xd - dx) / radial, (yd - dy) / radial
    return x, y


def check_cloud(cloud, messages, rgb, header, stride=2, info=None, rectified=False):
    """The cloud against the frame's own depth, labels and aleatoric images: one point per
    pixel of the stride grid with valid depth, back-projected with `info`'s (default
    camera_info_msg's) K and its lens distortion undone (raw images), or with its P alone
    (`rectified`), in row order, with the pixel's colour, label and uncertainties."""
    assert cloud.header.frame_id == header.frame_id and stamp_ns(cloud.header) == stamp_ns(header)
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [(n, o, d, 1) for n, o, d in CLOUD_FIELDS]
    assert (cloud.height, cloud.point_step, cloud.is_dense, cloud.is_bigendian) == (1, 36, True, False)
    assert cloud.row_step == 36 * cloud.width and len(cloud.data) == cloud.row_step
    points = np.frombuffer(bytes(cloud.data), dtype=CLOUD_DTYPE)
    depth = as_array(messages["depth"])[::stride, ::stride]
    valid = np.isfinite(depth) & (depth > 0)
    assert len(points) == valid.sum() > 0
    v, u = np.mgrid[0:CAMERA_HW[0]:stride, 0:CAMERA_HW[1]:stride]
    info = info or camera_info_msg(0)
    if rectified:
        fx, cx, fy, cy = info.p[0], info.p[2], info.p[5], info.p[6]
        x, y = (u[valid] - cx) / fx, (v[valid] - cy) / fy
    else:
        fx, cx, fy, cy = info.k[0], info.k[2], info.k[4], info.k[5]
        x, y = undistorted((u[valid] - cx) / fx, (v[valid] - cy) / fy, list(info.d))
    z = depth[valid]
    np.testing.assert_allclose(points["z"], z, rtol=1e-6)
    np.testing.assert_allclose(points["x"], x * z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(points["y"], y * z, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(points["label"], as_array(messages["semantic/labels"])[::stride, ::stride][valid])
    np.testing.assert_array_equal(
        points["semantic_aleatoric"], as_array(messages["uncertainty/semantic/aleatoric"])[::stride, ::stride][valid]
    )
    packed = points["rgb"].view("<u4")
    colours = rgb[::stride, ::stride][valid].astype(np.uint32)
    np.testing.assert_array_equal(packed, (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2])
    return points


def test_raw_encodings_give_every_topic_equal_to_infer(start_node, probe, tmp_path):
    node = start_node()
    params_file = node.params_file
    outputs = Outputs(node)
    camera = probe.publisher(node.topic("image"))
    info_pub = probe.publisher(node.topic("camera_info"), CameraInfo)
    depth_info = probe.subscribe(node.topic("depth/camera_info"), CameraInfo)
    clouds = probe.subscribe(node.topic("points"), PointCloud2)
    first = raw_frames()[0]

    def warm_up(stamp):
        info_pub.publish(camera_info_msg(1))
        return first[1](stamp)

    send_until_output(
        node, camera, warm_up, outputs, ALEATORIC_TOPICS, first_stamp=10, also=[depth_info, clouds]
    )

    got = {}
    for i, (name, make, rgb) in enumerate(raw_frames()):
        stamp = 1_700_000_000_000_000_000 + i * 1_000_003
        msg = make(stamp)
        camera.publish(msg)
        got[name] = (msg.header, rgb, outputs.wait_frame(stamp, ALEATORIC_TOPICS))
    # Aleatoric mode: no epistemic messages.
    assert all(len(outputs.recorders[t]) == 0 for t in ALL_TOPICS if t not in ALEATORIC_TOPICS)

    infer = run_infer(tmp_path, params_file, {name: rgb for name, (_, rgb, _) in got.items()})
    for name, (header, _, messages) in got.items():
        check_like_infer(messages, infer[name], header)
        # camera_info is republished with each frame's header.
        infos = depth_info.by_stamp(stamp_ns(header))
        assert len(infos) == 1, name
        assert infos[0].header.frame_id == header.frame_id
        assert list(infos[0].k) == list(camera_info_msg(1).k)
        assert infos[0].distortion_model == "plumb_bob"
        # And the point cloud of each frame, from that frame's own images.
        cloud = clouds.by_stamp(stamp_ns(header))
        assert len(cloud) == 1, name
        points = check_cloud(cloud[0], got[name][2], got[name][1], header)
        assert np.isnan(points["depth_epistemic"]).all(), "aleatoric mode: no epistemic"

    # MC mode, switched live: every topic, epistemic ones included, equal to `infer --mode mc`.
    results = node.set_params({"mode": "mc", "mc.samples": 3})
    assert all(r.successful for r in results), [r.reason for r in results]
    rgb = test_pattern(9)
    make = lambda s: rgb8_msg(rgb, s)  # noqa: E731
    stamp = send_until_output(node, camera, make, outputs, ALL_TOPICS, 1_800_000_000_000_000_000)
    messages = outputs.wait_frame(stamp, ALL_TOPICS)
    infer = run_infer(tmp_path, params_file, {"mc": rgb}, "--mode", "mc", "--samples", "3")
    check_like_infer(messages, infer["mc"], messages["depth"].header)
    # The cloud carries the epistemic std in mc mode.
    cloud = wait_for(lambda: clouds.by_stamp(stamp), 10, "the mc frame's point cloud")[0]
    points = check_cloud(cloud, messages, rgb, messages["depth"].header)
    depth = as_array(messages["depth"])[::2, ::2]
    valid = np.isfinite(depth) & (depth > 0)
    np.testing.assert_array_equal(
        points["depth_epistemic"], as_array(messages["uncertainty/depth/epistemic"])[::2, ::2][valid]
    )

    # Moments mode, switched live: every topic, equal to `infer --mode moments`.
    results = node.set_params({"mode": "moments"})
    assert all(r.successful for r in results), [r.reason for r in results]
    stamp = send_until_output(node, camera, make, outputs, ALL_TOPICS, 1_900_000_000_000_000_000)
    messages = outputs.wait_frame(stamp, ALL_TOPICS)
    infer = run_infer(tmp_path, params_file, {"moments": rgb}, "--mode", "moments")
    check_like_infer(messages, infer["moments"], messages["depth"].header)


def test_rectified_images_are_back_projected_with_p_and_a_rectified_topic_name_is_doubted(start_node, probe):
    """A camera topic named like image_proc's rectified images while points.rectified is
    false: a warning at start-up. With points.rectified: true, none, and the cloud is
    built with camera_info's P (another focal length and centre than K here), D not
    applied."""
    remap = ["-r", "image:=image_rect"]
    doubted = start_node(ros_args=remap)
    wait_for(lambda: "named like rectified images" in doubted.process.output(), 10, "the warning")
    assert doubted.topic("image_rect") in doubted.process.output()
    node = start_node(params={"points.rectified": True}, ros_args=remap)
    outputs = Outputs(node, ALEATORIC_TOPICS)
    camera = probe.publisher(node.topic("image_rect"))
    info_pub = probe.publisher(node.topic("camera_info"), CameraInfo)
    clouds = probe.subscribe(node.topic("points"), PointCloud2)
    info = camera_info_msg(0)
    info.p = [60.0, 0.0, 38.0, 0.0, 0.0, 62.0, 31.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    rgb = test_pattern(5)

    def frame(stamp):
        info_pub.publish(info)
        return rgb8_msg(rgb, stamp)

    stamp = send_until_output(node, camera, frame, outputs, ALEATORIC_TOPICS, 10, also=[clouds])
    messages = outputs.wait_frame(stamp, ALEATORIC_TOPICS)
    check_cloud(clouds.by_stamp(stamp)[0], messages, rgb, messages["depth"].header, info=info, rectified=True)
    assert "named like rectified images" not in node.process.output()
    # Switched off while it runs: the same warning, once; on again: no other.
    [result] = node.set_params({"points.rectified": False})
    assert result.successful, result.reason
    wait_for(lambda: "named like rectified images" in node.process.output(), 10, "the warning on the live change")
    [result] = node.set_params({"points.rectified": True})
    assert result.successful, result.reason
    # A later change's log line: whatever the second change logged has been read by then.
    [result] = node.set_params({"points.stride": 3})
    assert result.successful, result.reason
    wait_for(lambda: "parameters changed: points.stride" in node.process.output(), 10, "the third change")
    assert node.process.output().count("parameters changed: points.rectified") == 2
    assert node.process.output().count("named like rectified images") == 1


def test_jpeg_compressed_input_gives_every_topic_equal_to_infer(start_node, probe, tmp_path):
    node = start_node(params={"input.transport": "compressed"})
    params_file = node.params_file
    outputs = Outputs(node, ALEATORIC_TOPICS)
    camera = probe.publisher(node.topic("image/compressed"), CompressedImage)
    buffer = io.BytesIO()
    PILImage.fromarray(test_pattern(11)).save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()

    def make(stamp):
        return compressed_msg(jpeg, "rgb8; jpeg compressed bgr8", stamp)

    stamp = send_until_output(node, camera, make, outputs, ALEATORIC_TOPICS, first_stamp=100)
    messages = outputs.wait_frame(stamp, ALEATORIC_TOPICS)
    infer = run_infer(tmp_path, params_file, {"jpeg": jpeg})
    check_like_infer(messages, infer["jpeg"], make(stamp).header)


def test_images_without_frame_id_are_processed_and_said_once(start_node, probe):
    """A driver that leaves frame_id empty: the outputs carry the empty frame_id (their
    header is the image's), which nothing can place, so the node says so, once."""
    node = start_node()
    outputs = Outputs(node, ALEATORIC_TOPICS)
    camera = probe.publisher(node.topic("image"))
    rgb = test_pattern(6)
    first = send_until_output(node, camera, lambda s: rgb8_msg(rgb, s, frame_id=""), outputs, ALEATORIC_TOPICS, 1)
    second = send_until_output(
        node, camera, lambda s: rgb8_msg(rgb, s, frame_id=""), outputs, ALEATORIC_TOPICS, first + 1
    )
    messages = outputs.wait_frame(second, ALEATORIC_TOPICS)
    assert all(m.header.frame_id == "" for m in messages.values())
    assert node.process.output().count("the images have an empty frame_id") == 1, node.process.output()


def test_compressed_twins_decode_to_the_outputs_and_follow_the_jpeg_quality(start_node, probe):
    """image_transport's compressed twins (what RViz's Image display takes with the
    `compressed` transport, over a network): the labels' PNG decodes to the labels exactly,
    a colour image's JPEG (its raw topic unsubscribed) close to the colour image; the JPEG
    quality changes while the node runs; `output.compressed: false` advertises none."""
    node = start_node()
    outputs = Outputs(node, ["semantic/labels", "uncertainty/semantic/aleatoric/color"])
    twins = {
        name: probe.subscribe(node.topic(f"{name}/compressed"), CompressedImage)
        for name in ("semantic/labels", "semantic/color", "uncertainty/semantic/aleatoric/color")
    }
    camera = probe.publisher(node.topic("image"))
    frame = test_pattern(12)
    make = lambda stamp: rgb8_msg(frame, stamp)  # noqa: E731
    stamp = send_until_output(
        node, camera, make, outputs, ["semantic/labels", "uncertainty/semantic/aleatoric/color"],
        first_stamp=200, also=list(twins.values()),
    )
    raw = outputs.wait_frame(stamp, ["semantic/labels", "uncertainty/semantic/aleatoric/color"])
    got = {name: recorder.by_stamp(stamp)[0] for name, recorder in twins.items()}
    for message in got.values():
        assert stamp_ns(message.header) == stamp and message.header.frame_id == make(stamp).header.frame_id
    labels = got["semantic/labels"]
    assert labels.format == "mono8; png compressed "
    decoded = np.asarray(PILImage.open(io.BytesIO(bytes(labels.data))))
    assert np.array_equal(decoded, as_array(raw["semantic/labels"]))
    for name in ("semantic/color", "uncertainty/semantic/aleatoric/color"):
        assert got[name].format == "rgb8; jpeg compressed bgr8", name
        decoded = np.asarray(PILImage.open(io.BytesIO(bytes(got[name].data))).convert("RGB"))
        assert decoded.shape == (*CAMERA_HW, 3), name
    colour = np.asarray(PILImage.open(io.BytesIO(bytes(got["uncertainty/semantic/aleatoric/color"].data))))
    error = np.abs(colour.astype(np.float32) - as_array(raw["uncertainty/semantic/aleatoric/color"])).mean()
    assert error < 4.0, error

    [result] = node.set_params({"output.jpeg_quality": 5})
    assert result.successful, result.reason
    [refused] = node.set_params({"output.jpeg_quality": 101})
    assert not refused.successful and "out of range 1..=100" in refused.reason, refused.reason
    [restart] = node.set_params({"output.compressed": False})
    assert not restart.successful and "restart the node" in restart.reason, restart.reason
    later = send_until_output(
        node, camera, make, outputs, ["semantic/labels"], first_stamp=stamp + 1000,
        also=[twins["uncertainty/semantic/aleatoric/color"]],
    )
    coarse = twins["uncertainty/semantic/aleatoric/color"].by_stamp(later)[0]
    assert len(coarse.data) < len(got["uncertainty/semantic/aleatoric/color"].data)

    # Without them: the raw topics are in the graph (the twins of the first node too), no
    # twin of this one's.
    plain = start_node(params={"output.compressed": False})

    def graph():
        # `points` is advertised after every image topic (and twin) of a node.
        names = [name for name, _ in probe.node.get_topic_names_and_types()]
        wanted = [plain.topic("points"), node.topic("semantic/color/compressed")]
        return names if all(n in names for n in wanted) else None

    names = wait_for(graph, 10, "the outputs in the graph")
    assert not [n for n in names if n.startswith(plain.topic("")) and n.endswith("/compressed")], names

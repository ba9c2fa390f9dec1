"""End-to-end tests of bayes_perception_node: the real binary as a child process, real rcl
and Fast DDS, driven from rclpy (the probe).

Run by `make test` (or `make test-node`) in a shell set up by scripts/ros-env.sh, with
BAYES_PERCEPTION_NODE and BAYES_PERCEPTION_BIN naming the node and CLI binaries. Every
wait has a deadline and polls a condition; nothing sleeps a fixed time.
"""
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

# Isolate this run from other ROS 2 traffic before rclpy (and the nodes) read the
# environment: a domain of our own, discovery on this host only, logs unbuffered.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"
os.environ["RCUTILS_COLORIZED_OUTPUT"] = "0"

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy  # noqa: E402
from rcl_interfaces.srv import (  # noqa: E402
    GetParameters,
    SetParameters,
    SetParametersAtomically,
)
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PARAMS_FILE = REPO / "config" / "params.yaml"
SEED = 7
# Native size of the test model, and the camera size the tests publish (not a multiple of
# it, so every output goes through the resize).
MODEL_HW = (48, 64)
CAMERA_HW = (60, 80)

# Output topics (relative to the node's namespace) of a semantic + depth model.
ALEATORIC_TOPICS = [
    "semantic/labels",
    "semantic/color",
    "semantic/confidence",
    "depth",
    "uncertainty/semantic/aleatoric",
    "uncertainty/semantic/aleatoric/color",
    "uncertainty/depth/aleatoric",
    "uncertainty/depth/aleatoric/color",
]
EPISTEMIC_TOPICS = [
    "uncertainty/semantic/epistemic",
    "uncertainty/semantic/epistemic/color",
    "uncertainty/depth/epistemic",
    "uncertainty/depth/epistemic/color",
]
ALL_TOPICS = ALEATORIC_TOPICS + EPISTEMIC_TOPICS


def binary(variable):
    path = os.environ.get(variable)
    if not path or not Path(path).is_file():
        raise RuntimeError(
            f"{variable} must name a built binary (run these tests with `make test-node`); got {path!r}"
        )
    return path


NODE = binary("BAYES_PERCEPTION_NODE")
CLI = binary("BAYES_PERCEPTION_BIN")


def wait_for(condition, timeout, what):
    """Polls `condition` until it returns something truthy; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# diagnostic_msgs/DiagnosticStatus levels.
OK, WARN, ERROR = 0, 1, 2


def level(status):
    return int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else status.level


def stamp_ns(header):
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def set_stamp(header, ns):
    header.stamp.sec, header.stamp.nanosec = divmod(ns, 1_000_000_000)


def reliable(depth=10):
    return QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=depth)


def best_effort(depth=10):
    return QoSProfile(
        reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=depth
    )


class Recorder:
    """Messages of one subscription with their arrival times (monotonic)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def __call__(self, msg):
        with self.lock:
            self.items.append((time.monotonic(), msg))

    def messages(self):
        with self.lock:
            return [m for _, m in self.items]

    def timed(self):
        with self.lock:
            return list(self.items)

    def by_stamp(self, ns):
        return [m for m in self.messages() if stamp_ns(m.header) == ns]

    def __len__(self):
        with self.lock:
            return len(self.items)


class Probe:
    """An rclpy node spun by a background thread: subscriptions record, the test thread
    publishes and calls services."""

    def __init__(self):
        self.node = rclpy.create_node(f"e2e_probe_{os.getpid()}")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.clients = {}
        self.diagnostics = self.subscribe("/diagnostics", DiagnosticArray, reliable())

    def subscribe(self, topic, msg_type=Image, qos=None):
        recorder = Recorder()
        recorder.subscription = self.node.create_subscription(
            msg_type, topic, recorder, qos or reliable(100)
        )
        return recorder

    def unsubscribe(self, recorder):
        self.node.destroy_subscription(recorder.subscription)

    def publisher(self, topic, msg_type=Image, qos=None):
        return self.node.create_publisher(msg_type, topic, qos or reliable())

    def client(self, srv_type, name):
        """One client per service, kept: a new client's first request can be answered
        before the server has discovered the client's reply reader, and that reply is lost
        (a DDS discovery race of ROS 2 services, not of the node)."""
        key = (srv_type, name)
        if key not in self.clients:
            self.clients[key] = self.node.create_client(srv_type, name)
        return self.clients[key]

    def call(self, srv_type, name, request, timeout=10.0, attempts=3):
        """The reply to `request`. Requests without a reply after `timeout` s are sent
        again (parameter requests are idempotent), for the race described at `client`."""
        client = self.client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise AssertionError(f"service {name} not available after {timeout} s")
        for _ in range(attempts):
            future = client.call_async(request)
            try:
                wait_for(future.done, timeout / attempts, f"a reply from {name}")
                return future.result()
            except AssertionError:
                client.remove_pending_request(future)
        raise AssertionError(f"no reply from {name} to {attempts} requests in {timeout} s")

    def diagnostic_status(self, node_name, after=0.0):
        """The statuses published about `node_name` after monotonic time `after`."""
        out = []
        for at, array in self.diagnostics.timed():
            for status in array.status:
                if at > after and status.name == f"{node_name.lstrip('/')}: inference":
                    out.append(status)
        return out

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


def status_values(status):
    return {kv.key: kv.value for kv in status.values}


class NodeProcess:
    """bayes_perception_node as a child process, its stderr/stdout in a log file."""

    def __init__(self, log_path, ros_args, executable=None, env=None):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.command = [executable or NODE, "--ros-args", *ros_args]
        self.proc = subprocess.Popen(
            self.command, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def output(self):
        if not self.log.closed:
            self.log.flush()
        return Path(self.log_path).read_text()

    def exit_code(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGINT, timeout=15.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.exit_code(timeout)
        if code is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        return code

    def peak_rss_kib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")


class RunningNode:
    """A started node with a namespace, its probe and helpers for its topics and services."""

    def __init__(self, probe, process, namespace, name="bayes_perception"):
        self.probe = probe
        self.process = process
        self.namespace = namespace.rstrip("/")
        self.name = name
        self.fqn = f"{self.namespace}/{name}"

    def topic(self, relative):
        return f"{self.namespace}/{relative}"

    def wait_ready(self, timeout=30.0):
        def up():
            code = self.process.proc.poll()
            if code is not None:
                raise AssertionError(f"node exited with {code}:\n{self.process.output()}")
            return self.get_params(["mode"], timeout=0.2) is not None

        wait_for(up, timeout, f"{self.fqn} to serve its parameters")
        wait_for(lambda: "ready:" in self.process.output(), timeout, "the node's ready line")

    # Parameters.

    def get_params(self, names, timeout=10.0):
        """{name: value}, or None when the node serves no parameters within `timeout`."""
        client = self.probe.client(GetParameters, f"{self.fqn}/get_parameters")
        if not client.wait_for_service(timeout_sec=timeout):
            return None
        reply = self.probe.call(GetParameters, f"{self.fqn}/get_parameters", GetParameters.Request(names=names))
        return {n: Parameter.from_parameter_msg(_named(n, v)).value for n, v in zip(names, reply.values)}

    def set_params(self, values):
        """set_parameters; the list of SetParametersResult in request order."""
        request = SetParameters.Request(
            parameters=[Parameter(n, value=v).to_parameter_msg() for n, v in values.items()]
        )
        return self.probe.call(SetParameters, f"{self.fqn}/set_parameters", request).results

    def set_params_atomically(self, values):
        request = SetParametersAtomically.Request(
            parameters=[Parameter(n, value=v).to_parameter_msg() for n, v in values.items()]
        )
        return self.probe.call(
            SetParametersAtomically, f"{self.fqn}/set_parameters_atomically", request
        ).result

    def statuses(self, after=0.0):
        return self.probe.diagnostic_status(self.fqn, after)

    def wait_status(self, predicate, timeout, what, after=None):
        """The first diagnostics status (published after `after`) that satisfies
        `predicate`."""
        after = time.monotonic() if after is None else after

        def found():
            return next((s for s in self.statuses(after) if predicate(s)), None)

        return wait_for(found, timeout, what)


def run_cli(*args):
    """`bayes_perception ARGS`; fails with its output when it fails."""
    done = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, f"bayes_perception {' '.join(map(str, args))}:\n{done.stdout}{done.stderr}"
    return done.stdout


def _named(name, value):
    from rcl_interfaces.msg import Parameter as ParameterMsg

    return ParameterMsg(name=name, value=value)


@pytest.fixture(scope="session")
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture
def probe(ros):
    p = Probe()
    yield p
    p.close()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A semantic + depth FC-DenseNet56 with random weights at a small native size."""
    out = tmp_path_factory.mktemp("model") / "m"
    h, w = MODEL_HW
    run_cli("model", "init", "--out", out, "--height", h, "--width", w)
    return out


def write_params(path, model, **overrides):
    """config/params.yaml with the test model, seed, the CPU (also where a GPU is) and one
    CPU thread, plus `overrides` (dotted names), written to `path`."""
    doc = yaml.safe_load(PARAMS_FILE.read_text())
    params = doc["/**"]["ros__parameters"]
    settings = {"model": str(model), "seed": SEED, "device": "cpu", "cpu_threads": 1, **overrides}
    for dotted, value in settings.items():
        *groups, key = dotted.split(".")
        target = params
        for group in groups:
            target = target[group]
        if key not in target:
            raise KeyError(f"{dotted} is not in config/params.yaml")
        target[key] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


_node_counter = [0]


@pytest.fixture
def start_node(probe, model_dir, tmp_path):
    """Starts nodes (each in a namespace of its own) and stops them after the test."""
    started = []

    def start(params=None, ros_args=(), namespace=None, wait=True, params_file=None, model=None, env=None):
        """`env`: extra environment variables for the node (FAILPOINTS, say)."""
        _node_counter[0] += 1
        namespace = namespace or f"/e2e{_node_counter[0]}"
        if params_file is None:
            params_file = write_params(
                tmp_path / f"params{_node_counter[0]}.yaml", model or model_dir, **(params or {})
            )
        args = ["-r", f"__ns:={namespace}", "--params-file", str(params_file), *ros_args]
        process = NodeProcess(tmp_path / f"node{_node_counter[0]}.log", args, env=env)
        node = RunningNode(probe, process, namespace)
        node.params_file = params_file
        started.append(node)
        if wait:
            node.wait_ready()
        return node

    yield start
    for node in started:
        node.process.stop()


# Frames.

def test_pattern(seed, hw=CAMERA_HW):
    """A smooth RGB pattern with texture; different per seed."""
    h, w = hw
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x * 7 + y * 13) % 256], -1)
    return ((base + rng.integers(0, 40, size=(h, w, 3))) % 256).astype(np.uint8)


test_pattern.__test__ = False  # not a test


def image_msg(data, encoding, height, width, step, stamp, frame_id="camera_optical", bigendian=0):
    msg = Image()
    msg.header.frame_id = frame_id
    set_stamp(msg.header, stamp)
    msg.height, msg.width, msg.step = height, width, step
    msg.encoding = encoding
    msg.is_bigendian = bigendian
    msg.data = bytes(data)
    return msg


def rgb8_msg(rgb, stamp, **kw):
    h, w, _ = rgb.shape
    return image_msg(rgb.tobytes(), "rgb8", h, w, w * 3, stamp, **kw)


def camera_info_msg(stamp, hw=CAMERA_HW, frame_id="camera_optical"):
    info = CameraInfo()
    info.header.frame_id = frame_id
    set_stamp(info.header, stamp)
    info.height, info.width = hw
    info.distortion_model = "plumb_bob"
    info.d = [0.1, -0.05, 0.0, 0.0, 0.0]
    info.k = [70.0, 0.0, 40.0, 0.0, 70.0, 30.0, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [70.0, 0.0, 40.0, 0.0, 0.0, 70.0, 30.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def compressed_msg(data, fmt, stamp, frame_id="camera_optical"):
    msg = CompressedImage()
    msg.header.frame_id = frame_id
    set_stamp(msg.header, stamp)
    msg.format = fmt
    msg.data = bytes(data)
    return msg


def as_array(msg):
    """An output Image as a numpy array (rows cut to width, native byte order)."""
    h, w = msg.height, msg.width
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(h, msg.step)
    if msg.encoding == "32FC1":
        dtype = ">f4" if msg.is_bigendian else "<f4"
        return raw[:, : w * 4].copy().view(dtype).reshape(h, w).astype(np.float32)
    if msg.encoding == "mono8":
        return raw[:, :w].copy()
    if msg.encoding == "rgb8":
        return raw[:, : w * 3].copy().reshape(h, w, 3)
    raise AssertionError(f"unexpected output encoding {msg.encoding}")


class Outputs:
    """Subscriptions to every output topic of a node, and waits on them."""

    def __init__(self, node, topics=ALL_TOPICS, qos=None):
        self.node = node
        self.recorders = {t: node.probe.subscribe(node.topic(t), Image, qos) for t in topics}

    def wait_frame(self, stamp, topics, timeout=20.0):
        """Waits until each of `topics` has a message with `stamp`; returns them."""
        def ready():
            found = {t: self.recorders[t].by_stamp(stamp) for t in topics}
            return found if all(found.values()) else None

        found = wait_for(ready, timeout, f"outputs on {topics} for stamp {stamp}")
        return {t: msgs[0] for t, msgs in found.items()}

    def matched(self, topics):
        """Whether each subscription has found the node's publisher."""
        return all(self.recorders[t].subscription.get_publisher_count() > 0 for t in topics)

    def counts(self):
        return {t: len(r) for t, r in self.recorders.items()}


def send_until_output(node, publisher, make_msg, outputs, topics, first_stamp, timeout=30.0, also=()):
    """Publishes frames (stamps from `first_stamp` up) until one of them comes out on every
    topic (and on the recorders `also`), so matching has happened in both directions.
    Returns that frame's stamp."""
    deadline = time.monotonic() + timeout
    sent = []
    recorders = [outputs.recorders[t] for t in topics] + list(also)

    def complete():
        return next((s for s in sent if all(r.by_stamp(s) for r in recorders)), None)

    while time.monotonic() < deadline:
        stamp = first_stamp + len(sent)
        publisher.publish(make_msg(stamp))
        sent.append(stamp)
        try:
            return wait_for(complete, 0.5, "outputs")
        except AssertionError:
            if node.process.proc.poll() is not None:
                raise AssertionError(f"node exited:\n{node.process.output()}")
    raise AssertionError(f"no outputs on {topics} after {timeout} s of frames")

#!/usr/bin/env python3
"""Soak: 10 000 frames through the running node, and `bag process` over a 10 000-frame
bag, with the resident memory (RSS) of the process sampled as the frames go by.

    make soak                                  # both, release builds, results in reliability/
    python scripts/soak.py node --frames 10000 # in a shell that sourced scripts/ros-env.sh
    python scripts/soak.py bag --frames 10000

node: the node (BAYES_PERCEPTION_NODE) runs an FC-DenseNet56 with random weights at a
small native size (48x64) on one CPU thread; an rclpy camera publishes 80x60 rgb8 frames
with reliable QoS as fast as the node takes them (WINDOW frames ahead of the outputs, so
the node is never idle and its keep-latest slot sometimes replaces a waiting frame).
RSS is read from /proc every 100 output frames. Checked at the end: every frame sent
was received; received = published + dropped + skipped + failed (from /diagnostics);
every output topic got exactly the published count; RSS after warm-up grew at most 5 %.

bag: `bag sample` writes the bag, `bag process` (BAYES_PERCEPTION_BIN) processes it with
the same model while RSS is read every 50 ms; the frame count at each sample comes from
the bytes of the output written so far (an MCAP chunk is about 4 frames here). Checked:
all frames processed, each output topic holds one message per frame, RSS growth after
warm-up at most 5 %.

Writes OUT/{node,bag}_rss.csv, OUT/{node,bag}.json and, where matplotlib imports,
OUT/{node,bag}_rss.png (`soak.py plot` draws them afterwards from the first two, with a
Python that has matplotlib). Exits 1 when a check fails.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import re
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WARM_UP = 1000  # frames before RSS is taken as the baseline
MAX_GROWTH = 0.05
# The output topics of a semantic + depth model in aleatoric mode.
ALEATORIC_TOPICS = [
    "semantic/labels", "semantic/color", "semantic/confidence", "depth",
    "uncertainty/semantic/aleatoric", "uncertainty/semantic/aleatoric/color",
    "uncertainty/depth/aleatoric", "uncertainty/depth/aleatoric/color",
]


def binary(variable, name):
    if os.environ.get(variable):
        return os.environ[variable]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("release", "debug"):
        if (target / profile / name).is_file():
            return str(target / profile / name)
    sys.exit(f"soak: no {name} built; run `make soak` or set {variable}")


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def make_model(cli, work):
    model = work / "model"
    subprocess.run([cli, "model", "init", "--out", str(model), "--height", "48", "--width", "64"],
                   check=True, capture_output=True)
    return model


def growth(samples):
    """(baseline KiB, max KiB after it, growth fraction, slope KiB per 1000 frames) over
    the samples after WARM_UP frames; samples are (frames, rss_kib)."""
    after = [(f, r) for f, r in samples if f >= WARM_UP]
    if len(after) < 2:
        raise RuntimeError(f"only {len(after)} RSS samples after warm-up")
    base = after[0][1]
    peak = max(r for _, r in after)
    n = len(after)
    mean_f = sum(f for f, _ in after) / n
    mean_r = sum(r for _, r in after) / n
    slope = sum((f - mean_f) * (r - mean_r) for f, r in after) / sum((f - mean_f) ** 2 for f, _ in after)
    return base, peak, (peak - base) / base, slope * 1000


def rss_figures(samples, problems):
    """growth(samples), with a problem added where RSS grew too much or there are too few
    samples to tell (then the figures are None)."""
    try:
        base, peak, grew, slope = growth(samples)
    except (RuntimeError, ZeroDivisionError) as e:
        problems.append(f"RSS growth not measured: {e}")
        return None, None, None, None
    if grew > MAX_GROWTH:
        problems.append(f"RSS grew {grew * 100:.1f} % after warm-up")
    return base, peak, grew, slope


def write_results(out, kind, samples, summary, problems):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{kind}_rss.csv", "w") as f:
        f.write("frames,rss_kib\n")
        f.writelines(f"{fr},{r}\n" for fr, r in samples)
    summary["problems"] = problems
    (out / f"{kind}.json").write_text(json.dumps(summary, indent=1))
    if samples:
        plot(out, kind)


def plot(out, kind):
    """OUT/KIND_rss.png from OUT/KIND_rss.csv and OUT/KIND.json, where matplotlib imports
    (`soak.py plot` redraws them with another Python that has it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("soak: matplotlib not installed; no plot (the CSV has the samples)")
        return
    lines = (out / f"{kind}_rss.csv").read_text().splitlines()[1:]
    samples = [tuple(int(v) for v in line.split(",")) for line in lines]
    summary = json.loads((out / f"{kind}.json").read_text())
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    ax.plot([f for f, _ in samples], [r / 1024 for _, r in samples], lw=1.2)
    ax.axvline(WARM_UP, color="grey", ls="--", lw=0.8, label=f"end of warm-up ({WARM_UP} frames)")
    if summary.get("rss_baseline_kib"):
        base = summary["rss_baseline_kib"] / 1024
        ax.axhline(base * (1 + MAX_GROWTH), color="red", ls=":", lw=0.8, label="baseline + 5 %")
    ax.set_ylim(0, max(r for _, r in samples) / 1024 * 1.15)
    ax.set_xlabel("frames")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(summary["title"])
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{kind}_rss.png")
    print(f"soak: wrote {out / (kind + '_rss.png')}")


def soak_node(args, work):
    # 1..101: the IDs ROS 2 leaves clear of the ephemeral ports on Linux, not the default 0.
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 101))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    import numpy as np
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    cli = binary("BAYES_PERCEPTION_BIN", "bayes_perception")
    node_bin = binary("BAYES_PERCEPTION_NODE", "bayes_perception_node")
    model = make_model(cli, work)
    params = write_params(work / "params.yaml", model, {"qos": {"input_reliability": "reliable"}})
    log = open(work / "node.log", "w")
    proc = subprocess.Popen([node_bin, "--ros-args", "-r", "__ns:=/soak", "--params-file", str(params)],
                            stdout=log, stderr=subprocess.STDOUT)
    rclpy.init()
    probe = rclpy.create_node("soak_probe")
    reliable = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=100)
    lock = threading.Lock()
    counts = {t: 0 for t in ALEATORIC_TOPICS}
    latest = {}
    # The index of the newest frame out (frame i is stamped 1 s + i ns): a frame the node
    # dropped, skipped or failed never comes out, so "in flight" is what was sent after
    # the newest output, not what was sent less what came out.
    newest = [-1]

    def counter(topic):
        def on_message(msg):
            with lock:
                counts[topic] += 1
                if topic == "depth":
                    index = (msg.header.stamp.sec - 1) * 10**9 + msg.header.stamp.nanosec
                    newest[0] = max(newest[0], index)
        return on_message

    def on_diagnostics(array):
        for status in array.status:
            if status.name == "soak/bayes_perception: inference":
                with lock:
                    latest.clear()
                    latest.update({kv.key: kv.value for kv in status.values})

    subs = [probe.create_subscription(Image, f"/soak/{t}", counter(t), reliable) for t in ALEATORIC_TOPICS]
    subs.append(probe.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, reliable))
    camera = probe.create_publisher(Image, "/soak/image", QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10))
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    threading.Thread(target=executor.spin, daemon=True).start()

    h, w = 60, 80
    y, x = np.mgrid[0:h, 0:w]
    msg = Image()
    msg.header.frame_id = "camera_optical"
    msg.height, msg.width, msg.step, msg.encoding = h, w, w * 3, "rgb8"

    def published():
        with lock:
            return counts["depth"]

    def in_flight():
        with lock:
            return sent - (newest[0] + 1)

    def wait(condition, timeout, what):
        deadline = time.monotonic() + timeout
        while not condition():
            if proc.poll() is not None:
                log.flush()
                tail = "".join((work / "node.log").read_text().splitlines(keepends=True)[-20:])
                raise RuntimeError(f"the node exited with {proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.002)

    samples, sent, started = [], 0, time.monotonic()
    diag, final_counts, elapsed, error = {}, dict(counts), 0.0, None
    try:
        wait(lambda: all(s.get_publisher_count() > 0 for s in subs[:-1]) and camera.get_subscription_count() > 0,
             60, "the node's topics")
        next_sample = 0
        while published() < args.frames:
            if in_flight() < args.window:
                # A moving pattern, so no two frames are alike.
                rgb = np.stack([(x + sent) % 256, (y * 4 + sent) % 256, (x * 7 + y * 13) % 256], -1)
                msg.data = rgb.astype(np.uint8).tobytes()
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(10**9 + sent, 10**9)
                camera.publish(msg)
                sent += 1
            else:
                wait(lambda: in_flight() < args.window or published() >= args.frames, 60,
                     f"output {published() + 1}")
            if published() >= next_sample:
                samples.append((published(), rss_kib(proc.pid)))
                next_sample += 100
                if published() % 1000 == 0:
                    print(f"soak node: {published()} frames out, {sent} sent, RSS {samples[-1][1] / 1024:.1f} MiB",
                          flush=True)
        # Quiet: let the last frames and a fresh /diagnostics report arrive.
        time.sleep(3)
        with lock:
            latest.clear()
        wait(lambda: bool(latest), 10, "a /diagnostics report")
        with lock:
            final_counts, diag = dict(counts), dict(latest)
        elapsed = time.monotonic() - started
    except RuntimeError as e:
        # What was measured so far and the node's log are kept (the log beside the results).
        error = str(e)
        with lock:
            final_counts, diag = dict(counts), dict(latest)
        elapsed = time.monotonic() - started
    finally:
        proc.send_signal(2)
        try:
            exit_code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            exit_code = None
        executor.shutdown()
        rclpy.shutdown()

    log.close()
    out_count = final_counts["depth"]
    if error is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "node.log").write_text((work / "node.log").read_text(errors="replace"))
        summary = {"title": f"bayes_perception_node, stopped after {out_count} frames",
                   "binary": node_bin, "frames_sent": sent, "frames_published": out_count,
                   "per_topic": final_counts, "diagnostics": diag, "seconds": round(elapsed, 1),
                   "exit_code": exit_code, "node_log": str(args.out / "node.log")}
        return "node", samples, summary, [error]
    received = int(diag["frames received"])
    dropped = int(diag["frames dropped (keep-latest)"])
    skipped = int(diag["frames skipped (bad input)"])
    failed = int(diag["frames failed"])
    problems = []
    if received != sent:
        problems.append(f"sent {sent}, the node received {received}")
    if received != out_count + dropped + skipped + failed:
        problems.append(f"received {received} != published {out_count} + dropped {dropped} + skipped {skipped} + failed {failed}")
    if len(set(final_counts.values())) != 1:
        problems.append(f"output topics differ in count: {final_counts}")
    if exit_code != 0:
        problems.append(f"exit code {exit_code} after SIGINT")
    base, peak, grew, slope = rss_figures(samples, problems)
    summary = {
        "title": f"bayes_perception_node, {out_count} frames (FC-DenseNet56 48x64, CPU, 1 thread)",
        "binary": node_bin, "frames_sent": sent, "frames_received": received, "frames_published": out_count,
        "frames_dropped": dropped, "frames_skipped": skipped, "frames_failed": failed,
        "per_topic": final_counts, "seconds": round(elapsed, 1), "frames_per_s": round(out_count / elapsed, 2),
        "rss_baseline_kib": base, "rss_peak_after_warm_up_kib": peak, "rss_growth": grew and round(grew, 4),
        "rss_slope_kib_per_1000_frames": slope and round(slope, 1), "rss_first_kib": samples[0][1], "exit_code": exit_code,
    }
    return "node", samples, summary, problems


def soak_bag(args, work):
    cli = binary("BAYES_PERCEPTION_BIN", "bayes_perception")
    model = make_model(cli, work)
    bag_in, bag_out = work / "input", work / "output"
    subprocess.run([cli, "bag", "sample", str(bag_in), "--frames", str(args.frames), "--width", "80", "--height", "60"],
                   check=True, capture_output=True)
    command = [cli, "bag", "process", str(bag_in), str(bag_out), "--model", str(model), "--device", "cpu",
               "--config", str(write_params(work / "params.yaml", model))]
    started = time.monotonic()
    # Its output to files: a pipe read only at the end fills on a long run and blocks it.
    stdout_path, stderr_path = work / "bag.stdout", work / "bag.stderr"
    with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err)
    raw = []  # (bytes written so far, rss_kib)
    while proc.poll() is None:
        written = sum(f.stat().st_size for p in work.glob(".output.partial-*") for f in p.glob("*.mcap"))
        try:
            raw.append((written, rss_kib(proc.pid)))
        except (FileNotFoundError, RuntimeError, ProcessLookupError):
            break
        time.sleep(0.05)
    proc.wait()
    stdout, stderr = stdout_path.read_text(errors="replace"), stderr_path.read_text(errors="replace")
    elapsed = time.monotonic() - started
    problems = []
    if proc.returncode != 0:
        problems.append(f"bag process exited {proc.returncode}: {stderr.strip()[-300:]}")
        return "bag", [], {"title": "bag process"}, problems
    meta = yaml.safe_load((bag_out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in meta["topics_with_message_count"]}
    total = sum(f.stat().st_size for f in bag_out.glob("*.mcap"))
    per_frame = total / args.frames
    by_frames = {}
    for written, rss in raw:
        by_frames[int(written / per_frame) // 100 * 100] = rss  # the last sample in each 100 frames
    samples = sorted(by_frames.items())
    if any(n != args.frames for n in counts.values()):
        problems.append(f"not every topic holds {args.frames} messages: {counts}")
    done = re.search(r"(\d+) camera frame\(s\) read, (\d+) processed", stdout)
    if not done or done.groups() != (str(args.frames), str(args.frames)):
        problems.append(f"the summary does not say {args.frames} frames were read and processed:\n{stdout}")
    base, peak, grew, slope = rss_figures(samples, problems)
    summary = {
        "title": f"bag process, {args.frames} frames (FC-DenseNet56 48x64, CPU, 1 thread)",
        "binary": cli, "frames": args.frames, "per_topic": counts, "seconds": round(elapsed, 1),
        "frames_per_s": round(args.frames / elapsed, 2), "output_bytes": total,
        "rss_baseline_kib": base, "rss_peak_after_warm_up_kib": peak, "rss_growth": grew and round(grew, 4),
        "rss_slope_kib_per_1000_frames": slope and round(slope, 1), "rss_first_kib": samples[0][1] if samples else None,
        "summary": stdout.strip().splitlines(),
    }
    return "bag", samples, summary, problems


def write_params(path, model, overrides=None):
    """config/params.yaml with `model`, the CPU, one CPU thread, a seed and `overrides`
    (nested mappings), written to `path`."""
    doc = yaml.safe_load((REPO / "config" / "params.yaml").read_text())
    params = doc["/**"]["ros__parameters"]
    params.update({"model": str(model), "device": "cpu", "cpu_threads": 1, "seed": 7})
    for group, values in (overrides or {}).items():
        params[group].update(values)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["node", "bag", "plot"],
                        help="plot: redraw OUT/{node,bag}_rss.png from the saved results")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=3, help="node: frames published ahead of the outputs")
    parser.add_argument("--out", type=Path, default=REPO / "reliability")
    args = parser.parse_args()
    if args.what == "plot":
        for kind in ("node", "bag"):
            if (args.out / f"{kind}.json").is_file():
                plot(args.out, kind)
        return
    with tempfile.TemporaryDirectory(prefix="soak.") as tmp:
        kind, samples, summary, problems = (soak_node if args.what == "node" else soak_bag)(args, Path(tmp))
    write_results(args.out, kind, samples, summary, problems)
    print(json.dumps({k: v for k, v in summary.items() if k != "summary"}, indent=1))
    for p in problems:
        print(f"soak {kind}: FAILED: {p}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

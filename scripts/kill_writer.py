#!/usr/bin/env python3
"""`bag process` killed with SIGKILL at random points, and on a full disk.

After each kill, OUTPUT must be either absent or a complete bag: rosbags and mcap (+
mcap-ros2-support) read every message without error and metadata.yaml's counts (total and
per topic) match the messages in the file. The next run to the same OUTPUT must succeed
and leave no partial directories behind. Then a small tmpfs (a real full disk) or, where
mounting is not allowed, a file-size limit: a clear error, a non-zero exit, no OUTPUT.

    make setup   # the cache venv has rosbags and mcap
    ~/.cache/bayes_perception/venv/bin/python scripts/kill_writer.py [--points 20] [--seed 1]

BAYES_PERCEPTION_BIN names the CLI (default: the release build, else the debug build).
Prints one line per kill and a summary; exits 1 if any outcome was wrong. `--json FILE`
writes the outcomes. tests/bag_crash.rs runs three of these kills in `make test`.
"""
import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]
TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)


def cli_binary():
    if os.environ.get("BAYES_PERCEPTION_BIN"):
        return os.environ["BAYES_PERCEPTION_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("release", "debug"):
        if (target / profile / "bayes_perception").is_file():
            return str(target / profile / "bayes_perception")
    sys.exit("kill_writer: no bayes_perception binary; build it (cargo build --release) or set BAYES_PERCEPTION_BIN")


def check_complete(bag):
    """Problems with `bag` as a finished rosbag2 directory (empty list: complete)."""
    problems = []
    meta = YAML(typ="safe").load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    expected = {t["topic_metadata"]["name"]: t["message_count"] for t in meta["topics_with_message_count"]}
    if sum(expected.values()) != meta["message_count"]:
        problems.append(f"metadata total {meta['message_count']} != sum of topics {sum(expected.values())}")
    by_rosbags = Counter()
    with Reader(bag) as reader:
        for conn, _, raw in reader.messages():
            TYPESTORE.deserialize_cdr(raw, conn.msgtype)
            by_rosbags[conn.topic] += 1
    by_mcap = Counter()
    for path in sorted(bag.glob("*.mcap")):
        with open(path, "rb") as f:
            for _, channel, _, _ in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
                by_mcap[channel.topic] += 1
    for name, counts in (("rosbags", by_rosbags), ("mcap", by_mcap)):
        if dict(counts) != {t: n for t, n in expected.items() if n}:
            problems.append(f"{name} read {dict(counts)}, metadata says {expected}")
    if meta["message_count"] == 0:
        problems.append("no messages")
    return problems


def partials(parent, name):
    return sorted(p for p in parent.iterdir() if p.name.startswith(f".{name}.partial-"))


def dir_bytes(path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Run:
    def __init__(self, binary, bag, model):
        self.binary, self.bag, self.model = binary, bag, model

    def command(self, output, force=False):
        cmd = [self.binary, "bag", "process", str(self.bag), str(output), "--model", str(self.model), "--device", "cpu"]
        return cmd + (["--force"] if force else [])

    def run(self, output, force=False, preexec=None):
        return subprocess.run(self.command(output, force), capture_output=True, text=True, preexec_fn=preexec)


def kill_points(run, work, points, rng, duration):
    """Kills at `points` random times in [0, 1.15 x a full run]; one outcome dict each."""
    outcomes = []
    for i in range(points):
        output = work / f"out{i}"
        at = rng.uniform(0, 1.15 * duration)
        child = subprocess.Popen(run.command(output), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(at)
        finished = child.poll() is not None
        held = max((dir_bytes(p) for p in partials(work, output.name)), default=0)
        child.send_signal(signal.SIGKILL)
        child.wait()
        outcome = {"point": i, "kill_after_s": round(at, 3), "partial_bytes_at_kill": held}
        if output.exists():
            problems = check_complete(output)
            outcome["output"] = "complete" if not problems else "INCOMPLETE"
            outcome["problems"] = problems
        else:
            outcome["output"] = "absent"
            outcome["problems"] = [] if not finished else ["the run had exited, yet there is no OUTPUT"]
        outcome["partials_left"] = len(partials(work, output.name))
        # The next run to the same OUTPUT completes and clears what the killed one left.
        again = run.run(output, force=output.exists())
        if again.returncode != 0:
            outcome["problems"].append(f"rerun failed ({again.returncode}): {again.stderr.strip()[-300:]}")
        else:
            outcome["problems"] += [f"after rerun: {p}" for p in check_complete(output)]
            if partials(work, output.name):
                outcome["problems"].append("partial directories remain after the rerun")
        outcomes.append(outcome)
        status = "ok" if not outcome["problems"] else "FAIL: " + "; ".join(outcome["problems"])
        print(
            f"kill {i + 1:2d}/{points} at {at:6.2f} s ({held:>9,} bytes written): "
            f"OUTPUT {outcome['output']}, {outcome['partials_left']} partial dir(s) left; rerun cleans up: {status}",
            flush=True,
        )
    return outcomes


def disk_full(run, work):
    """A full disk: a 256 KiB tmpfs if this process may mount one, else `ulimit -f`."""
    mount = work / "small_disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode == 0:
        how, preexec = "tmpfs of 256 KiB", None
    else:
        how = f"ulimit -f 256 KiB (no tmpfs: {mounted.stderr.decode().strip()})"

        def preexec():
            resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

    try:
        output = mount / "out"
        done = run.run(output, preexec=preexec)
        problems = []
        if done.returncode == 0:
            problems.append("exit code 0")
        if not any(s in done.stderr for s in ("No space left on device", "File too large")):
            problems.append(f"no clear reason in: {done.stderr.strip()[-300:]}")
        if output.exists():
            problems.append("an OUTPUT exists")
        if partials(mount, "out"):
            problems.append("a partial directory is left")
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        print(f"disk full ({how}): exit {done.returncode}, {reason!r}: {'ok' if not problems else 'FAIL: ' + '; '.join(problems)}")
        return {"how": how, "exit_code": done.returncode, "stderr_last_line": reason, "problems": problems}
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", str(mount)], check=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20, help="random kill points (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the kill times")
    parser.add_argument("--frames", type=int, default=60, help="frames in the input bag")
    parser.add_argument("--json", type=Path, help="write the outcomes here")
    args = parser.parse_args()
    binary = cli_binary()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="kill_writer.") as tmp:
        work = Path(tmp)
        subprocess.run([binary, "model", "init", "--out", str(work / "model"), "--height", "48", "--width", "64"],
                       check=True, capture_output=True)
        subprocess.run([binary, "bag", "sample", str(work / "input"), "--frames", str(args.frames),
                        "--width", "64", "--height", "48"], check=True, capture_output=True)
        run = Run(binary, work / "input", work / "model")
        started = time.monotonic()
        reference = run.run(work / "reference")
        duration = time.monotonic() - started
        if reference.returncode != 0:
            sys.exit(f"kill_writer: the uninterrupted run failed:\n{reference.stderr}")
        problems = check_complete(work / "reference")
        if problems:
            sys.exit(f"kill_writer: the uninterrupted run's bag is not complete: {problems}")
        size = dir_bytes(work / "reference")
        print(f"uninterrupted run: {duration:.2f} s, {size:,} bytes, {args.frames} frames; binary {binary}")
        outcomes = kill_points(run, work, args.points, rng, duration)
        full = disk_full(run, work)
    shown = Counter(o["output"] for o in outcomes)
    failed = [o for o in outcomes if o["problems"]] + ([full] if full["problems"] else [])
    print(f"summary: {args.points} kills: {dict(shown)}; {len(failed)} wrong outcome(s)")
    if args.json:
        args.json.write_text(json.dumps({"binary": binary, "frames": args.frames, "uninterrupted_s": duration,
                                         "uninterrupted_bytes": size, "kills": outcomes, "disk_full": full}, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

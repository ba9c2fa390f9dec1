"""The Ray fleet driver (scripts/fleet.py) on a local Ray cluster with 2 worker CPUs:
six labelled bags processed and evaluated, one Ray worker killed in the middle of a bag,
a damaged bag; the merged report against one evaluation of all the frames; resuming;
a temporary failure retried and then reported.

Run by `make test-fleet` (which installs Ray into the cache venv and builds the binary);
BAYES_PERCEPTION_BIN names the binary (built with the `failpoints` feature)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import bags  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "scripts" / "fleet.py"
BIN = os.path.abspath(os.environ.get("BAYES_PERCEPTION_BIN", ROOT / "target" / "debug" / "bayes_perception"))

# MC with a seed: every frame is sampled from the seed, so a frame's result does not depend
# on which bag or process it is in. One libtorch thread everywhere, so that float sums are
# done in the same order as in the single run.
SETTINGS = ["--mode", "mc", "--samples", "8", "--seed", "3", "--device", "cpu"]


def binary(*args, **kwargs):
    return subprocess.run([BIN, *map(str, args)], check=True, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), **kwargs)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny random model at the scenes' size; a labelled bag of 12 scenes; the same bag cut
    into six bags of 2 frames; a damaged bag; one evaluation of the whole bag."""
    root = tmp_path_factory.mktemp("fleet")
    binary("model", "init", "--out", root / "model", "--height", 48, "--width", 64, "--seed", 1)
    binary("synth", "--bag", "--out", root / "whole", "--count", 12, "--seed", 7, "--width", 64,
           "--height", 48, "--ood", "--split", "test")
    (whole,) = (root / "whole").glob("*.mcap")
    parts = bags.split(whole, root, 6, frame_ns=100_000_000)
    damaged = bags.damaged_copy(parts[0], root / "damaged.mcap")
    binary("eval", "--bag", root / "whole", "--model", root / "model", "--json",
           root / "single.json", *SETTINGS)
    return {"root": root, "model": root / "model", "parts": parts, "damaged": damaged,
            "single": json.loads((root / "single.json").read_text())}


def fleet(data, out, bags_, *extra, env=None, on_start=None):
    """Runs the driver (2 local worker CPUs); `on_start(proc)` runs beside it."""
    cmd = [sys.executable, str(FLEET), *map(str, bags_), "--out", str(out), "--model",
           str(data["model"]), "--process", "--eval", "--num-cpus", "2", "--bin", BIN, *SETTINGS,
           *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, **(env or {})))
    watcher = threading.Thread(target=on_start, args=(proc,), daemon=True) if on_start else None
    if watcher:
        watcher.start()
    output, _ = proc.communicate(timeout=600)
    if watcher:
        watcher.join(timeout=10)
    summary = json.loads((out / "fleet.json").read_text()) if (out / "fleet.json").exists() else None
    return proc.returncode, output, summary


def processes():
    """(pid, parent pid, command line) of every process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        yield int(entry.name), ppid, [c.decode(errors="replace") for c in cmdline if c]


def _alive_since(pid):
    """A process's start time (clock ticks after boot) while it runs; None once it has
    ended (gone, or a zombie nobody waits for)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def kill_worker_running(bag, killed):
    """Waits for the binary to run on `bag`, SIGKILLs the Ray worker that started it, and
    records how soon the binary ended after it (`binary_ended_s`; None: it was still
    running 10 s later)."""

    def watch(proc):
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            for pid, ppid, cmd in processes():
                if cmd[:3] == [BIN, "bag", "process"] and str(bag) in cmd:
                    parent = Path(f"/proc/{ppid}/cmdline").read_bytes().decode(errors="replace")
                    record = {"worker": ppid, "worker_cmd": parent, "binary": pid,
                              "binary_ended_s": None}
                    killed.append(record)
                    started = _alive_since(pid)
                    if started is None:  # ended by itself already: the assertions say so
                        record["binary_ended_s"] = 0.0
                        return
                    os.kill(ppid, signal.SIGKILL)
                    t = time.monotonic()
                    while time.monotonic() - t < 10:
                        if _alive_since(pid) != started:
                            record["binary_ended_s"] = time.monotonic() - t
                            break
                        time.sleep(0.01)
                    return
            time.sleep(0.01)

    return watch


def metrics(report):
    """A report without its timing."""
    return {k: v for k, v in report.items() if k != "ms_per_frame"}


def assert_same(a, b, path=""):
    """Equal structure and values; floats to 1e-12 relative."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15), path
    else:
        assert a == b, path


def by_bag(summary):
    return {Path(r["bag"]).name: r for r in summary["results"]}


def test_killed_worker_is_retried_and_the_merged_report_equals_one_run(data, tmp_path):
    out = tmp_path / "out"
    killed = []
    code, output, summary = fleet(data, out, [*data["parts"], data["damaged"]],
                                  on_start=kill_worker_running(data["parts"][3], killed))
    assert killed and "ray::" in killed[0]["worker_cmd"], (killed, output)
    # The binary ended with its worker (within 5 s of the kill), without finishing its bag.
    assert killed[0]["binary_ended_s"] is not None and killed[0]["binary_ended_s"] < 5, killed
    # The damaged bag fails the run's exit code, after one try.
    assert code == 1, output
    results = by_bag(summary)
    assert (summary["bags"], summary["ok"], summary["failed"]) == (7, 6, 1), output
    damaged = results["damaged.mcap"]
    assert (damaged["status"], damaged["attempts"]) == ("damaged", 1), damaged
    assert "input damaged" in damaged["reason"], damaged
    # The bag whose worker was killed ran again and finished.
    part3 = results["part3.mcap"]
    assert (part3["status"], part3["attempts"]) == ("ok", 2), (part3, output)
    first_try = (Path(part3["dir"]) / "log.txt").read_text().split("\n$ ")[1]
    assert " bag process " in first_try and "wrote " not in first_try, first_try
    # What the killed run had written (if anything) is not left beside the whole output.
    assert not list(Path(part3["dir"]).glob("processed.salvaged*")), part3
    # Every part: both steps, 2 frames processed into a bag of the node's outputs.
    for name in (f"part{k}.mcap" for k in range(6)):
        process = results[name]["steps"]["process"]
        assert (process["status"], process["processed"]) == ("ok", 2), process
        assert (Path(results[name]["dir"]) / "processed" / "metadata.yaml").is_file()
    # The merged evaluation is the evaluation of all 12 frames in one process.
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 12
    assert_same(metrics(report), metrics(data["single"]))
    assert (out / "report" / "report.md").is_file()

    # Run again: the done bags are skipped, the damaged one tried once more; a done bag
    # whose evaluation state has gone since is evaluated again (not processed again).
    (Path(results["part0.mcap"]["dir"]) / "eval_state.json").unlink()
    code, output, again = fleet(data, out, [*data["parts"], data["damaged"]])
    assert code == 1, output
    assert again["resumed"] == 5, output
    assert by_bag(again)["damaged.mcap"]["attempts"] == 1
    assert by_bag(again)["part0.mcap"]["attempts"] == 1
    assert all(by_bag(again)[f"part{k}.mcap"]["attempts"] == 0 for k in range(1, 6))
    assert len(commands(results["part0.mcap"], "bag process")) == 1
    assert len(commands(results["part0.mcap"], "eval --bag")) == 2
    assert (out / "states.txt").read_text().count("eval_state.json") == 6
    assert_same(metrics(json.loads((out / "report.json").read_text())), metrics(report))

    # OUT moved: the done bags are taken from where they are now, and merged from there.
    moved = tmp_path / "moved"
    out.rename(moved)
    out = moved
    code, output, again = fleet(data, out, [*data["parts"], data["damaged"]])
    assert code == 1 and again["resumed"] == 6, output
    assert all(Path(r["dir"]).parent.parent == out for r in again["results"]), again
    assert_same(metrics(json.loads((out / "report.json").read_text())), metrics(report))

    # Other settings are another result: those bags run again; --redo runs a done bag again.
    two = data["parts"][:2]
    code, output, changed = fleet(data, out, two, "--samples", "4")
    assert code == 0, output
    assert [r["attempts"] for r in changed["results"]] == [1, 1], output
    assert changed["resumed"] == 0
    # Eval's settings only: evaluated again, not processed again.
    code, output, capped = fleet(data, out, two[:1], "--samples", "4", "--max-depth", "70")
    assert code == 0 and capped["results"][0]["attempts"] == 1, output
    assert "--max-depth" in capped["settings"], capped["settings"]
    code, output, redone = fleet(data, out, two[:1], "--samples", "4", "--redo")
    assert code == 0 and redone["results"][0]["attempts"] == 1, output
    runs = commands(redone["results"][0], "bag process")
    assert len(runs) == 3, runs  # the first run, the settings change, --redo
    # Evaluated by the first run, after its state went, for --samples 4, --max-depth, --redo.
    assert len(commands(redone["results"][0], "eval --bag")) == 5, output


def commands(result, what):
    """The command lines of the bag's log.txt that ran `what` (every run and try)."""
    log = (Path(result["dir"]) / "log.txt").read_text().splitlines()
    return [line for line in log if line.startswith("$ ") and f" {what} " in line]


def test_with_redo_a_retry_does_not_process_the_bag_again(data, tmp_path):
    # The binary, except that its first `eval` exits 75 (out of memory, say).
    marker = tmp_path / "failed_once"
    flaky = tmp_path / "flaky"
    flaky.write_text(f"""#!/bin/sh
if [ "$1" = eval ] && [ ! -e '{marker}' ]; then touch '{marker}'; echo "error: out of memory"; exit 75; fi
exec '{BIN}' "$@"
""")
    flaky.chmod(0o755)
    out = tmp_path / "out"
    cmd = [sys.executable, str(FLEET), str(data["parts"][0]), "--out", str(out), "--model",
           str(data["model"]), "--process", "--eval", "--num-cpus", "1", "--bin", str(flaky),
           "--redo", "--max-retries", "1", "--retry-delay", "0", *SETTINGS]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = json.loads((out / "fleet.json").read_text())["results"]
    assert (result["status"], result["attempts"]) == ("ok", 2), result
    assert len(commands(result, "bag process")) == 1, result
    assert len(commands(result, "eval --bag")) == 2, result
    assert "set_aside" not in result and "SET ASIDE" not in proc.stdout, result

    # A killed run's files that `bag process` set aside (a damaged storage file) are listed
    # and said on every run until a person removes them, a bag done before included.
    aside = Path(result["dir"]) / "processed.unsalvaged"
    aside.mkdir()
    cmd.remove("--redo")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = json.loads((out / "fleet.json").read_text())["results"]
    assert (result["attempts"], result["set_aside"]) == (0, [str(aside)]), result
    assert f"SET ASIDE {data['parts'][0]}: {aside}" in proc.stdout, proc.stdout


def test_a_failure_is_told_by_its_own_output_not_an_earlier_attempts(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("fleet_driver", FLEET)
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    log = tmp_path / "log.txt"
    log.write_text("\n$ bp bag process a out\ninput damaged: chunk 3 CRC mismatch\n"
                   "\n$ bp bag process a out --force\n1 camera frame(s) read, 0 processed\n"
                   "  failed 1: inference failed: boom\nwrote out (0 messages)\n")
    assert driver._last_error(log) == "failed 1: inference failed: boom"
    with open(log, "a") as f:
        f.write("\n$ bp eval --bag a\nsomething unexpected\n")
    assert driver._last_error(log) == "something unexpected"


def test_which_endings_are_worth_another_try_and_how_long_to_wait():
    import importlib.util
    spec = importlib.util.spec_from_file_location("fleet_driver", FLEET)
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    worth = driver._worth_another_try
    assert worth(75) and worth(130) and worth(-signal.SIGKILL) and worth(-signal.SIGTERM)
    assert not worth(1) and not worth(2) and not worth(-signal.SIGSEGV) and not worth(-signal.SIGBUS)
    # SIGABRT: Rust's abort on a failed allocation (a memory limit) only.
    assert not worth(-signal.SIGABRT, ["terminate called after throwing an instance of ..."])
    assert worth(-signal.SIGABRT, ["frame 3", "memory allocation of 4294967296 bytes failed"])
    assert [driver.retry_delay(10, n) for n in (1, 2, 3, 6, 10**6)] == [10, 20, 40, 300, 300]
    assert driver._ended(-signal.SIGSEGV) == "signal 11 (SIGSEGV)" and driver._ended(75) == "exit 75"


def test_copied_topics_go_to_the_process_step_and_its_fingerprint():
    import importlib.util
    spec = importlib.util.spec_from_file_location("fleet_driver", FLEET)
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)

    class Args:
        model, config, mode, samples, seed, device, precision = (str(FLEET), None, "mc", 8, 3,
                                                                 "cpu", None)
        process, eval, topic, max_depth, copy, copy_all = True, True, None, None, None, False
        copy_regex, exclude_regex = None, None

    plain = Args()
    tf = Args()
    tf.copy = ["/tf", "/tf_static"]
    everything = Args()
    everything.copy_all = True
    most = Args()
    most.copy_all, most.exclude_regex = True, ["^/lidar/"]
    # All but the lidars, and the front one after all.
    front = Args()
    front.copy_all, front.exclude_regex, front.copy = True, ["^/lidar/"], ["/lidar/front"]
    assert driver.process_args(plain) == []
    assert driver.process_args(tf) == ["--copy", "/tf", "--copy", "/tf_static"]
    assert driver.process_args(everything) == ["--copy-all"]
    assert driver.process_args(most) == ["--copy-all", "--exclude-regex", "^/lidar/"]
    assert driver.process_args(front) == ["--copy", "/lidar/front", "--copy-all", "--exclude-regex", "^/lidar/"]
    # A bag processed without the copies is not taken as done with them.
    digests = {tuple(driver.setup_digests(a, FLEET)) for a in (plain, tf, everything, most, front)}
    assert len({process for process, _ in digests}) == 5
    # Refused before Ray starts: copies without the process step, both kinds at once, an
    # exclusion from nothing.
    for extra, why in (
        (["--eval", "--copy", "/tf"], "are for the process step"),
        (["--eval", "--copy-regex", "^/tf"], "are for the process step"),
        (["--process", "--copy-regex", "x", "--copy-all"], "--copy-all copies every topic already"),
        (["--process", "--exclude-regex", "x"], "--exclude-regex leaves topics out"),
    ):
        done = subprocess.run([sys.executable, str(FLEET), "x.mcap", "--out", "o", "--model", "m",
                               *extra], capture_output=True, text=True)
        assert done.returncode == 2 and why in done.stderr, (extra, done.stderr)


def test_a_temporary_failure_is_retried_then_reported(data, tmp_path):
    # Out of memory in every MC chunk (a fail point of the binary): exit 75 each time.
    failpoint = {"FAILPOINTS": "engine::mc_chunk=return(0)"}
    direct = subprocess.run([BIN, "bag", "process", data["parts"][0], tmp_path / "direct",
                             "--model", data["model"], *SETTINGS], capture_output=True, text=True,
                            env=dict(os.environ, **failpoint))
    assert direct.returncode == 75, (
        "the binary must be built with the failpoints feature (make test-fleet does)",
        direct.stdout[-500:], direct.stderr[-500:])
    out = tmp_path / "out"
    code, output, summary = fleet(data, out, data["parts"][:1], "--max-retries", "2",
                                  "--retry-delay", "0.25", env=failpoint)
    assert code == 1, output
    (result,) = summary["results"]
    assert result["status"] == "failed" and result["attempts"] == 3, (result, output)
    assert "temporary failure on every try" in result["reason"], result
    assert "process failed (exit 75)" in result["reason"], result
    assert not (out / "report.json").exists()
    # A wait before each next try, doubled; none after the last.
    log = (Path(result["dir"]) / "log.txt").read_text()
    waits = [line for line in log.splitlines() if line.startswith("fleet: ")]
    assert waits == ["fleet: try 1 failed (exit 75); waiting 0.25 s before try 2",
                     "fleet: try 2 failed (exit 75); waiting 0.5 s before try 3"], log


def test_a_crash_is_reported_not_retried(data, tmp_path):
    # The binary as a worker would run it, except that `bag process` dies of SIGSEGV (a
    # crash, which another try would meet again), and `model check` works.
    crashing = tmp_path / "crashing"
    crashing.write_text(f"""#!/bin/sh
if [ "$1" = bag ]; then echo "about to crash"; kill -SEGV $$; fi
exec '{BIN}' "$@"
""")
    crashing.chmod(0o755)
    out = tmp_path / "out"
    cmd = [sys.executable, str(FLEET), str(data["parts"][0]), "--out", str(out), "--model",
           str(data["model"]), "--process", "--num-cpus", "1", "--bin", str(crashing),
           "--max-retries", "2", *SETTINGS]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (result,) = json.loads((out / "fleet.json").read_text())["results"]
    assert (result["status"], result["attempts"]) == ("failed", 1), result
    assert result["reason"] == "crashed (signal 11 (SIGSEGV)): about to crash", result


def test_a_step_that_hangs_is_killed_at_the_step_timeout_and_retried(data, tmp_path):
    # `bag process` hangs (a stuck GPU or driver, here a sleep in its place, a child of the
    # wrapper: the whole process group is killed) after it began its output's temporary
    # directory; `model check` works. Each try is killed after --step-timeout and counted
    # as a failed try, and what it had written goes.
    hanging = tmp_path / "hanging"
    hanging.write_text(f"""#!/bin/sh
if [ "$1" = bag ]; then
    mkdir "$(dirname "$4")/.$(basename "$4").partial-somehost-$$"
    echo "hanging"; sleep 613; exit 0
fi
exec '{BIN}' "$@"
""")
    hanging.chmod(0o755)
    out = tmp_path / "out"
    cmd = [sys.executable, str(FLEET), str(data["parts"][0]), "--out", str(out), "--model",
           str(data["model"]), "--process", "--num-cpus", "1", "--bin", str(hanging),
           "--max-retries", "1", "--retry-delay", "0.1", "--step-timeout", "2", *SETTINGS]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (result,) = json.loads((out / "fleet.json").read_text())["results"]
    assert (result["status"], result["attempts"]) == ("failed", 2), result
    assert "process failed (signal 9 (SIGKILL)): error: still running after --step-timeout 2 s" \
        in result["reason"], result
    log = (Path(result["dir"]) / "log.txt").read_text()
    assert log.count("still running after --step-timeout 2 s: killed") == 2, log
    assert not list(Path(result["dir"]).glob(".processed.partial-*")), \
        list(Path(result["dir"]).iterdir())
    def sleeping():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if cmdline.read_bytes() == b"sleep\x00613\x00":
                    yield cmdline.parent.name
            except OSError:
                pass
    assert not list(sleeping()), "the wrapper's child outlived the timeout"
    for bad in ("0", "-1", "inf", "nan"):
        refused = subprocess.run([*cmd[:-len(SETTINGS) - 1], bad, *SETTINGS],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and \
            "argument --step-timeout: expected a positive number of seconds" in refused.stderr, \
            (bad, refused.stderr)


def test_settings_every_bag_would_fail_on_are_refused_before_ray_starts(data, tmp_path):
    (tmp_path / "bad.yaml").write_text("bayes_perception:\n  ros__parameters:\n    mode: mc\n"
                                       "    mc:\n      samples: 1\n")
    for extra, code, said in (
        (["--model", tmp_path / "nosuchmodel"], 1, "nosuchmodel: not a directory"),
        (["--model", data["model"] / "model.yaml"], 1, "not a directory"),
        (["--config", tmp_path / "nosuch.yaml"], 1, "nosuch.yaml"),
        (["--config", tmp_path / "bad.yaml"], 1, "at least 2 samples"),
        (["--samples", "0"], 2, "mc.samples"),
        (["--mode", "mc", "--samples", "1"], 2, "at least 2 samples"),
        (["--max-retries", "-1"], 2, "--max-retries"),
        (["--retry-delay", "nan"], 2, "--retry-delay"),
        (["--device", "tpu"], 2, "expected auto, cpu, cuda or cuda:N"),
    ):
        out = tmp_path / "out"
        cmd = [sys.executable, str(FLEET), str(data["parts"][0]), "--out", str(out), "--model",
               str(data["model"]), "--process", "--bin", BIN, *map(str, extra)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == code, (extra, proc.stderr)
        assert said in proc.stderr and "Traceback" not in proc.stderr, (extra, proc.stderr)
        assert not out.exists(), extra


def test_a_bag_reached_by_two_paths_is_one_bag(data, tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("fleet", FLEET)
    fleet_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fleet_module)
    bag = data["parts"][0]
    link = tmp_path / "link.mcap"
    link.symlink_to(bag)
    assert fleet_module.find_bags([str(bag), str(link), str(bag)], None) == [str(bag)]
    # A manifest's lines are paths as written, not globs (`[1]` would match `1` only).
    odd = tmp_path / "run[1].mcap"
    odd.symlink_to(bag)
    other = tmp_path / "odd"
    other.mkdir()
    manifest = tmp_path / "bags.txt"
    manifest.write_text(f"# drives\n{odd}\n{other}  # a bag directory\n")
    assert fleet_module.find_bags([], str(manifest)) == [str(odd), str(other)]


def test_a_storage_file_of_a_rosbag2_directory_is_that_directory(tmp_path):
    """A glob like `drives/**/*.mcap` reaches the storage files inside rosbag2 directories:
    each is taken as its directory (once), so the directory given beside it is not a
    second bag; a lone .mcap without metadata.yaml stays a bag of its own."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("fleet", FLEET)
    fleet_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fleet_module)
    drive = tmp_path / "drives" / "a" / "run1"
    drive.mkdir(parents=True)
    (drive / "metadata.yaml").write_text(
        "rosbag2_bagfile_information:\n  relative_file_paths:\n    - run1_0.mcap\n"
        "    - run1_1.mcap.zstd\n"
    )
    for part in ("run1_0.mcap", "run1_1.mcap.zstd", "stray.mcap", "1_0.mcap"):
        (drive / part).write_bytes(b"")
    lone = tmp_path / "drives" / "lone.mcap"
    lone.write_bytes(b"")
    bags = fleet_module.find_bags([str(tmp_path / "drives" / "**" / "*.mcap*"), str(drive)], None)
    # A file beside the bag that its metadata does not list stays a bag of its own, also
    # one whose name ends a listed one's.
    assert bags == [str(drive / "1_0.mcap"), str(drive), str(drive / "stray.mcap"), str(lone)], bags

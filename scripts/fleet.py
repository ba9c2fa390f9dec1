#!/usr/bin/env python3
"""Process and evaluate many bags on a Ray cluster, with one merged report.

    fleet.py BAG_OR_GLOB... [--manifest FILE] --out DIR --model DIR [--config FILE]
             [--process] [--eval] [--mode M] [--samples T] [--seed S] [--device D]
             [--gpus-per-task G] [--cpus-per-task C] [--address auto|HOST:PORT]

Each bag is one Ray task that runs the `bayes_perception` binary on it (the project stays
a Rust binary; Ray schedules, retries and collects):

- `--process`: `bag process BAG OUT/bags/NAME/processed --json ...` (the node's outputs
  as a bag);
- `--eval`: `eval --bag BAG --state OUT/bags/NAME/eval_state.json ...` (the bag's frames
  against their ground truth topics; see the README's "Labelled bags").

NAME is the bag's file name and a hash of its absolute path, so every input has one
output directory whatever order or machine runs it. When every task is done, the
evaluation states of the bags that succeeded are merged (`eval --merge-list`) into OUT/report/
(report.md, report.json, charts; the states merged are listed in OUT/states.txt): the
same numbers as one evaluation of all their frames.
OUT/fleet.json lists every bag with its status, attempts, frames and times, and what a
killed `bag process` left set aside for a person (`processed.unsalvaged`: a damaged storage
file), which is also printed at the end.

Failures, by the binary's exit code: 75 (out of memory, no space: worth another try), a
binary killed from outside (SIGKILL, SIGTERM...) or aborted for a failed allocation, and a
worker that dies (killed, lost node) are retried by Ray, up to --max-retries times; after a
failed binary the task waits before it fails (--retry-delay, doubled each try), a dead
worker's bag is retried at once. 1 or 2 (damaged bag, bad settings) and a crash (SIGSEGV,
SIGABRT..., which would recur) are reported and not retried. A bag whose result marker says
it was done with the same model, settings and input is skipped, so an interrupted run
resumes where it stopped (--redo runs everything again).

Every machine of the cluster needs the binary (--bin, or `bayes_perception` on PATH) and
the bags, the model and OUT at the same paths (a shared filesystem). Without --address a
local Ray instance is started with --num-cpus CPUs (all by default).
"""

import argparse
import glob
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# Exit codes of the binary (README, "Exit codes").
EXIT_OK = 0
EXIT_TRANSIENT = 75
EXIT_INTERRUPTED = 130

RESULT = "result.json"

# Signals that end a process from outside (the OOM killer, a shutdown, Ctrl-C): another try
# may pass. Any other (SIGSEGV, SIGABRT, SIGBUS...) is a crash, which would recur.
KILLS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

# In a bag's directory, the file whose presence says its `bag process` output is whole
# (the binary renames the bag into place with its metadata.yaml when done).
PROCESSED_DONE = Path("processed") / "metadata.yaml"

# Seconds a step killed at --step-timeout is given to end before it is left behind.
KILL_WAIT = 30.0

# The longest wait between two tries of a bag, seconds.
MAX_RETRY_DELAY = 300.0


# What Rust prints before it aborts (SIGABRT) when an allocation fails: out of memory under
# a memory limit (ulimit -v, no overcommit), which another try may not meet.
ALLOCATION_FAILED = re.compile(r"memory allocation of \d+ bytes failed")


def _worth_another_try(code, output=()):
    """Whether a binary that ended with this exit code (negative: the signal that killed
    it), having written these lines, may pass on another try."""
    if code in (EXIT_TRANSIENT, EXIT_INTERRUPTED) or (code < 0 and -code in KILLS):
        return True
    return code == -signal.SIGABRT and any(ALLOCATION_FAILED.search(line) for line in output)


def _ended(code):
    """How a binary ended, for a reason: `exit 75`, `signal 9 (SIGKILL)`."""
    if code >= 0:
        return f"exit {code}"
    try:
        return f"signal {-code} ({signal.Signals(-code).name})"
    except ValueError:
        return f"signal {-code}"


def retry_delay(first, attempt):
    """Seconds to wait after failed try number `attempt` (from 1) before the next:
    `first`, doubled each try, at most MAX_RETRY_DELAY."""
    return min(MAX_RETRY_DELAY, first * 2 ** min(max(0, attempt - 1), 30))


class TransientFailure(RuntimeError):
    """A failure another try may not meet (exit 75, a killed process): raised so that Ray
    retries the task."""


# ---------------------------------------------------------------------------------------
# The task: one bag, on a worker.


def _run(cmd, log, env, timeout=None, output=None):
    """Runs cmd, appending its output to the log; returns the exit code (negative: the
    signal that killed it). Past `timeout` seconds its process group is killed (SIGKILL,
    as a process that hangs may not stop on anything less; the group, so that a wrapper
    script's child goes too), which the log says; one that does not end even then (stuck
    in the kernel) is left behind, said, rather than waited for. `output`: the bag a killed
    `bag process` was writing, whose temporary directory then goes."""
    # The binary dies with the worker that started it (PR_SET_PDEATHSIG, set by the
    # binary itself: a pre-exec hook is unsafe in a worker's threads), so a killed worker
    # leaves no process writing into the bag's directory while the retry does.
    env = dict(env if env is not None else os.environ, BAYES_PERCEPTION_PARENT_PID=str(os.getpid()))
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            code = proc.wait(timeout=KILL_WAIT)
        except subprocess.TimeoutExpired:
            f.write(f"error: still running after --step-timeout {timeout:g} s, and not ended "
                    f"{KILL_WAIT:g} s after SIGKILL (pid {proc.pid}, stuck in the kernel?): "
                    "left behind\n")
            return -signal.SIGKILL
        if code != -signal.SIGKILL:
            return code  # it ended by itself at the deadline
        f.write(f"error: still running after --step-timeout {timeout:g} s: killed\n")
        if output is not None:
            # What it had written goes: this bag's next try processes it whole anyway (the
            # next `bag process` would otherwise copy it beside its output on every try).
            for partial in output.parent.glob(f".{output.name}.partial-*-{proc.pid}"):
                shutil.rmtree(partial, ignore_errors=True)
        return code


def _last_output(log):
    """The lines the last command of the log wrote (the log holds earlier attempts and
    runs too)."""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return []
    last = max((i for i, line in enumerate(lines) if line.startswith("$ ")), default=-1)
    return lines[last + 1:]


def _last_error(log):
    """Why the last command of the log failed, from its own output only: its last
    `error: ...`, `input damaged: ...`, `reading stopped: ...` or `failed N: ...` line,
    else its last line."""
    lines = _last_output(log)
    for line in reversed(lines):
        line = line.strip()
        if line.startswith(("error:", "input damaged:", "reading stopped:")) or \
                re.match(r"failed \d+: ", line):
            return line
    return lines[-1].strip() if lines else ""


def _write_json(path, value):
    """Writes JSON atomically (a temporary file renamed over the target)."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)


def run_bag(job):
    """Runs the steps of one bag. Returns its result (status ok, damaged or failed);
    raises TransientFailure, which Ray retries, only when another try may pass. Any other
    exception (a bug, a permission problem) is a failed result, not retried."""
    try:
        return _run_bag(job)
    except TransientFailure:
        raise
    except Exception as e:  # noqa: BLE001 - reported with its type, never retried
        return {"bag": job["bag"], "dir": job["dir"], "status": "failed",
                "reason": f"{type(e).__name__}: {e}"}


def _run_bag(job):
    work = Path(job["dir"])
    work.mkdir(parents=True, exist_ok=True)
    # A result of an earlier run must not outlive this attempt if it fails half-way.
    (work / RESULT).unlink(missing_ok=True)
    log = work / "log.txt"
    with open(work / "attempts", "a") as f:
        f.write(f"run {job['run']} {time.strftime('%Y-%m-%dT%H:%M:%S')} {socket.gethostname()} "
                f"pid {os.getpid()}\n")
    env = dict(os.environ)
    if job["cpus_per_task"] and not job["gpus_per_task"]:
        # libtorch's threads: as many as the task was given, not every core of the node
        # (Ray sets this too, for tasks it gives whole CPUs).
        env.setdefault("OMP_NUM_THREADS", str(max(1, int(job["cpus_per_task"]))))
    result = {"bag": job["bag"], "dir": str(work), "fingerprint": job["fingerprint"],
              "host": socket.gethostname(), "steps": {}}
    started = time.monotonic()

    def failed(step, code):
        if _worth_another_try(code, _last_output(log)):
            why = f"{job['bag']}: {step} failed ({_ended(code)}): {_last_error(log)}"
            attempt = _attempts(work, job["run"])
            if attempt <= job["max_retries"]:
                # Another try follows at once otherwise: give what failed (memory taken by
                # others, a full $TMPDIR) time to pass.
                delay = retry_delay(job["retry_delay"], attempt)
                with open(log, "a") as f:
                    f.write(f"fleet: try {attempt} failed ({_ended(code)}); "
                            f"waiting {delay:g} s before try {attempt + 1}\n")
                time.sleep(delay)
            raise TransientFailure(why)
        reason = _last_error(log)
        # The binary's words for a damaged input: "input damaged: ..." after processing up
        # to the damage, "input damaged before any camera frame: ..." when nothing was. A
        # crash is a failure whatever it had said before.
        result["status"] = "damaged" if code > 0 and "input damaged" in reason else "failed"
        if code < 0:
            reason = f"crashed ({_ended(code)}): {reason}"
        result.update(step=step, exit_code=code, reason=reason)
        result["seconds"] = time.monotonic() - started
        _write_json(work / RESULT, result)
        return result

    if job["process"]:
        summary_path = work / "process.json"
        done = _load(summary_path)
        # Done with the same input and process settings (eval's settings do not change it),
        # by an earlier run or, with --redo, by an earlier try of this one (a retry after
        # the eval step failed does not process the bag again).
        if not (done and done.get("status") == "ok"
                and done.get("fingerprint") == job["process_fingerprint"]
                and (not job["redo"] or done.get("run") == job["run"])
                and (work / PROCESSED_DONE).is_file()):
            summary_path.unlink(missing_ok=True)
            t = time.monotonic()
            code = _run([job["bin"], "bag", "process", job["bag"], str(work / "processed"),
                         "--force", "--json", str(summary_path), *job["args"],
                         *job["process_args"]], log, env,
                        job["step_timeout"], output=work / "processed")
            summary = _load(summary_path) or {}
            summary["wall_seconds"] = time.monotonic() - t
            summary["fingerprint"] = job["process_fingerprint"]
            summary["run"] = job["run"]
            if summary_path.exists():
                _write_json(summary_path, summary)
            if code != EXIT_OK:
                result["damage"] = summary.get("damage")
                return failed("process", code)
            # What runs killed on this host had written, kept beside the output by
            # `bag process --force`: this run's whole output replaces it.
            for salvaged in work.glob("processed.salvaged*"):
                shutil.rmtree(salvaged, ignore_errors=True)
        result["steps"]["process"] = _load(summary_path)

    if job["eval"]:
        state = work / "eval_state.json"
        for stale in (state, work / "eval.json"):
            stale.unlink(missing_ok=True)
        t = time.monotonic()
        code = _run([job["bin"], "eval", "--bag", job["bag"], *job["eval_args"], "--state",
                     str(state), "--json", str(work / "eval.json"), *job["args"]], log, env,
                    job["step_timeout"])
        if code != EXIT_OK:
            return failed("eval", code)
        report = _load(work / "eval.json") or {}
        result["steps"]["eval"] = {"wall_seconds": time.monotonic() - t, "state": str(state),
                                   "frames": report.get("images", 0)}

    result["status"] = "ok"
    result["seconds"] = time.monotonic() - started
    _write_json(work / RESULT, result)
    return result


def _load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------
# The driver.


def find_bags(patterns, manifest):
    """The bags named by paths, globs (recursive `**` too) and a manifest (one path per
    line, taken as written; # comments), in order, each once (a bag reached by two paths, through a symbolic link,
    is one bag: its frames would count twice in the merged report)."""
    # (name, whether it is a glob): a manifest's lines are taken as they are written.
    names = [(p, True) for p in patterns]
    if manifest:
        for line in Path(manifest).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                names.append((line, False))
    bags, seen, noted = [], set(), set()
    for name, pattern in names:
        if pattern and glob.has_magic(name):
            matches = sorted(glob.glob(name, recursive=True))
        else:
            matches = [name]
        if not matches:
            sys.exit(f"fleet: no bag matches {name}")
        for m in matches:
            path = os.path.abspath(m)
            if not os.path.exists(path):
                sys.exit(f"fleet: {m} does not exist")
            directory = rosbag2_directory_of(path)
            if directory:
                if directory not in noted:
                    noted.add(directory)
                    print(f"fleet: {m} is a storage file of the rosbag2 directory {directory}: "
                          "taking the directory", file=sys.stderr)
                path = directory
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                bags.append(path)
    if not bags:
        sys.exit("fleet: no bags given (paths, globs or --manifest)")
    return bags


def rosbag2_directory_of(path):
    """The rosbag2 directory a storage file (`.mcap`, `.db3`, compressed or not) belongs
    to, when its folder has a metadata.yaml (a glob such as `drives/**/*.mcap` reaches
    them): the bag is the directory, read with all its files; else None."""
    parent = os.path.dirname(path)
    name = os.path.basename(path)
    metadata = os.path.join(parent, "metadata.yaml")
    if not (os.path.isfile(path) and name.removesuffix(".zstd").endswith((".mcap", ".db3"))
            and os.path.isfile(metadata)):
        return None
    try:
        text = Path(metadata).read_text(errors="replace")
    except OSError:
        return None
    # Its metadata lists it (relative_file_paths, files' paths): a stray file beside a bag
    # is not that bag, nor is `1_0.mcap` beside a listed `run1_0.mcap`.
    for line in text.splitlines():
        value = line.strip()
        value = value[2:].strip() if value.startswith("- ") else value
        value = value[5:].strip() if value.startswith("path:") else value
        if os.path.basename(value.strip("'\"")) == name:
            return parent
    return None


def bag_dir(out, bag):
    """OUT/bags/NAME-HASH: one directory per input, the same on every run and machine."""
    digest = hashlib.sha256(bag.encode()).hexdigest()[:10]
    stem = Path(bag.rstrip("/")).name
    stem = stem.removesuffix(".zstd")
    for suffix in (".mcap", ".db3"):
        stem = stem.removesuffix(suffix)
    return out / "bags" / f"{stem}-{digest}"


def files_of(path):
    """A file, or every file under a directory, in a fixed order."""
    path = Path(path)
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _hash_tree(h, path):
    """Feeds a file, or every file of a directory, into the hash (names and contents)."""
    path = Path(path)
    for f in files_of(path):
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as data:
            for block in iter(lambda: data.read(1 << 20), b""):
                h.update(block)


def setup_digests(args, binary_path):
    """What every bag's process step depends on (the binary's bytes, the model's files,
    the params file and the settings both steps take), and what its whole result depends
    on (that, the steps asked for and eval's own settings). Computed once per run."""
    h = hashlib.sha256()
    _hash_tree(h, binary_path)
    _hash_tree(h, args.model)
    if args.config:
        _hash_tree(h, args.config)
    h.update(json.dumps(run_args(args) + process_args(args)).encode())
    process = h.hexdigest()
    whole = hashlib.sha256(process.encode())
    whole.update(json.dumps([args.process, args.eval, eval_args(args)]).encode())
    return process, whole.hexdigest()


def fingerprint(setup, bag):
    """The run's set-up and the bag (path, size and modification time of its files)."""
    h = hashlib.sha256(setup.encode())
    for f in files_of(bag):
        st = f.stat()
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def bag_size(bag):
    """Bytes of a bag (a file, or every file of a bag directory)."""
    return sum(f.stat().st_size for f in files_of(bag))


def run_args(args):
    """Arguments both steps take (the binary's RunArgs)."""
    out = []
    for flag, value in (("--model", args.model), ("--config", args.config), ("--mode", args.mode),
                        ("--samples", args.samples), ("--seed", args.seed),
                        ("--device", args.device), ("--precision", args.precision)):
        if value is not None:
            out += [flag, str(value)]
    return out


def positive(unit):
    """An argparse type: a positive, finite number of `unit` (the binary's rule for
    --max-depth)."""
    def parse(text):
        value = float(text)
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number of {unit}")
        return value
    return parse


def process_args(args):
    """Arguments of the process step only: the topics copied besides the cameras."""
    out = [arg for topic in args.copy or [] for arg in ("--copy", topic)]
    out += [arg for regex in args.copy_regex or [] for arg in ("--copy-regex", regex)]
    out += ["--copy-all"] if args.copy_all else []
    return out + [arg for regex in args.exclude_regex or [] for arg in ("--exclude-regex", regex)]


def eval_args(args):
    """Arguments of the eval step only."""
    out = ["--topic", args.topic] if args.topic else []
    if args.max_depth is not None:
        out += ["--max-depth", str(args.max_depth)]
    return out


def binary(args):
    path = args.bin or os.environ.get("BAYES_PERCEPTION_BIN") or shutil.which("bayes_perception")
    if not path or not os.access(path, os.X_OK):
        sys.exit("fleet: no bayes_perception binary (--bin, BAYES_PERCEPTION_BIN or PATH)")
    path = os.path.abspath(path)
    version = subprocess.run([path, "--version"], capture_output=True, text=True)
    if version.returncode != 0:
        sys.exit(f"fleet: {path} --version failed: {version.stderr.strip()}")
    return path, version.stdout.strip()


def check_settings(path, args):
    """What every bag would fail on the same way (a model that does not load, a params file
    or setting the binary refuses) stops the run here, before Ray starts, with the binary's
    words and exit code: `model check` loads them as a run would. On the CPU: the device
    is each task's (Ray gives GPUs to tasks, not to this process)."""
    settings = run_args(args)
    if "--device" in settings:
        at = settings.index("--device")
        del settings[at:at + 2]
    # The device itself is only read here (its grammar, as the binary reads it).
    if args.device is not None and not re.fullmatch(r"auto|cpu|cuda(:\+?[0-9]+)?", args.device):
        print(f"fleet: --device {args.device}: expected auto, cpu, cuda or cuda:N",
              file=sys.stderr)
        sys.exit(2)
    check = subprocess.run([path, "model", "check", *settings, "--device", "cpu"],
                           capture_output=True, text=True)
    code = check.returncode
    if code != 0:
        errors = [line for line in check.stderr.splitlines() if line.startswith("error")]
        why = " ".join(errors) or check.stderr.strip() or f"ended with {_ended(code)}"
        if _worth_another_try(code, check.stderr.splitlines()):
            print(f"fleet: checking the settings failed for a temporary reason ({why}); "
                  "try again", file=sys.stderr)
            sys.exit(EXIT_TRANSIENT)
        print(f"fleet: the settings do not load: {why}", file=sys.stderr)
        sys.exit(code if code > 0 else 1)


def progress(done, total, started, frames, line):
    elapsed = time.monotonic() - started
    eta = elapsed / done * (total - done) if done else 0
    rate = f", {frames / elapsed:.1f} frames/s" if frames else ""
    print(f"[{done}/{total}] {line} ({elapsed:.0f} s{rate}, ETA {eta:.0f} s)", flush=True)


def frames_of(result):
    """Frames the bag's task ran the network on (processed, else evaluated)."""
    steps = result.get("steps", {})
    return (steps.get("process") or {}).get("processed") or (steps.get("eval") or {}).get("frames", 0)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the README, 'Many bags: Ray'.",
    )
    p.add_argument("bags", nargs="*", help="bag directories or .mcap/.db3 files (or .mcap.zstd/.db3.zstd); globs allowed")
    p.add_argument("--manifest", help="a file with one bag per line (# comments)")
    p.add_argument("--out", required=True, type=Path, help="output directory (created)")
    p.add_argument("--model", required=True,
                   help="model directory (its files are part of each bag's fingerprint)")
    p.add_argument("--config", help="the node's params file (YAML)")
    p.add_argument("--process", action="store_true", help="bag process every bag")
    p.add_argument("--eval", action="store_true",
                   help="evaluate every bag against its ground truth topics and merge the report")
    p.add_argument("--copy", action="append", metavar="TOPIC",
                   help="process: also copy this topic into the processed bag (repeatable; "
                        "e.g. /tf, /tf_static)")
    p.add_argument("--copy-regex", action="append", metavar="REGEX",
                   help="process: also copy every topic this regular expression matches "
                        "(anywhere in the name; repeatable)")
    p.add_argument("--copy-all", action="store_true",
                   help="process: copy every topic that is not processed")
    p.add_argument("--exclude-regex", action="append", metavar="REGEX",
                   help="process: leave the topics this matches out of --copy-all and "
                        "--copy-regex (repeatable; a topic --copy names is copied still)")
    p.add_argument("--topic", help="eval: the camera topic, where a bag has several labelled ones")
    p.add_argument("--max-depth", type=positive("metres"), metavar="METRES",
                   help="eval: score depth only where the ground truth is nearer (e.g. 70)")
    p.add_argument("--mode", choices=["aleatoric", "mc", "moments"])
    p.add_argument("--samples", type=int, help="MC samples T")
    p.add_argument("--seed", type=int, help="sample every frame from this seed (reproducible MC)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the params file's)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--gpus-per-task", type=float, default=0.0,
                   help="GPUs Ray reserves for each bag (e.g. 1, or 0.5 to share a card); 0: CPU")
    p.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs Ray reserves for each bag")
    p.add_argument("--max-retries", type=int, default=3,
                   help="tries after the first for a bag whose worker died or that failed for a "
                        "temporary reason (exit 75)")
    p.add_argument("--retry-delay", type=float, default=10.0, metavar="SECONDS",
                   help="wait after a bag's first temporary failure before its next try, "
                        f"doubled each try (at most {MAX_RETRY_DELAY:g} s)")
    p.add_argument("--step-timeout", type=positive("seconds"), metavar="SECONDS",
                   help="kill a bag's `bag process` or `eval` still running after this long (a "
                        "hung GPU or driver) and count it as a failed try; default: no limit")
    p.add_argument("--address", help="a running Ray cluster (`auto`, or HOST:PORT); default: "
                                     "start a local one")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--bin", help="the bayes_perception binary (default: BAYES_PERCEPTION_BIN, PATH)")
    p.add_argument("--redo", action="store_true", help="run bags whose result marker says done")
    args = p.parse_args(argv)
    if not (args.process or args.eval):
        p.error("say what to do: --process, --eval or both")
    if (args.copy or args.copy_regex or args.copy_all or args.exclude_regex) and not args.process:
        p.error("--copy, --copy-regex, --copy-all and --exclude-regex are for the process "
                "step (add --process)")
    if args.copy_regex and args.copy_all:
        p.error("--copy-all copies every topic already: give --copy-regex or --copy-all")
    if args.exclude_regex and not (args.copy_all or args.copy_regex):
        p.error("--exclude-regex leaves topics out of --copy-all or --copy-regex: give one of them")

    if (args.max_retries < 0 or args.cpus_per_task <= 0 or args.gpus_per_task < 0
            or not args.retry_delay >= 0):
        p.error("--max-retries, --retry-delay and --gpus-per-task must be >= 0, "
                "--cpus-per-task > 0")
    bags = find_bags(args.bags, args.manifest)
    # Workers may start in another directory: every path they get is absolute.
    args.model = os.path.abspath(args.model)
    args.config = os.path.abspath(args.config) if args.config else None
    path, version = binary(args)
    check_settings(path, args)
    process_setup, setup = setup_digests(args, path)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    run = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    jobs, skipped = [], []
    for bag in bags:
        job = {
            "bag": bag, "dir": str(bag_dir(out, bag)), "bin": path, "run": run,
            "fingerprint": fingerprint(setup, bag),
            "process_fingerprint": fingerprint(process_setup, bag), "redo": args.redo,
            "process": args.process, "eval": args.eval,
            "args": run_args(args), "eval_args": eval_args(args),
            "process_args": process_args(args),
            "cpus_per_task": args.cpus_per_task, "gpus_per_task": args.gpus_per_task,
            "max_retries": args.max_retries, "retry_delay": args.retry_delay,
            "step_timeout": args.step_timeout,
        }
        done = _load(Path(job["dir"]) / RESULT)
        # Done before, and what its steps wrote is there still (a state removed since
        # would fail the merge on every run).
        left = ([Path(job["dir"]) / PROCESSED_DONE] if args.process else []) + \
               ([Path(job["dir"]) / "eval_state.json"] if args.eval else [])
        if (not args.redo and done and done.get("status") == "ok"
                and done.get("fingerprint") == job["fingerprint"]
                and all(f.is_file() for f in left)):
            # Where it is now (OUT may have moved since: the fingerprint does not name it).
            done["dir"] = job["dir"]
            if "eval" in done.get("steps", {}):
                done["steps"]["eval"]["state"] = str(Path(job["dir"]) / "eval_state.json")
            skipped.append(done)
        else:
            jobs.append(job)
    print(f"fleet: {len(bags)} bag(s), {len(skipped)} already done, {len(jobs)} to run; "
          f"output in {out}", flush=True)

    import ray

    started = time.monotonic()
    results = {r["bag"]: dict(r, resumed=True) for r in skipped}
    if jobs:
        if args.address:
            ray.init(address=args.address, include_dashboard=False)
        else:
            ray.init(num_cpus=args.num_cpus, include_dashboard=False)
        resources = ray.cluster_resources()
        print(f"fleet: Ray cluster with {resources.get('CPU', 0):.0f} CPU(s), "
              f"{resources.get('GPU', 0):.0f} GPU(s)", flush=True)
        for kind, wanted in (("CPU", args.cpus_per_task), ("GPU", args.gpus_per_task)):
            if wanted > resources.get(kind, 0):
                message = (f"each task asks for {wanted:g} {kind}(s) and the cluster has "
                           f"{resources.get(kind, 0):g}")
                if not args.address:
                    ray.shutdown()
                    sys.exit(f"fleet: {message}; the tasks could never start")
                print(f"fleet: warning: {message} now; the tasks wait for more", flush=True)
        task = ray.remote(run_bag).options(
            num_cpus=args.cpus_per_task, num_gpus=args.gpus_per_task,
            max_retries=args.max_retries, retry_exceptions=True,
        )
        # Largest bags first, so that a long bag does not start last and keep one worker
        # busy while the others idle.
        jobs.sort(key=lambda job: bag_size(job["bag"]), reverse=True)
        pending = {task.remote(job): job for job in jobs}
        frames = 0
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:
                # The task raised TransientFailure on every try (run_bag raises nothing
                # else).
                cause = e.cause if getattr(e, "cause", None) else e
                result = {"bag": job["bag"], "dir": job["dir"], "status": "failed",
                          "reason": f"temporary failure on every try: {cause}"}
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as e:
                result = {"bag": job["bag"], "dir": job["dir"], "status": "failed",
                          "reason": f"the worker died on every try ({type(e).__name__})"}
            except ray.exceptions.RayError as e:
                result = {"bag": job["bag"], "dir": job["dir"], "status": "failed",
                          "reason": f"Ray gave up on the task: {type(e).__name__}: {e}"}
            result["attempts"] = _attempts(job["dir"], run)
            results[job["bag"]] = result
            frames += frames_of(result)
            line = f"{Path(job['bag']).name}: {result['status']}"
            if result["status"] != "ok":
                line += f" ({result.get('reason', '')})"
            elif result["attempts"] > 1:
                line += f" after {result['attempts']} tries"
            progress(len(jobs) - len(pending), len(jobs), started, frames, line)
        ray.shutdown()
    wall = time.monotonic() - started

    ordered = [results[b] for b in bags]
    for r in ordered:
        r.setdefault("attempts", _attempts(r["dir"], run))
        # Whatever run left it (a bag done before this run too): it stays until a person
        # has looked at it, so it is said every time.
        aside = sorted(str(p) for p in Path(r["dir"]).glob("processed.unsalvaged*"))
        if aside:
            r["set_aside"] = aside
    ok = [r for r in ordered if r["status"] == "ok"]
    failed = [r for r in ordered if r["status"] != "ok"]
    summary = {
        "bags": len(bags), "ok": len(ok), "failed": len(failed),
        "resumed": sum(1 for r in ordered if r.get("resumed")),
        "wall_seconds": wall, "binary": version,
        "settings": run_args(args) + process_args(args) + eval_args(args),
        "results": ordered,
    }
    report_code = 0
    # Last run's report must not stand beside this run's summary.
    shutil.rmtree(out / "report", ignore_errors=True)
    for stale in ("report.json", "states.txt"):
        (out / stale).unlink(missing_ok=True)
    if args.eval and ok:
        # Listed in a file (UTF-8, as the binary reads it): thousands of paths do not fit
        # on a command line.
        states = out / "states.txt"
        report = out / "report"
        try:
            states.write_bytes(b"".join(os.fsencode(Path(r["dir"]) / "eval_state.json") + b"\n"
                                        for r in ok))
            merged = subprocess.run([path, "eval", "--merge-list", str(states), "--json",
                                     str(out / "report.json"), "--out", str(report)],
                                    capture_output=True, text=True)
            report_code, why = merged.returncode, merged.stderr
        except OSError as e:
            # No room for the list, the binary gone: the summary is still written.
            report_code, why, merged = 1, str(e), None
        if report_code != 0:
            print(f"fleet: merging the evaluations failed:\n{why}", file=sys.stderr)
        else:
            print(merged.stdout, end="")
            summary["report"] = str(report / "report.md")
    _write_json(out / "fleet.json", summary)

    print(f"fleet: {len(ok)} of {len(bags)} bag(s) ok in {wall:.1f} s"
          + (f" ({summary['resumed']} done before)" if summary["resumed"] else ""))
    for r in failed:
        print(f"  FAILED {r['bag']}: {r.get('reason', '')} ({r['attempts']} tries; log: "
              f"{Path(r['dir']) / 'log.txt'})")
    for r in ordered:
        for aside in r.get("set_aside", []):
            print(f"  SET ASIDE {r['bag']}: {aside} (what a killed `bag process` wrote, with a "
                  "damaged storage file: not copied; look at it, then remove it)")
    print(f"fleet: summary in {out / 'fleet.json'}"
          + (f", report in {summary['report']}" if "report" in summary else ""))
    return 1 if failed or report_code else 0


def _attempts(work, run):
    """How many times this run started the bag's task."""
    try:
        lines = Path(work, "attempts").read_text().splitlines()
    except OSError:
        return 0
    return sum(1 for line in lines if line.startswith(f"run {run} "))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # Ray ends the workers and each binary dies with its worker; bags without a result
        # marker run again next time.
        print("\nfleet: interrupted; run the same command again to resume", file=sys.stderr)
        sys.exit(130)

"""scripts/gpu_run.sh, the device run, with fakes for the binary, the precision test and
the PyTorch reference (no GPU here): a first call cut by its deadline keeps what it did,
packed; a step cut by the deadline runs again in the next call (RESUME=1), a step that
failed on its own does not, and every step done is kept, not run twice."""
import os
import shutil
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FAKE_BIN = r"""#!/usr/bin/env bash
echo "$*" >> "$CALLS"
if [[ -n "${FAKE_FAIL:-}" && "$*" == *"$FAKE_FAIL"* ]]; then exit 3; fi
if [[ -n "${FAKE_SLOW:-}" && "$*" == *"$FAKE_SLOW"* ]]; then sleep 100; fi
case "$1" in
    doctor) echo "doctor: fake" ;;
    bench) echo '{"median_ms": 2.0, "forward_share": 0.5, "stages_median_ms": {"upload": 0.1,
        "forward": 1.0, "device_post": 0.1, "download": 0.1, "host_outputs": 0.5}}' ;;
    bag)
        if [[ "$2" == process ]]; then
            while [[ $# -gt 0 && "$1" != --json ]]; do shift; done
            echo '{"processed": 1, "seconds": 1, "status": "ok", "output_bytes": 1}' > "$2"
        fi ;;
esac
"""

FAKE_REFERENCE = r"""import os, sys
with open(os.environ["CALLS"], "a") as f:
    f.write("reference " + " ".join(sys.argv[1:]) + "\n")
if "--json" in sys.argv:
    with open(sys.argv[sys.argv.index("--json") + 1], "w") as f:
        f.write('{"median_ms": 1.0}')
else:
    print("profile: fake")
"""


# The bench arguments of the MC-50 fp16 channels-last row at 360x480.
MC_360 = "--height 360 --width 480 --precision fp16 --channels-last --overlap --mode mc"


def call(gpu, env, **extra):
    return subprocess.run(["bash", str(gpu / "run.sh")], env={**env, **extra}, capture_output=True,
                          text=True, timeout=300)


def test_a_run_cut_short_is_resumed_without_running_anything_twice(tmp_path):
    gpu = tmp_path / ".gpu"
    gpu.mkdir()
    shutil.copy(os.path.join(ROOT, "scripts", "gpu_run.sh"), gpu / "run.sh")
    (gpu / "bayes_perception").write_text(FAKE_BIN)
    (gpu / "precision_test").write_text(
        "#!/usr/bin/env bash\necho \"precision $*\" >> \"$CALLS\"\necho 'test result: ok'\n")
    for fake in ("bayes_perception", "precision_test"):
        (gpu / fake).chmod(0o755)
    (gpu / "pytorch_reference.py").write_text(FAKE_REFERENCE)
    out, calls = tmp_path / "out", tmp_path / "calls.txt"
    out.mkdir()
    env = dict(os.environ, OUT=str(out), CALLS=str(calls), GPU_RUN_PYTHON=sys.executable)
    results = tmp_path / ".gpu_results"

    # The first call: the fp16 MC row fails on its own, the CUDA-graph row hangs until the
    # deadline cuts it, and nothing after it has time.
    first = call(gpu, env, DEADLINE="40", FAKE_FAIL=MC_360,
                 FAKE_SLOW="--cuda-graphs")
    assert first.returncode == 0, first.stderr
    times = (results / "times.txt").read_text()
    assert "103_360x480_aleatoric_fp16_cl\t" in times and "\tdone" in times, times
    assert "103_360x480_mc50_b25_fp16_cl\t" in times and "failed" in times, times
    assert "103_360x480_aleatoric_fp16_cl_graphs\t" in times, times
    assert "cut at the deadline" in times, times
    assert "not run: no time left" in times, times
    with tarfile.open(out / "results.tgz") as packed:
        names = packed.getnames()
    assert "./103_360x480_aleatoric_fp16_cl.json" in names, names
    assert "./pytorch_360x480_aleatoric_fp16_cl.json" in names, names
    assert "./103_360x480_aleatoric_fp16_cl_graphs.json" not in names, names

    # The next call, with time for everything.
    second = call(gpu, env, DEADLINE="600", RESUME="1")
    assert second.returncode == 0, second.stderr
    lines = calls.read_text().splitlines()
    runs = lambda needle: sum(needle in line for line in lines)  # noqa: E731
    assert runs("--cuda-graphs --frames 50") == 2 + 1, lines  # cut, run again; and the fp32 one
    assert runs(MC_360) == 1, lines  # failed on its own: not again
    assert runs("--height 360 --width 480 --precision fp16 --channels-last --overlap --frames 50") == 1, lines
    assert runs("doctor") == 1, lines
    assert "end of the call" in (results / "times.txt").read_text()
    with tarfile.open(out / "results.tgz") as packed:
        names = packed.getnames()
    for name in ("103_360x480_aleatoric_fp16_cl_graphs.json", "pytorch_480x640_mc50_b25_fp32.json",
                 "precision.txt", "profile_mc50_b25_fp16_cl.txt",
                 "bag_process_103_360x480_mc50_fp16_cl.json", "pytorch_360x480_mc50_b25_fp16_cl_compiled.json"):
        assert "./" + name in names, (name, names)
    assert "./103_360x480_mc50_b25_fp16_cl.json" not in names, names

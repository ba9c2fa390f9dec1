#!/usr/bin/env bash
# GPU run recipe, part 1 (on a development machine): build the release binary against
# torch 2.11.0 and put it, the PyTorch reference and a run script into .gpu/ (git-ignored).
#
# Part 2 (on the GPU machine, which needs PyTorch 2.11.0 with CUDA but no Rust):
#     bash .gpu/run.sh            # results in $OUT (or .gpu/results): doctor.txt, *.json
# The run script finds the machine's torch/lib and puts it on LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
make release
target="${CARGO_TARGET_DIR:-target}"
mkdir -p .gpu
# Stripped: the debug line tables triple the size and the device copy has a size limit.
strip -o .gpu/bayes_perception "$target/release/bayes_perception"
cp scripts/pytorch_reference.py .gpu/
cat > .gpu/run.sh <<'RUN'
#!/usr/bin/env bash
# Runs doctor and every GPU benchmark; prints results and writes them to $OUT.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-$here/results}"
mkdir -p "$out"
python=""
for candidate in /opt/torch/.venv/bin/python3 python3; do
    if "$candidate" -c 'import torch' 2>/dev/null; then python="$candidate"; break; fi
done
[[ -n "$python" ]] || { echo "no python with torch found" >&2; exit 1; }
torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
bin="$here/bayes_perception"
{ "$bin" doctor; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } 2>&1 | tee "$out/doctor.txt"

bench() {  # name, then bench arguments
    local name="$1"; shift
    echo "== $name: bench $*" | tee -a "$out/bench.txt"
    "$bin" bench --device cuda --json "$@" > "$out/$name.json" 2>> "$out/bench.txt"
    "$python" -c 'import json,sys; r=json.load(open(sys.argv[1])); print("   median %.1f ms, p95 %.1f ms, forward %.0f %%, ratio %s" % (r["median_ms"], r["p95_ms"], 100*r["forward_share"], r.get("mc_vs_sequential_ratio")))' "$out/$name.json" | tee -a "$out/bench.txt"
}
bench 56_360x480_aleatoric --arch fcdensenet56 --height 360 --width 480 --frames 30 --warmup 3
bench 103_360x480_aleatoric --arch fcdensenet103 --height 360 --width 480 --frames 30 --warmup 3
bench 103_480x640_aleatoric --arch fcdensenet103 --height 480 --width 640 --frames 30 --warmup 3
for b in 1 10 25 50; do
    bench "103_360x480_mc50_b$b" --arch fcdensenet103 --height 360 --width 480 --mode mc --samples 50 --batch-size "$b" --frames 5 --warmup 1
done
bench 56_360x480_mc50_default --arch fcdensenet56 --height 360 --width 480 --mode mc --samples 50 --frames 5 --warmup 1
echo "== PyTorch reference (same network, forward only)" | tee -a "$out/bench.txt"
"$python" "$here/pytorch_reference.py" --device cuda --arch fcdensenet103 --frames 30 --warmup 3 2>&1 | tee -a "$out/bench.txt"
"$python" "$here/pytorch_reference.py" --device cuda --arch fcdensenet103 --mode mc --samples 50 --batch-size 25 --frames 5 2>&1 | tee -a "$out/bench.txt"
RUN
chmod +x .gpu/run.sh
echo "bundle ready in .gpu/ ($(du -sh .gpu | cut -f1)); on the GPU machine: bash .gpu/run.sh"

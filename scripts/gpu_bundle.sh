#!/usr/bin/env bash
# GPU run recipe, part 1 (on a development machine): build the release binary and the
# precision test against torch 2.11.0 and put them, the PyTorch reference and a run script
# into .gpu/ (git-ignored; carry it to the GPU machine with the working tree).
#
# Part 2 (on the GPU machine, which needs PyTorch 2.11.0 with CUDA but no Rust), from the
# repository root:
#     bash .gpu/run.sh            # results in $OUT (or .gpu/results): doctor.txt, *.json
# It builds nothing and runs, in about 6 minutes on an H200: doctor; the precision test on
# CUDA (fp16 and bf16 against fp32 with the demo model); bench of fcdensenet103 at 360x480
# and 480x640, aleatoric and MC-50, in fp32, fp16 and bf16, MC chunks of 16 and 25;
# moments mode (both rule sets, fp32 and fp16) at 360x480; the
# PyTorch reference on the same card (eager fp32, eager fp16 + channels-last, and at
# 360x480 torch.compile fp16 + channels-last) and a kernel profile of the reference's MC
# frame.
set -euo pipefail
cd "$(dirname "$0")/.."
make release
target="${CARGO_TARGET_DIR:-target}"
mkdir -p .gpu
# Stripped: the debug line tables triple the size and the device copy has a size limit.
strip -o .gpu/bayes_perception "$target/release/bayes_perception"
precision_test=$(cargo test --release --test precision --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "precision" and m.get("executable"):
        print(m["executable"])')
strip -o .gpu/precision_test "$precision_test"
cp scripts/pytorch_reference.py .gpu/
cat > .gpu/run.sh <<'RUN'
#!/usr/bin/env bash
# Runs doctor, the precision test and every GPU benchmark; prints the results and writes
# them to $OUT. Run from the repository root (models/demo is used).
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

echo "== precision: fp16 and bf16 against fp32 on CUDA (tests/precision.rs)" | tee "$out/precision.txt"
BAYES_PERCEPTION_TEST_DEVICE=cuda BAYES_PERCEPTION_DEMO_MODEL="$here/../models/demo" \
    timeout 120 "$here/precision_test" --nocapture --test-threads 1 2>&1 | tee -a "$out/precision.txt"

bench() {  # name, then bench arguments
    local name="$1"; shift
    echo "== $name: bench $*" | tee -a "$out/bench.txt"
    timeout 60 "$bin" bench --device cuda --json "$@" > "$out/$name.json" 2>> "$out/bench.txt"
    "$python" -c 'import json,sys
r = json.load(open(sys.argv[1])); s = r["stages_median_ms"]; m = r.get("gpu_memory") or {}
print("   median %.2f ms (%.1f frames/s), forward %.0f %%; upload %.2f, forward %.2f, device post %.2f, download %.2f, host %.2f ms; peak allocated %s MiB"
      % (r["median_ms"], r["frames_per_s"], 100 * r["forward_share"], s["upload"], s["forward"], s["device_post"],
         s["download"], s["host_outputs"], round(m["peak_allocated_mib"]) if m else "n/a"))' "$out/$name.json" | tee -a "$out/bench.txt"
}
for precision in fp32 fp16 bf16; do
    for size in "360 480" "480 640"; do
        set -- $size
        bench "103_${1}x${2}_aleatoric_$precision" --arch fcdensenet103 --height "$1" --width "$2" \
            --precision "$precision" --frames 50 --warmup 5
        for b in 16 25; do
            bench "103_${1}x${2}_mc50_b${b}_$precision" --arch fcdensenet103 --height "$1" --width "$2" \
                --precision "$precision" --mode mc --samples 50 --batch-size "$b" --frames 5 --warmup 2
        done
    done
done
# Sampling-free epistemic (mode moments): both rule sets, fp32 and fp16, at 360x480.
for precision in fp32 fp16; do
    for rules in closed_form linearized; do
        bench "103_360x480_moments_${rules}_$precision" --arch fcdensenet103 --height 360 --width 480 \
            --precision "$precision" --mode moments --rules "$rules" --frames 20 --warmup 3
    done
done

reference() {  # name, then pytorch_reference.py arguments
    local name="$1"; shift
    echo "== pytorch $name: $*" | tee -a "$out/bench.txt"
    timeout 150 "$python" "$here/pytorch_reference.py" --device cuda --arch fcdensenet103 --json "$out/pytorch_$name.json" "$@" 2>&1 | tee -a "$out/bench.txt"
}
for size in "360 480" "480 640"; do
    set -- $size
    setups=("fp32:--dtype fp32" "fp16_cl:--dtype fp16 --channels-last")
    # torch.compile takes a minute or two per shape: at 360x480 only.
    [[ $1 == 360 ]] && setups+=("fp16_cl_compiled:--dtype fp16 --channels-last --compile")
    for setup in "${setups[@]}"; do
        name="${setup%%:*}"; flags="${setup#*:}"
        reference "${1}x${2}_aleatoric_$name" --height "$1" --width "$2" --frames 50 --warmup 5 $flags
        reference "${1}x${2}_mc50_b25_$name" --height "$1" --width "$2" --mode mc --samples 50 --batch-size 25 --frames 5 --warmup 2 $flags
    done
done
echo "== pytorch profile of one MC-50 frame, fp16 channels-last (top CUDA kernels)" | tee -a "$out/bench.txt"
timeout 120 "$python" "$here/pytorch_reference.py" --device cuda --arch fcdensenet103 --mode mc --samples 50 \
    --batch-size 25 --frames 1 --warmup 1 --dtype fp16 --channels-last --profile 2>&1 | tee "$out/profile_mc50_fp16.txt"
RUN
chmod +x .gpu/run.sh
echo "bundle ready in .gpu/ ($(du -sh .gpu | cut -f1)); on the GPU machine, from the repository root: bash .gpu/run.sh"

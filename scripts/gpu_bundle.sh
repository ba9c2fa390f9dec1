#!/usr/bin/env bash
# GPU run recipe, part 1 (on a development machine): build the release binary and the
# precision test against torch 2.11.0 and put them, the PyTorch reference and a run script
# into .gpu/ (git-ignored; carry it to the GPU machine with the working tree).
#
# Part 2 (on the GPU machine, which needs PyTorch 2.11.0 with CUDA but no Rust), from the
# repository root:
#     bash .gpu/run.sh            # results in .gpu_results, packed into $OUT/results.tgz
#     RESUME=1 bash .gpu/run.sh   # a second call on the same (still warm) machine: keeps
#                                 # .gpu_results and skips every step already done
# It builds nothing and runs, most important first (a run cut short keeps what it did):
# doctor; the precision test on CUDA (fp16 and bf16 against fp32, one pass and MC,
# channels-last, pinned against pageable outputs, with the demo model, and CUDA graphs
# against the eager pass); bench of fcdensenet103 at 360x480, aleatoric and MC-50 (chunks
# of 25; frames/s also with consecutive frames overlapped as the node runs them), fp16
# and fp32, channels-last and not, the single pass as a CUDA graph, the
# outputs through one host thread, through pageable memory, with glibc's malloc
# defaults and coloured on the device, and the PyTorch reference
# beside it (eager fp32, eager fp16 + channels-last); MC chunks sized from the GPU memory
# (free, and a 4 GiB budget); bf16, MC chunks of 16, moments mode (closed form fp32/fp16,
# linearized fp16); 480x640 for us and the reference; a kernel profile of the
# reference's MC frame; bag process of a 360x480 bag (aleatoric, MC-50); the summary (scripts/gpu_summary.py: tables and targets, in
# summary.md); torch.compile (fp16 + channels-last) last, and the summary again.
set -euo pipefail
cd "$(dirname "$0")/.."
make release
# The same libtorch for the test binary as make's build (Makefile: the cache venv's torch).
if [[ -z "${LIBTORCH:-}" ]]; then
    cache="${BAYES_PERCEPTION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bayes_perception}"
    export LIBTORCH_USE_PYTORCH=1 PATH="$cache/venv/bin:$PATH"
fi
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
cp scripts/pytorch_reference.py scripts/gpu_summary.py .gpu/
cat > .gpu/run.sh <<'RUN'
#!/usr/bin/env bash
# Runs doctor, the precision test and every GPU benchmark; prints the results and writes
# them to $OUT. Run from the repository root (models/demo is used).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# Results are written to .gpu_results (beside .gpu/, so that carrying a fresh .gpu/ to a
# warm machine keeps them for RESUME=1) and packed after every step into one archive in
# $OUT (the device tool returns at most 8 files; a run cut off by its time limit keeps
# everything packed so far).
out="$here/../.gpu_results"
[[ "${RESUME:-}" == 1 ]] || rm -rf "$out"
mkdir -p "$out"
# With RESUME=1, whether a step's result is already there (non-empty).
kept() {
    [[ "${RESUME:-}" == 1 && -s "$1" ]] && echo "== kept from the previous call: ${1##*/}"
}
pack() {
    [[ -n "${OUT:-}" ]] || return 0
    tar czf "$OUT/results.tgz.part" -C "$out" . && mv "$OUT/results.tgz.part" "$OUT/results.tgz"
}
python=""
for candidate in /opt/torch/.venv/bin/python3 python3; do
    if "$candidate" -c 'import torch' 2>/dev/null; then python="$candidate"; break; fi
done
[[ -n "$python" ]] || { echo "no python with torch found" >&2; exit 1; }
torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
bin="$here/bayes_perception"
{ "$bin" doctor; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } 2>&1 | tee "$out/doctor.txt"
pack

bench() {  # name, then bench arguments
    local name="$1"; shift
    kept "$out/$name.json" && return
    echo "== $name: bench $*" | tee -a "$out/bench.txt"
    timeout 60 "$bin" bench --device cuda --json "$@" > "$out/$name.json" 2>> "$out/bench.txt"
    "$python" -c 'import json,sys
r = json.load(open(sys.argv[1])); s = r["stages_median_ms"]; m = r.get("gpu_memory") or {}
print("   median %.2f ms (%.1f frames/s, overlapped %s), forward %.0f %%; upload %.2f, forward %.2f, device post %.2f, download %.2f (pinned %s), host %.2f ms; peak allocated %s MiB; batch %s"
      % (r["median_ms"], r["frames_per_s"], r.get("overlapped_frames_per_s"), 100 * r["forward_share"], s["upload"], s["forward"], s["device_post"],
         s["download"], r.get("pinned_download"), s["host_outputs"], round(m["peak_allocated_mib"]) if m else "n/a", r.get("batch_size")))' "$out/$name.json" | tee -a "$out/bench.txt"
    pack
}
ours() {  # height width precision [mc batch sizes...]; LAYOUT=cl runs channels-last
    local h="$1" w="$2" p="$3"; shift 3
    local tag="$p" layout=()
    if [[ "${LAYOUT:-}" == cl ]]; then tag="${p}_cl"; layout=(--channels-last); fi
    bench "103_${h}x${w}_aleatoric_$tag" --arch fcdensenet103 --height "$h" --width "$w" \
        --precision "$p" "${layout[@]}" --overlap --frames 50 --warmup 5
    for b in "$@"; do
        bench "103_${h}x${w}_mc50_b${b}_$tag" --arch fcdensenet103 --height "$h" --width "$w" \
            --precision "$p" "${layout[@]}" --overlap --mode mc --samples 50 --batch-size "$b" --frames 5 --warmup 2
    done
}
reference() {  # name, then pytorch_reference.py arguments
    local name="$1"; shift
    kept "$out/pytorch_$name.json" && return
    echo "== pytorch $name: $*" | tee -a "$out/bench.txt"
    timeout 150 "$python" "$here/pytorch_reference.py" --device cuda --arch fcdensenet103 --json "$out/pytorch_$name.json" "$@" 2>&1 | tee -a "$out/bench.txt"
    pack
}
reference_pair() {  # height width name flags...
    local h="$1" w="$2" name="$3"; shift 3
    reference "${h}x${w}_aleatoric_$name" --height "$h" --width "$w" --frames 50 --warmup 5 "$@"
    reference "${h}x${w}_mc50_b25_$name" --height "$h" --width "$w" --mode mc --samples 50 --batch-size 25 --frames 5 --warmup 2 "$@"
}

# In order of what matters most, so that a run cut short by its time limit has the rest:
# the precision test (fp16/bf16 MC with the fp32-drawn dropout masks, channels-last),
# then the 360x480 target set-up in both layouts against PyTorch, then the chunk sized
# from the GPU memory, other precisions, sizes and modes.
if ! kept "$out/precision.done"; then
    echo "== precision: fp16 and bf16 against fp32 on CUDA (tests/precision.rs)" | tee "$out/precision.txt"
    # The CUDA-graph test in a process of its own: a failed capture would spoil the others.
    for filter in "--skip cuda_graphs" "cuda_graphs"; do
        BAYES_PERCEPTION_TEST_DEVICE=cuda BAYES_PERCEPTION_DEMO_MODEL="$here/../models/demo" \
            timeout 150 "$here/precision_test" --nocapture --test-threads 1 $filter 2>&1 | tee -a "$out/precision.txt"
    done
    echo done > "$out/precision.done"
    pack
fi
LAYOUT=cl ours 360 480 fp16 25
# The single pass as a CUDA graph (experimental): launch overhead out of the aleatoric frame.
bench 103_360x480_aleatoric_fp16_cl_graphs --arch fcdensenet103 --height 360 --width 480 \
    --precision fp16 --channels-last --cuda-graphs --frames 50 --warmup 5
bench 103_360x480_aleatoric_fp32_graphs --arch fcdensenet103 --height 360 --width 480 \
    --precision fp32 --cuda-graphs --frames 50 --warmup 5
# The output images built on one host thread instead of one per core: the host stage's
# share of an aleatoric frame with and without the parallel build.
RAYON_NUM_THREADS=1 bench 103_360x480_aleatoric_fp16_cl_host1 --arch fcdensenet103 --height 360 \
    --width 480 --precision fp16 --channels-last --frames 50 --warmup 5
# The outputs copied to pageable host memory instead of the page-locked buffer (the
# default): what pinning saves in the download stage.
bench 103_360x480_aleatoric_fp16_cl_pageable --arch fcdensenet103 --height 360 --width 480 \
    --precision fp16 --channels-last --pageable-download --frames 50 --warmup 5
# glibc's malloc at its defaults (a malloc tunable is set, so the binary leaves malloc alone,
# see configure_allocations): what keeping freed memory for the next frame saves in the
# host stage.
GLIBC_TUNABLES=glibc.malloc.perturb=0 bench 103_360x480_aleatoric_fp16_cl_glibc_default \
    --arch fcdensenet103 --height 360 --width 480 --precision fp16 --channels-last --frames 50 --warmup 5
# The colour messages made on the device (experimental, --device-colors): less host work,
# more to download; against 103_360x480_aleatoric_fp16_cl and the MC-50 row of that set-up.
bench 103_360x480_aleatoric_fp16_cl_devcolors --arch fcdensenet103 --height 360 --width 480 \
    --precision fp16 --channels-last --device-colors --frames 50 --warmup 5
bench 103_360x480_mc50_b25_fp16_cl_devcolors --arch fcdensenet103 --height 360 --width 480 \
    --precision fp16 --channels-last --device-colors --mode mc --samples 50 --batch-size 25 --frames 5 --warmup 2
ours 360 480 fp16 25
LAYOUT=cl ours 360 480 fp32 25
ours 360 480 fp32 25
reference_pair 360 480 fp32 --dtype fp32
reference_pair 360 480 fp16_cl --dtype fp16 --channels-last
# MC chunks sized from the GPU memory (no --batch-size): up to 16 on a free H200, and
# under a 4 GiB budget (an 8 GB Jetson's share): the chosen batch_size and the peak.
for budget in 0 4096; do
    bench "103_360x480_mc50_auto_mem${budget}_fp16_cl" --arch fcdensenet103 --height 360 --width 480 \
        --precision fp16 --channels-last --mode mc --samples 50 --max-gpu-memory-mb "$budget" --frames 5 --warmup 2
done
LAYOUT=cl ours 360 480 bf16 25
bench 103_360x480_mc50_b16_fp16 --arch fcdensenet103 --height 360 --width 480 --precision fp16 \
    --mode mc --samples 50 --batch-size 16 --frames 5 --warmup 2
# Sampling-free epistemic (mode moments) at 360x480.
for setup in closed_form:fp32 closed_form:fp16 linearized:fp16; do
    bench "103_360x480_moments_${setup%%:*}_${setup#*:}_cl" --arch fcdensenet103 --height 360 --width 480 \
        --precision "${setup#*:}" --channels-last --mode moments --rules "${setup%%:*}" --frames 20 --warmup 3
done
LAYOUT=cl ours 480 640 fp16 25
ours 480 640 fp32 25
reference_pair 480 640 fp32 --dtype fp32
reference_pair 480 640 fp16_cl --dtype fp16 --channels-last
if ! kept "$out/profile_mc50_fp16.txt"; then
    echo "== pytorch profile of one MC-50 frame, fp16 channels-last (top CUDA kernels)" | tee -a "$out/bench.txt"
    # Kept under its final name only when it succeeded (RESUME=1 tries a failed one again).
    timeout 120 "$python" "$here/pytorch_reference.py" --device cuda --arch fcdensenet103 --mode mc --samples 50 \
        --batch-size 25 --frames 1 --warmup 1 --dtype fp16 --channels-last --profile 2>&1 | tee "$out/profile_mc50_fp16.part" &&
        mv "$out/profile_mc50_fp16.part" "$out/profile_mc50_fp16.txt"
    pack
fi
# bag process as a user runs it offline (frames predicted while the previous ones are
# written): a 200-frame 360x480 camera bag through a random fcdensenet103, aleatoric, and
# every 10th frame (20) in MC-50; fp16 channels-last.
bag_process() {  # name, then bag process arguments
    local name="$1"; shift
    kept "$out/$name.json" && return
    echo "== $name: bag process $*" | tee -a "$out/bench.txt"
    local work
    work="$(mktemp -d)"
    "$bin" bag sample "$work/in" --frames 200 --width 480 --height 360 > /dev/null &&
        "$bin" model init --out "$work/model" --arch fcdensenet103 --height 360 --width 480 > /dev/null &&
        timeout 150 "$bin" bag process "$work/in" "$work/out" --model "$work/model" --device cuda \
            --json "$out/$name.json.part" "$@" 2>&1 | tail -4 | tee -a "$out/bench.txt"
    [[ -s "$out/$name.json.part" ]] && mv "$out/$name.json.part" "$out/$name.json"
    rm -rf "$work"
    pack
}
bag_process bag_process_103_360x480_aleatoric_fp16_cl --precision fp16 --channels-last
bag_process bag_process_103_360x480_mc50_fp16_cl --precision fp16 --channels-last --mode mc \
    --samples 50 --every 10
summary() {  # the tables and the targets (scripts/gpu_summary.py), into summary.md
    "$python" "$here/gpu_summary.py" "$out" > "$out/summary.md" 2>> "$out/bench.txt" && cat "$out/summary.md"
    pack
}
summary
# torch.compile takes a minute or two per shape: last.
reference_pair 360 480 fp16_cl_compiled --dtype fp16 --channels-last --compile
summary
RUN
chmod +x .gpu/run.sh
echo "bundle ready in .gpu/ ($(du -sh .gpu | cut -f1)); on the GPU machine, from the repository root: bash .gpu/run.sh"

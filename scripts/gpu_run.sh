#!/usr/bin/env bash
# The real-time issue's device run: scripts/gpu_bundle.sh copies this script to .gpu/run.sh
# beside a release binary, the precision test and the PyTorch reference; on the GPU
# machine (PyTorch 2.11.0 with CUDA, no Rust), from the repository root:
#
#     bash .gpu/run.sh                          # the first call: DEADLINE seconds (540)
#     DEADLINE=150 RESUME=1 bash .gpu/run.sh    # at once after it, on the still-warm machine
#
# Results go to .gpu_results (beside .gpu/, so a second call finds them) and are packed
# into $OUT/results.tgz after every step; a second call on a fresh machine (the first one
# given back meanwhile) starts from .gpu/previous_results.tgz, the first call's
# results.tgz copied there before it is carried; `python3 scripts/gpu_summary.py DIR` makes the
# tables afterwards (on any machine with torch: not on device time). The device lends 15
# minutes in all, start-up included, at most 10 a call: the steps run most important
# first, each step is given at most what is left before DEADLINE, and a step cut by the
# deadline runs again on RESUME=1, which keeps every step done. A step that failed on its
# own (a crash, its own time limit) is not run again unless RETRY_FAILED=1. times.txt
# has each step's wall time and outcome, to size the next run.
#
# The order: doctor; the 360x480 target set-up, fp16 channels-last, ours and PyTorch's,
# aleatoric and MC-50 (chunks of 25); the single pass as a CUDA graph, ours and PyTorch's;
# the precision test (fp16/bf16 against fp32 on CUDA); fp32 in the usual layout, ours and
# PyTorch's; the switch levers at 360x480 (channels-last off, bf16, fp32 channels-last,
# cuDNN's algorithm search off, ours and PyTorch's); PyTorch kernel profiles (aleatoric,
# MC); torch.compile (reduce-overhead) of the single pass; 480x640; then the other levers
# (the pageable download, one host thread, colours on the device, MC chunks from the GPU
# memory, chunks of 16, fp32 graphs), moments mode, bag process, glibc's malloc defaults,
# and torch.compile of MC last.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
self="$here/$(basename "$0")"

# `run.sh __bag PART ARGS...` (a step of the run below): a 200-frame 360x480 camera bag
# through a random fcdensenet103 with `bag process ARGS`, its --json summary to PART.
if [[ "${1:-}" == __bag ]]; then
    part="$2"
    shift 2
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    "$BP_BIN" bag sample "$work/in" --frames 200 --width 480 --height 360 > /dev/null &&
        "$BP_BIN" model init --out "$work/model" --arch fcdensenet103 --height 360 --width 480 > /dev/null &&
        "$BP_BIN" bag process "$work/in" "$work/out" --model "$work/model" --device cuda --json "$part" "$@"
    exit
fi

out="$here/../.gpu_results"
[[ "${RESUME:-}" == 1 ]] || rm -rf "$out"
mkdir -p "$out"
# A resumed call on a fresh machine: the first call's results, carried.
if [[ "${RESUME:-}" == 1 && ! -s "$out/times.txt" && -s "$here/previous_results.tgz" ]]; then
    tar xzf "$here/previous_results.tgz" -C "$out" && echo "== resumed from .gpu/previous_results.tgz"
fi
log="$out/bench.txt"
start=$SECONDS
deadline="${DEADLINE:-540}"
echo "== call at $(date -u +%FT%TZ), deadline ${deadline} s, RESUME=${RESUME:-0}" | tee -a "$log" >> "$out/times.txt"

# The binary is linked against libtorch 2.11.0 and loads the one of this torch.
python="" torch_lib="" found=()
for candidate in ${GPU_RUN_PYTHON:-/opt/torch/.venv/bin/python3 python3}; do
    if read -r version lib < <("$candidate" -c 'import os, torch
print(torch.__version__, os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null); then
        found+=("$candidate: torch $version")
        if [[ "$version" == 2.11.0* ]]; then
            python="$candidate" torch_lib="$lib"
            break
        fi
    fi
done
if [[ -z "$python" ]]; then
    echo "no python with torch 2.11.0 (the bundle's binary loads torch's libtorch): ${found[*]:-none with torch}" >&2
    exit 1
fi
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export BP_BIN="${GPU_RUN_BIN:-$here/bayes_perception}"
bin="$BP_BIN"

pack() {
    [[ -n "${OUT:-}" ]] || return 0
    tar czf "$OUT/results.tgz.part" -C "$out" . && mv "$OUT/results.tgz.part" "$OUT/results.tgz"
}

# step NAME LIMIT KIND COMMAND...: runs COMMAND for at most LIMIT seconds, or what is left
# before the deadline, unless an earlier call did. KIND says where its result goes:
#   json: its standard output is the result, NAME.json (bench --json);
#   file: it writes the result to the path @PART@ stands for, kept as NAME.json;
#   text: its output is the result, NAME.txt, whatever its exit status (a test's verdict).
step() {
    local name="$1" limit="$2" kind="$3"
    shift 3
    local result="$out/$name.json"
    [[ "$kind" == text ]] && result="$out/$name.txt"
    if [[ -s "$result" ]]; then
        echo "== $name: kept from an earlier call"
        return 0
    fi
    if [[ -e "$out/$name.failed" && "${RETRY_FAILED:-}" != 1 ]]; then
        echo "== $name: failed in an earlier call (exit $(cat "$out/$name.failed")); RETRY_FAILED=1 runs it again"
        return 0
    fi
    # Whatever a retried step does now is its outcome, not the earlier failure.
    rm -f "$out/$name.failed"
    local left=$((deadline - (SECONDS - start)))
    if ((left < 15)); then
        printf '%s\tnot run: no time left\n' "$name" >> "$out/times.txt"
        return 0
    fi
    local allowed=$((left < limit ? left : limit))
    local part="$result.part" args=() arg
    for arg in "$@"; do args+=("${arg//@PART@/$part}"); done
    echo "== $name (at most $allowed s): ${args[*]}" | tee -a "$log"
    local began=$SECONDS rc=0
    case "$kind" in
        # (-k: a step that takes its time to stop after SIGTERM, bag process finishing
        # its frame, is killed 10 s later.)
        json) timeout -k 10 "$allowed" "${args[@]}" > "$part" 2>> "$log" || rc=$? ;;
        file) timeout -k 10 "$allowed" "${args[@]}" 2>&1 | tee -a "$log"; rc=${PIPESTATUS[0]} ;;
        text) timeout -k 10 "$allowed" "${args[@]}" 2>&1 | tee "$part"; rc=${PIPESTATUS[0]} ;;
    esac
    local outcome
    if ((rc == 124 || rc == 137)) && ((allowed < limit)); then
        outcome="cut at the deadline (RESUME=1 runs it again)"
        rm -f "$part"
    elif ((rc == 0)) || [[ "$kind" == text && $rc != 124 && $rc != 137 ]]; then
        outcome="done"
        [[ -s "$part" ]] && mv "$part" "$result"
        [[ -s "$result" ]] || { outcome="failed: no result"; echo 1 > "$out/$name.failed"; }
    else
        outcome="failed (its own limit is $limit s)"
        echo "$rc" > "$out/$name.failed"
        [[ -s "$part" ]] && mv "$part" "$out/$name.failed_output"
    fi
    printf '%s\t%d s\texit %d\tallowed %d s\t%s\n' "$name" $((SECONDS - began)) "$rc" "$allowed" "$outcome" |
        tee -a "$out/times.txt"
    if [[ "$outcome" == done && "$kind" == json ]]; then
        "$python" -c 'import json,sys
r = json.load(open(sys.argv[1])); s = r["stages_median_ms"]; m = r.get("gpu_memory") or {}
print("   median %.2f ms (not profiled %s, overlapped %s frames/s), forward %.0f %%; upload %.2f, forward %.2f, device post %.2f, download %.2f, host %.2f ms; peak allocated %s MiB; batch %s"
      % (r["median_ms"], r.get("unprofiled_median_ms"), r.get("overlapped_frames_per_s"), 100 * r["forward_share"], s["upload"], s["forward"],
         s["device_post"], s["download"], s["host_outputs"], round(m["peak_allocated_mib"]) if m else "n/a", r.get("batch_size")))' "$result" 2>&1 |
            tee -a "$log"
    fi
    pack
}

# bench NAME [VAR=VALUE...] ARGS...: bench of fcdensenet103 on CUDA, in at most
# BENCH_LIMIT seconds (60).
bench() {
    local name="$1" envs=()
    shift
    while [[ "${1:-}" == *=* && "${1:-}" != -* ]]; do envs+=("$1"); shift; done
    step "$name" "${BENCH_LIMIT:-60}" json env "${envs[@]}" "$bin" bench --device cuda --json --arch fcdensenet103 "$@"
}
# ours H W PRECISION[_cl][_nobench] aleatoric|mc [ARGS...]: the standard rows (_nobench:
# cuDNN's algorithm search off).
ours() {
    local h="$1" w="$2" tag="$3" mode="$4" flags=()
    shift 4
    local precision="${tag%%_*}"
    [[ "$tag" == *_cl* ]] && flags+=(--channels-last)
    [[ "$tag" == *_nobench ]] && flags+=(--no-cudnn-benchmark)
    if [[ "$mode" == aleatoric ]]; then
        bench "103_${h}x${w}_aleatoric_$tag" --height "$h" --width "$w" --precision "$precision" \
            "${flags[@]}" --overlap --frames 50 --warmup 5 "$@"
    else
        bench "103_${h}x${w}_mc50_b25_$tag" --height "$h" --width "$w" --precision "$precision" \
            "${flags[@]}" --overlap --mode mc --samples 50 --batch-size 25 --frames 5 --warmup 2 "$@"
    fi
}
# theirs H W NAME aleatoric|mc LIMIT [ARGS...]: the PyTorch reference, forward passes only.
theirs() {
    local h="$1" w="$2" name="$3" mode="$4" limit="$5" runs=()
    shift 5
    if [[ "$mode" == aleatoric ]]; then
        runs=(--frames 50 --warmup 5)
        name="${h}x${w}_aleatoric_$name"
    else
        runs=(--mode mc --samples 50 --batch-size 25 --frames 5 --warmup 2)
        name="${h}x${w}_mc50_b25_$name"
    fi
    step "pytorch_$name" "$limit" file "$python" "$here/pytorch_reference.py" --device cuda \
        --arch fcdensenet103 --no-count --height "$h" --width "$w" "${runs[@]}" --json @PART@ "$@"
}
fp16_cl=(--dtype fp16 --channels-last)

step doctor 60 text bash -c '"$0" doctor; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv' "$bin"
# The target set-up at 360x480, ours and PyTorch's best eager one.
ours 360 480 fp16_cl aleatoric
ours 360 480 fp16_cl mc
theirs 360 480 fp16_cl aleatoric 90 "${fp16_cl[@]}"
theirs 360 480 fp16_cl mc 90 "${fp16_cl[@]}"
# The single pass as a CUDA graph: launch overhead out of the aleatoric frame.
bench 103_360x480_aleatoric_fp16_cl_graphs --height 360 --width 480 --precision fp16 --channels-last \
    --cuda-graphs --frames 50 --warmup 5
theirs 360 480 fp16_cl_graph aleatoric 90 "${fp16_cl[@]}" --cuda-graph
# fp16 and bf16 against fp32 on CUDA (tests/precision.rs); CUDA graphs in a process of their
# own (a failed capture would spoil the other tests).
precision=(env BAYES_PERCEPTION_TEST_DEVICE=cuda BAYES_PERCEPTION_DEMO_MODEL="$here/../models/demo"
    "$here/precision_test" --nocapture --test-threads 1)
step precision 150 text "${precision[@]}" --skip cuda_graphs
step precision_cuda_graphs 60 text "${precision[@]}" cuda_graphs
# fp32 in the usual layout: both levers off.
ours 360 480 fp32 aleatoric
ours 360 480 fp32 mc
theirs 360 480 fp32 aleatoric 90 --dtype fp32
theirs 360 480 fp32 mc 90 --dtype fp32
# The switch levers one at a time, against the fp16 channels-last rows: channels-last off,
# bf16, fp32 channels-last (against the fp32 rows), cuDNN's algorithm search off (ours and
# PyTorch's).
ours 360 480 fp16 aleatoric
ours 360 480 fp16 mc
ours 360 480 bf16_cl aleatoric
ours 360 480 bf16_cl mc
ours 360 480 fp32_cl aleatoric
ours 360 480 fp32_cl mc
ours 360 480 fp16_cl_nobench aleatoric
ours 360 480 fp16_cl_nobench mc
theirs 360 480 fp16_cl_nobench aleatoric 90 "${fp16_cl[@]}" --no-cudnn-benchmark
theirs 360 480 fp16_cl_nobench mc 90 "${fp16_cl[@]}" --no-cudnn-benchmark
# Where PyTorch's time goes, kernel by kernel (each kernel's own time).
profile=("$python" "$here/pytorch_reference.py" --device cuda --arch fcdensenet103 --height 360
    --width 480 --no-count --frames 1 --warmup 3 --profile "${fp16_cl[@]}")
step profile_aleatoric_fp16_cl 60 text "${profile[@]}"
step profile_mc50_b25_fp16_cl 90 text "${profile[@]}" --mode mc --samples 50 --batch-size 25
# torch.compile with CUDA graphs (its compile is paid in the warm-up).
theirs 360 480 fp16_cl_compiled aleatoric 200 "${fp16_cl[@]}" --compile --compile-mode reduce-overhead
# 480x640 (MC at 1.8x the pixels: 120 s a row).
ours 480 640 fp16_cl aleatoric
BENCH_LIMIT=120 ours 480 640 fp16_cl mc
theirs 480 640 fp16_cl aleatoric 90 "${fp16_cl[@]}"
theirs 480 640 fp16_cl mc 120 "${fp16_cl[@]}"
ours 480 640 fp32 aleatoric
BENCH_LIMIT=120 ours 480 640 fp32 mc
theirs 480 640 fp32 aleatoric 90 --dtype fp32
theirs 480 640 fp32 mc 120 --dtype fp32
# The outputs to pageable host memory instead of the page-locked buffer.
bench 103_360x480_aleatoric_fp16_cl_pageable --height 360 --width 480 --precision fp16 --channels-last \
    --pageable-download --frames 50 --warmup 5
# The output images built on one host thread instead of one per core.
bench 103_360x480_aleatoric_fp16_cl_host1 RAYON_NUM_THREADS=1 --height 360 --width 480 --precision fp16 \
    --channels-last --frames 50 --warmup 5
# The colour messages made on the device: less host work, more to download.
bench 103_360x480_aleatoric_fp16_cl_devcolors --height 360 --width 480 --precision fp16 --channels-last \
    --device-colors --frames 50 --warmup 5
bench 103_360x480_mc50_b25_fp16_cl_devcolors --height 360 --width 480 --precision fp16 --channels-last \
    --device-colors --mode mc --samples 50 --batch-size 25 --frames 5 --warmup 2
# The node's compressed twins encoded too (labels PNG, colour images JPEG), as while each
# has a subscriber: their cost on this machine's host.
bench 103_360x480_aleatoric_fp16_cl_twins --height 360 --width 480 --precision fp16 --channels-last \
    --compressed-twins --frames 50 --warmup 5
# MC chunks sized from the GPU memory (no --batch-size): up to 16 on a free card, and under
# a 4 GiB budget (an 8 GB Jetson's share): the chosen batch size and the peak.
for budget in 0 4096; do
    bench "103_360x480_mc50_auto_mem${budget}_fp16_cl" --height 360 --width 480 --precision fp16 \
        --channels-last --mode mc --samples 50 --max-gpu-memory-mb "$budget" --frames 5 --warmup 2
done
bench 103_360x480_mc50_b16_fp16_cl --height 360 --width 480 --precision fp16 --channels-last \
    --mode mc --samples 50 --batch-size 16 --frames 5 --warmup 2
bench 103_360x480_aleatoric_fp32_graphs --height 360 --width 480 --precision fp32 --cuda-graphs \
    --frames 50 --warmup 5
# Sampling-free epistemic (mode moments).
for setup in closed_form:fp32 closed_form:fp16 linearized:fp16; do
    bench "103_360x480_moments_${setup%%:*}_${setup#*:}_cl" --height 360 --width 480 \
        --precision "${setup#*:}" --channels-last --mode moments --rules "${setup%%:*}" --frames 20 --warmup 3
done
# bag process as a user runs it offline (frames predicted while the previous ones are
# written): aleatoric, and every 10th frame in MC-50; fp16 channels-last.
step bag_process_103_360x480_aleatoric_fp16_cl 150 file bash "$self" __bag @PART@ --precision fp16 --channels-last
step bag_process_103_360x480_mc50_fp16_cl 150 file bash "$self" __bag @PART@ --precision fp16 --channels-last \
    --mode mc --samples 50 --every 10
# glibc's malloc at its defaults (a malloc tunable is set, so the binary leaves malloc
# alone): what keeping freed memory for the next frame saves in the host stage.
bench 103_360x480_aleatoric_fp16_cl_glibc_default GLIBC_TUNABLES=glibc.malloc.perturb=0 --height 360 \
    --width 480 --precision fp16 --channels-last --frames 50 --warmup 5
theirs 360 480 fp16_cl_compiled mc 240 "${fp16_cl[@]}" --compile
echo "== end of the call after $((SECONDS - start)) s" | tee -a "$log" >> "$out/times.txt"
pack

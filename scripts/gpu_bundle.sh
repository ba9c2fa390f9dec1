#!/usr/bin/env bash
# GPU run recipe, part 1 (on a development machine): build the release binary and the
# precision test against torch 2.11.0 and put them, the PyTorch reference and a run script
# into .gpu/ (git-ignored; carry it to the GPU machine with the working tree).
#
# Part 2 (on the GPU machine, which needs PyTorch 2.11.0 with CUDA but no Rust), from the
# repository root (scripts/gpu_run.sh says what it runs, in which order, and how the two
# calls share the device time):
#     bash .gpu/run.sh                          # results in .gpu_results, packed into
#                                               # $OUT/results.tgz after every step
#     DEADLINE=150 RESUME=1 bash .gpu/run.sh    # at once after it, on the still-warm machine
#                                               # (a fresh one: first copy call 1's
#                                               # results.tgz to .gpu/previous_results.tgz)
# Then here: python3 scripts/gpu_summary.py <the unpacked results>.
set -euo pipefail
cd "$(dirname "$0")/.."
make release
# The same libtorch for the test binary as make's build (Makefile: the cache venv's torch).
if [[ -z "${LIBTORCH:-}" ]]; then
    cache="${BAYES_PERCEPTION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bayes_perception}"
    export LIBTORCH_USE_PYTORCH=1 PATH="$cache/venv/bin:$PATH"
fi
target="${CARGO_TARGET_DIR:-target}"
# A CPU-only libtorch, or a build without the CUDA shims (csrc/), would spoil the whole
# device run: refuse to bundle one.
# (The listings are read whole: `grep -q` would stop early, and pipefail take the
# writer's SIGPIPE for a failure.)
binary="$target/release/bayes_perception"
needed="$(readelf -d "$binary")"
if ! grep -q 'libtorch_cuda' <<< "$needed"; then
    echo "$binary is not linked against libtorch_cuda (a CPU-only libtorch?): not bundled" >&2
    exit 1
fi
symbols="$(nm "$binary")"
for symbol in bp_graph_capture_begin bp_cuda_memory_stats; do
    if ! grep -q " T $symbol\$" <<< "$symbols"; then
        echo "$binary lacks $symbol (the CUDA shims of csrc/ were not built): not bundled" >&2
        exit 1
    fi
done
mkdir -p .gpu
# Results of another bundle's binary are no results of this one's.
rm -f .gpu/previous_results.tgz
# Stripped: the debug line tables triple the size and the device copy has a size limit.
strip -o .gpu/bayes_perception "$binary"
# (cargo's progress and errors go to stderr; its JSON messages, the artifacts', to stdout.)
precision_test=$(cargo test --release --test precision --no-run --message-format=json |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "precision" and m.get("executable"):
        print(m["executable"])')
if [[ -z "$precision_test" ]] || ! grep -q 'libtorch_cuda' <<< "$(readelf -d "$precision_test")"; then
    echo "the precision test did not build, or not against libtorch_cuda: not bundled" >&2
    exit 1
fi
strip -o .gpu/precision_test "$precision_test"
cp scripts/pytorch_reference.py .gpu/
cp scripts/gpu_run.sh .gpu/run.sh
chmod +x .gpu/run.sh
# What the device call carries (the working tree and .gpu/) must stay under its 64 MiB.
size_kib=$(du -sk .gpu | cut -f1)
if ((size_kib > 48 * 1024)); then
    echo "warning: .gpu/ is $((size_kib / 1024)) MiB; the device call carries at most 64 MiB with the working tree" >&2
fi
echo "bundle ready in .gpu/ ($((size_kib / 1024)) MiB); on the GPU machine, from the repository root: bash .gpu/run.sh, then DEADLINE=<s> RESUME=1 bash .gpu/run.sh (on a fresh machine: with call 1's results.tgz as .gpu/previous_results.tgz)"

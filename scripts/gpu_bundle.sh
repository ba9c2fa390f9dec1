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
# Stripped: the debug line tables triple the size and the device copy has a size limit.
strip -o .gpu/bayes_perception "$binary"
precision_test=$(cargo test --release --test precision --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "precision" and m.get("executable"):
        print(m["executable"])')
strip -o .gpu/precision_test "$precision_test"
cp scripts/pytorch_reference.py .gpu/
cp scripts/gpu_run.sh .gpu/run.sh
chmod +x .gpu/run.sh
echo "bundle ready in .gpu/ ($(du -sh .gpu | cut -f1)); on the GPU machine, from the repository root: bash .gpu/run.sh, then DEADLINE=<s> RESUME=1 bash .gpu/run.sh"

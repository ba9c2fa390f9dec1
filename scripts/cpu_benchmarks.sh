#!/usr/bin/env bash
# The CPU figures of BENCHMARKS.md: the engine (release build) and, for comparison, the
# same network in plain PyTorch (scripts/pytorch_reference.py), on this machine.
# Run on an otherwise idle machine: `bash scripts/cpu_benchmarks.sh | tee cpu_bench.txt`.
# `bash scripts/cpu_benchmarks.sh moments` runs only the moments-mode rows, whose JSON
# goes to benchmarks/cpu/.
set -euo pipefail
cd "$(dirname "$0")/.."
make release >/dev/null
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/bayes_perception"
cache="${BAYES_PERCEPTION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bayes_perception}"
python="${LIBTORCH:+python3}"
python="${python:-$cache/venv/bin/python3}"

run() { echo "\$ bayes_perception $*"; "$bin" "$@"; echo; }
ref() { echo "\$ python3 scripts/pytorch_reference.py $*"; "$python" scripts/pytorch_reference.py "$@"; echo; }

lscpu | grep -E "Model name|^CPU\(s\)" || true
"$bin" --version
echo

# Moments mode (one pass of means and variances) against one aleatoric pass of the same
# random model, both rule sets and two head-sample counts, at the demo model's size and at
# FC-DenseNet103's; bench itself times the single pass and reports the ratio.
moments() {
    mkdir -p benchmarks/cpu
    for rules in closed_form linearized; do
        for k in 10 20 50; do
            name="benchmarks/cpu/56_180x240_moments_${rules}_k$k.json"
            echo "\$ bayes_perception bench --arch fcdensenet56 --height 180 --width 240 --mode moments --rules $rules --head-samples $k --device cpu --frames 5 --json"
            "$bin" bench --arch fcdensenet56 --height 180 --width 240 --mode moments --rules "$rules" \
                --head-samples "$k" --device cpu --frames 5 --json | tee "$name"
        done
        name="benchmarks/cpu/103_360x480_moments_${rules}_k20.json"
        echo "\$ bayes_perception bench --arch fcdensenet103 --height 360 --width 480 --mode moments --rules $rules --device cpu --frames 3 --json"
        "$bin" bench --arch fcdensenet103 --height 360 --width 480 --mode moments --rules "$rules" \
            --device cpu --frames 3 --json | tee "$name"
    done
}
if [[ ${1:-all} == moments ]]; then
    moments
    exit 0
fi
run bench --arch fcdensenet56 --height 360 --width 480 --mode aleatoric --device cpu --frames 10
run bench --arch fcdensenet103 --height 360 --width 480 --mode aleatoric --device cpu --frames 5
for b in 1 5 10; do
    run bench --arch fcdensenet56 --height 180 --width 240 --mode mc --samples 10 --batch-size "$b" --device cpu --frames 3
done
# PyTorch as installed, then with the huge-page allocator setting the engine turns on.
for thp in 0 1; do
    export THP_MEM_ALLOC_ENABLE=$thp
    echo "# THP_MEM_ALLOC_ENABLE=$thp"
    ref --arch fcdensenet56 --height 360 --width 480 --frames 10
    ref --arch fcdensenet103 --height 360 --width 480 --frames 5
    for b in 1 10; do
        ref --arch fcdensenet56 --height 180 --width 240 --mode mc --samples 10 --batch-size "$b" --frames 3
    done
done
unset THP_MEM_ALLOC_ENABLE
# The engine without huge pages, for the record.
THP_MEM_ALLOC_ENABLE=0 run bench --arch fcdensenet56 --height 360 --width 480 --mode aleatoric --device cpu --frames 10
moments

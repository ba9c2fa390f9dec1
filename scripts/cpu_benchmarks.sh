#!/usr/bin/env bash
# The CPU figures of BENCHMARKS.md: the engine (release build) and, for comparison, the
# same network in plain PyTorch (scripts/pytorch_reference.py), on this machine.
# Run on an otherwise idle machine: `bash scripts/cpu_benchmarks.sh | tee cpu_bench.txt`
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

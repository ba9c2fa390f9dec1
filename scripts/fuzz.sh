#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of outside data (fuzz/fuzz_targets/): camera
# encodings, CompressedImage, CDR, MCAP and SQLite3 bags, the params file, model.yaml and
# safetensors weights. Not part of `make test`; RELIABILITY.md records what ran.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]     (default: 8 s each, all targets)
#
# Needs the nightly toolchain (`cargo +nightly`) and cargo-fuzz (installed if missing).
# Corpora live in fuzz/corpus/ (seeded from real files by scripts/fuzz_seeds.py on first
# use); crashes, hangs and out-of-memory inputs land in fuzz/artifacts/TARGET/, and the
# script exits non-zero if any target found one.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${BAYES_PERCEPTION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bayes_perception}
venv=$cache/venv
[[ -x $venv/bin/python ]] || { echo "fuzz: run \`make setup\` first (libtorch venv)" >&2; exit 1; }
export LIBTORCH_USE_PYTORCH=1 PATH="$venv/bin:$PATH"
torch_lib=$("$venv/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

seconds=${1:-8}
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(image_msg compressed cdr bag_mcap bag_sqlite params_yaml model_yaml safetensors)
fi

# The fuzz build has its own target directory (fuzz/target), whatever CARGO_TARGET_DIR
# says for the main build.
fuzz_cargo() { (cd fuzz && env -u CARGO_TARGET_DIR cargo +nightly fuzz "$@"); }

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
# -s none: the code under test is safe Rust (what is searched for is panics, hangs and
# unbounded allocation); -a: debug assertions, so integer overflow panics.
fuzz_cargo build -s none -a

corpus=fuzz/corpus
# Seeded until the marker is written (last): a seeding cut short is done again, into the
# corpus as it is (seeds are added, nothing found by fuzzing is removed).
if [[ ! -f $corpus/.seeded ]]; then
    cargo build --quiet --bin bayes_perception
    "$venv/bin/python" scripts/fuzz_seeds.py "${CARGO_TARGET_DIR:-target}/debug/bayes_perception" "$corpus"
    # The safetensors seed: the valid weights of the target's own model.
    model_dir=$(mktemp -d)
    BAYES_FUZZ_MODEL_DIR=$model_dir fuzz/target/x86_64-unknown-linux-gnu/release/safetensors -runs=1 >/dev/null 2>&1 || true
    cp "$model_dir/valid.safetensors" "$corpus/safetensors/valid.safetensors"
    rm -rf "$model_dir"
    touch "$corpus/.seeded"
fi

failed=0
for target in "${targets[@]}"; do
    mkdir -p "$corpus/$target" "fuzz/artifacts/$target"
    echo "fuzz: $target for ${seconds}s"
    log=fuzz/artifacts/$target/last.log
    if ! fuzz_cargo run -s none -a "$target" "corpus/$target" -- \
            -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 >"$log" 2>&1; then
        echo "fuzz: $target FOUND A PROBLEM, see $log and fuzz/artifacts/$target/" >&2
        failed=1
    fi
    # (No statistics when libFuzzer never started: nothing to print, not a failure.)
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb|cov: " "$log" | tail -3 | sed "s/^/  /" || true
done
exit $failed

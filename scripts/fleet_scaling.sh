#!/usr/bin/env bash
# Throughput of the Ray fleet driver (scripts/fleet.py) with 1 and with 2 local workers, and
# the per-bag overheads (process start, libtorch and model load, bag open and close), on
# labelled synthetic bags with the demo model. Run it on a quiet machine; README ("Many
# bags: Ray") has the figures of the last run, its raw summaries are written to
# benchmarks/cpu/fleet/.
#
#   scripts/fleet_scaling.sh [BAGS] [FRAMES_PER_BAG]      (default 8 bags of 12 frames)
#
# Needs `make setup` (Ray in the cache venv) and a release build of the binary
# (BAYES_PERCEPTION_BIN, default target/release/bayes_perception).
set -euo pipefail
cd "$(dirname "$0")/.."

bags=${1:-8}
frames=${2:-12}
cache=${BAYES_PERCEPTION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bayes_perception}
python=$cache/venv/bin/python
bin=$(realpath "${BAYES_PERCEPTION_BIN:-${CARGO_TARGET_DIR:-target}/release/bayes_perception}")
results=benchmarks/cpu/fleet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$results"

for i in $(seq 1 "$bags"); do
    "$bin" synth --bag --out "$work/drive$i" --count "$frames" --seed "$i" --width 240 \
        --height 180 --ood --split test >/dev/null
done
for workers in 1 2; do
    echo "fleet_scaling: $bags bags of $frames frames, $workers worker(s)"
    "$python" scripts/fleet.py "$work"/drive* --out "$work/out$workers" --model models/demo \
        --process --eval --mode aleatoric --device cpu --num-cpus "$workers" --bin "$bin" \
        >"$work/out$workers.log" 2>&1 || { cat "$work/out$workers.log"; exit 1; }
    cp "$work/out$workers/fleet.json" "$results/workers$workers.json"
    for dir in "$work/out$workers"/bags/*/; do
        cp "$dir/eval.json" "$results/workers$workers-$(basename "$dir")-eval.json"
    done
done

"$python" - "$results" "$bags" "$frames" "$(nproc)" <<'EOF'
import json, statistics, sys
from pathlib import Path

results, bags, frames, cores = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows, overheads = [], {"process": [], "eval": []}
for workers in (1, 2):
    fleet = json.loads((results / f"workers{workers}.json").read_text())
    assert fleet["ok"] == bags, fleet
    total = bags * frames
    rows.append((workers, fleet["wall_seconds"], total / fleet["wall_seconds"]))
    for r in fleet["results"]:
        process = r["steps"]["process"]
        overheads["process"].append(process["wall_seconds"] - process["seconds"])
        name = Path(r["dir"]).name
        ev = json.loads((results / f"workers{workers}-{name}-eval.json").read_text())
        overheads["eval"].append(r["steps"]["eval"]["wall_seconds"] - ev["images"] * ev["ms_per_frame"] / 1e3)
print(f"{bags} bags x {frames} frames (180x240, demo model, aleatoric, process + eval), {cores} cores")
print("| workers | wall (s) | frames/s | speed-up |")
print("|---|---|---|---|")
for workers, wall, fps in rows:
    print(f"| {workers} | {wall:.1f} | {fps:.2f} | {fps / rows[0][2]:.2f}x |")
for step, values in overheads.items():
    print(f"per-bag overhead of {step}: median {statistics.median(values):.2f} s "
          f"(min {min(values):.2f}, max {max(values):.2f})")
EOF

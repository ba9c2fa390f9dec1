#!/usr/bin/env bash
# `make demo`: synthetic street scenes (normal and out-of-distribution) through the bundled
# demo model in MC mode; writes every output image and a contact sheet per scene.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${DEMO_OUT:-demo_out}"
run() { cargo run --release --quiet --bin bayes_perception -- "$@"; }

# Made once; a marker written last, so scenes cut short by Ctrl-C are made again.
if [[ ! -f "$OUT/scenes/.complete" ]]; then
    rm -rf "$OUT/scenes"
    run synth --out "$OUT/scenes" --split test --count 3 --seed 7 --width 240 --height 180
    run synth --out "$OUT/scenes" --split ood --ood --count 2 --seed 7 --width 240 --height 180
    touch "$OUT/scenes/.complete"
fi
# The outputs are made again each time (those of versions before 2026-12-06 carry no
# mark of infer's, and infer would leave them as they are).
rm -rf "$OUT/outputs"
run infer --model models/demo --config config/params.yaml --mode mc --samples 20 --seed 0 \
    --colorbar --contact-sheet --out "$OUT/outputs" "$OUT/scenes/test" "$OUT/scenes/ood"
echo
echo "Outputs of each scene are in $OUT/outputs/<scene>/; look at the contact sheets first:"
ls "$OUT"/outputs/*/contact_sheet.png
echo "(ood/ scenes hold objects the model never saw: compare their epistemic tiles with test/.)"

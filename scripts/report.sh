#!/usr/bin/env bash
# `make report`: the uncertainty-quality report of docs/uncertainty-quality.md, from the
# bundled models: the paper's four set-ups (models/baseline and models/demo, one pass and
# MC dropout) on fresh synthetic test and OOD splits, with every chart, CSV and
# report.md, into $REPORT_OUT (default reports/uncertainty/).
#
# Sized for a 2-core CPU in under 15 minutes: 16 test and 10 OOD scenes at 240x180 (the
# models' native size), T = 10 MC samples. REPORT_TEST, REPORT_OOD and REPORT_SAMPLES
# change that; REPORT_DEVICE=cuda runs it on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${BAYES_PERCEPTION_BIN:-target/debug/bayes_perception}
out=${REPORT_OUT:-reports/uncertainty}
test_count=${REPORT_TEST:-16}
ood_count=${REPORT_OOD:-10}
samples=${REPORT_SAMPLES:-10}
device=${REPORT_DEVICE:-cpu}

for model in models/demo models/baseline; do
    if [[ ! -f $model/model.yaml ]]; then
        echo "report: $model is missing. The comparison needs the homoscedastic baseline" >&2
        echo "report: next to the demo model; train it (on a GPU, under 4 minutes; on a 2-core" >&2
        echo "report: CPU about 2.5 hours, which Ctrl-C and --resume split into parts) with" >&2
        echo "report:   bayes_perception train --config config/train_baseline.yaml [--device cuda]" >&2
        echo "report: and copy runs/baseline/best/{model.yaml,model.safetensors} to models/baseline/" >&2
        exit 1
    fi
done

started=$SECONDS
data="$out/data"
# Fresh scenes with a seed no training split used (the models saw seed 1), and no report
# of an earlier run left to mix in (its contact sheets would be embedded again).
rm -rf "$data" "$out"/{no_uncertainty,aleatoric,epistemic,aleatoric_epistemic} "$out"/compare.{md,json}
"$bin" synth --out "$data" --count "$test_count" --split test --width 240 --height 180 --seed 7
"$bin" synth --out "$data" --count "$ood_count" --split ood --ood --width 240 --height 180 --seed 7
"$bin" eval --compare --model models/demo --baseline models/baseline --data "$data" \
    --split test --ood-split ood --samples "$samples" --seed 0 --device "$device" --out "$out"
echo "report: $out/compare.md and a report per set-up, in $((SECONDS - started)) s"

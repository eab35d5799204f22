#!/usr/bin/env bash
# Accuracy as a distribution: trains the bundled Fashion-MNIST ResNet per
# level and seed (actnn-bench accuracy) and draws the training-loss curves,
# the mean over seeds per level with a band of one standard deviation. Writes
# the benchmark's JSON lines and a PNG (gnuplot).
# Usage: bash scripts/plot_accuracy.sh [OUT_DIR]
#   env: LEVELS=fp,L3 SEEDS=5 EPOCHS=3 THREADS=2
#        DATA=FILE.jsonl: plot an earlier run's JSON lines instead of training
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/figures}
LEVELS=${LEVELS:-fp,L3}
SEEDS=${SEEDS:-5}
EPOCHS=${EPOCHS:-3}
THREADS=${THREADS:-2}
bash scripts/install-deps.sh gnuplot-nox
mkdir -p "$OUT"
if [ -z "${DATA:-}" ]; then
  cmake -S . -B build -G Ninja > /dev/null
  cmake --build build --target actnn-bench
  DATA="$OUT/accuracy_fashion_mnist.jsonl"
  build/bin/actnn-bench accuracy --levels "$LEVELS" --seeds "$SEEDS" --epochs "$EPOCHS" --threads "$THREADS" |
    tee "$DATA"
fi

# One data block per level (gnuplot index): step, mean loss, std over seeds.
TABLE=$(mktemp)
trap 'rm -f "$TABLE"' EXIT
/usr/bin/python3 - "$DATA" "$LEVELS" > "$TABLE" <<'PY'
import json, math, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith('{"curve"')]
for level in sys.argv[2].split(","):
    print(f"# {level}")
    by_step = {}
    for r in rows:
        if r["level"] == level:
            by_step.setdefault(r["step"], []).append(r["train_loss"])
    for step in sorted(by_step):
        v = by_step[step]
        m = sum(v) / len(v)
        s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
        print(step, m, s)
    print("\n")
PY

PNG="$OUT/accuracy_fashion_mnist.png"
gnuplot <<GP
set terminal pngcairo size 900,560 font ",11"
set output "$PNG"
set title "Fashion-MNIST ResNet: training loss, mean of $SEEDS seeds (band: one standard deviation)"
set xlabel "step (batch 128)"
set ylabel "training loss (mean over 20 steps)"
set logscale y
set autoscale yfix
set ytics (0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1, 1.5, 2)
set key top right
set grid
set style fill transparent solid 0.2 noborder
levels = "$(echo "$LEVELS" | tr ',' ' ')"
plot for [i=1:words(levels)] "$TABLE" index (i-1) using 1:(\$2-\$3):(\$2+\$3) with filledcurves lc i notitle, \
     for [i=1:words(levels)] "$TABLE" index (i-1) using 1:2 with lines lw 2 lc i title word(levels, i)
GP
echo "plot: $PNG"

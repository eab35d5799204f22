#!/usr/bin/env bash
# The batch-size figure of the ActNN paper, measured here: training
# throughput (images/s) against batch size for LibTorch autograd and the
# levels, each step also measured on the allocator and marked out of memory
# when it would not fit the budget. Writes the benchmark's JSON lines and a
# PNG (gnuplot).
# Usage: bash scripts/plot_throughput.sh [OUT_DIR]
#   env: MODEL=resnet50 IMAGE=64 BATCHES=16,32,64,128,256,512 LEVELS=fp,L3,L4,L5
#        BUDGET=805306368 THREADS=2 REPEAT=1
#        DATA=FILE.jsonl: plot an earlier run's JSON lines instead of measuring
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/figures}
MODEL=${MODEL:-resnet50}
IMAGE=${IMAGE:-64}
BATCHES=${BATCHES:-16,32,64,128,256,512}
LEVELS=${LEVELS:-fp,L3,L4,L5}
BUDGET=${BUDGET:-805306368}
THREADS=${THREADS:-2}
REPEAT=${REPEAT:-1}
bash scripts/install-deps.sh gnuplot-nox
mkdir -p "$OUT"
if [ -z "${DATA:-}" ]; then
  cmake -S . -B build -G Ninja > /dev/null
  cmake --build build --target actnn-bench
  DATA="$OUT/throughput_${MODEL}_${IMAGE}.jsonl"
  build/bin/actnn-bench throughput --model "$MODEL" --image "$IMAGE" --batch "$BATCHES" --levels "$LEVELS" \
    --budget "$BUDGET" --threads "$THREADS" --repeat "$REPEAT" | tee "$DATA"
fi

# One data block per level (gnuplot index): batch, images/s, 1 when out of memory.
TABLE=$(mktemp)
trap 'rm -f "$TABLE"' EXIT
/usr/bin/python3 - "$DATA" "$LEVELS" > "$TABLE" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
for level in sys.argv[2].split(","):
    print(f"# {level}")
    for r in rows:
        if r["level"] == level:
            print(r["batch"], r["images_per_second"], 1 if r.get("oom") else 0)
    print("\n")
PY

PNG="$OUT/throughput_${MODEL}_${IMAGE}.png"
gnuplot <<GP
set terminal pngcairo size 900,560 font ",11"
set output "$PNG"
set title "$MODEL, ${IMAGE}x${IMAGE}, CPU ($THREADS threads): throughput by batch size; x: the step needs more than $((BUDGET / 1048576)) MiB"
set xlabel "batch size"
set ylabel "images / second"
set logscale x 2
set key outside right
set grid
levels = "$(echo "$LEVELS" | tr ',' ' ')"
plot for [i=1:words(levels)] "$TABLE" index (i-1) using 1:(\$3 == 0 ? \$2 : 1/0) with linespoints lw 2 pt 7 lc i title word(levels, i), \
     for [i=1:words(levels)] "$TABLE" index (i-1) using 1:(\$3 == 1 ? \$2 : 1/0) with points pt 2 ps 2.5 lw 2 lc i notitle
GP
echo "plot: $PNG"

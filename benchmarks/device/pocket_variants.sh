#!/usr/bin/env bash
# One device call: continue a pocket model's warm start in several ways at once, then judge
# each beside the starting model on the same footing:
#   - year copying on worlds no model trained on (benchmarks/analysis/year_copy.py seed),
#   - dev exact match, 100 questions x 3 sampled runs (cli.py eval).
# Each argument is NAME:OPTIONS, the extra `cli.py pocket pretrain` options of one variant:
#   bash benchmarks/device/pocket_variants.sh "compl:--loss completion --doc-fraction 0" "full:"
# Variants train side by side on the one GPU (the 6 M model leaves it mostly idle) and share
# the CPU cores for their seed data. Run from the repository root with .whl and .whl_app
# installed (README, "GPU"). Results go to $OUT.
set -u
OUT=${OUT:-runs/out}; mkdir -p "$OUT" runs
BASE=${BASE:-data/pocket/model}
TIME_LIMIT=${TIME_LIMIT:-200}            # training seconds per variant
PRETRAIN_TIMEOUT=${PRETRAIN_TIMEOUT:-$((TIME_LIMIT + 250))}  # + seed data, tokenizing, saving
# Worlds for the year probe: pretrain seed S trains on worlds 100000 + S * 1000000 + i, so
# keep these clear of every variant's --seed (and of the base model's: 0, 1, 3).
PROBE_SEEDS=${PROBE_SEEDS:-"9100000 9100001"}
WORKERS=$(( 16 / ($# > 0 ? $# : 1) ))
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"

judge() {  # $1: model dir, $2: tag; the eval first: the probe is the one that may run out of time
  [ -f "$1/model.safetensors" ] || return 0
  timeout 200 python3 cli.py --db "sqlite:///runs/eval_$2.db" eval --world pocket --split dev --limit 100 \
      --runs 3 --model "$1" -c 100 --json > "$OUT/eval_$2.json" 2> "$OUT/eval_$2.err"
  timeout 150 python3 benchmarks/analysis/year_copy.py seed "$1" $PROBE_SEEDS > "$OUT/year_copy_$2.txt" 2>&1
}

pids=()
for spec in "$@"; do
  name=${spec%%:*}; opts=${spec#*:}
  ( timeout "$PRETRAIN_TIMEOUT" python3 cli.py pocket pretrain --out "runs/$name" --init-from "$BASE" \
        --workers "$WORKERS" --batch 256 --time-limit "$TIME_LIMIT" $opts > "$OUT/pretrain_$name.log" 2>&1
    echo "pretrain rc=$?" >> "$OUT/pretrain_$name.log"
    [ -f "runs/$name/model.safetensors" ] && tar czf "$OUT/$name.tgz" -C runs "$name"
    judge "runs/$name" "$name" ) &
  pids+=($!)
done
# The starting model is judged once the variants' CPU-bound seed data is done
# (JUDGE_BASE=0 skips it when its figures from an earlier call will do).
[ "${JUDGE_BASE:-1}" = 1 ] && { ( sleep "${BASE_DELAY:-120}"; judge "$BASE" base ) & pids+=($!); }
wait "${pids[@]}"
for f in "$OUT"/year_copy_*.txt; do echo "== $f"; grep -v Loading "$f" | tail -n 4; done
for f in "$OUT"/eval_*.json; do echo "== $f"; head -c 600 "$f"; echo; done
# Only a few files come back from a device call: one archive for the logs and figures.
(cd "$OUT" && shopt -s nullglob && files=(*.log *.json *.err year_copy_*.txt) &&
 tar czf results.tgz card.txt "${files[@]}" && rm -f "${files[@]}")

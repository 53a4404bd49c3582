#!/usr/bin/env bash
# One device call: warm-start a pocket model from scratch with the split-digit tokenizer
# (one token per digit), then evaluate it and the shipped model side by side on the same
# dev questions, greedy and sampled. Results go to $OUT. Run from the repository root with
# .whl and .whl_app installed (README, "GPU").
set -u
OUT=${OUT:-runs/out}; mkdir -p "$OUT" runs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
evaluate() {  # $1: model dir; greedy, then 3 sampled runs, on the same 100 dev questions
  local tag; tag=$(basename "$1")
  [ -f "$1/model.safetensors" ] || return 0
  [ "${GREEDY:-1}" = 1 ] && timeout 90 python3 cli.py --db sqlite:///runs/eval_$tag.db eval --world pocket \
      --split dev --limit 100 --model "$1" -c 100 --json > "$OUT/eval_${tag}_greedy.json" 2> "$OUT/eval_${tag}.err"
  timeout 90 python3 cli.py --db sqlite:///runs/eval_$tag.db eval --world pocket --split dev --limit 100 \
      --runs 3 --model "$1" -c 100 --json > "$OUT/eval_${tag}_runs3.json" 2>> "$OUT/eval_${tag}.err"
  cp runs/eval_$tag.db "$OUT/" 2>/dev/null
}
# The shipped model's eval overlaps the CPU-bound seed-data stage of the warm start.
SHIPPED=
if [ "${EVAL_SHIPPED:-1}" = 1 ]; then evaluate data/pocket/model & SHIPPED=$!; fi
# INIT_FROM=DIR continues DIR's training (its tokenizer) on worlds it never saw (seed 1).
MODEL=${MODEL:-runs/pocket_v3}
START="--split-digits"; [ -n "${INIT_FROM:-}" ] && START="--init-from $INIT_FROM --seed 1"
timeout ${PRETRAIN_TIMEOUT:-540} python3 cli.py pocket pretrain --out "$MODEL" $START \
    --worlds ${WORLDS:-1000} --epochs ${EPOCHS:-2.5} --batch ${BATCH:-256} --workers 16 \
    --time-limit ${TIME_LIMIT:-240} > "$OUT/pretrain.log" 2>&1
echo "pretrain rc=$?" >> "$OUT/pretrain.log"
[ -f "$MODEL/model.safetensors" ] && tar czf "$OUT/$(basename "$MODEL").tgz" -C "$(dirname "$MODEL")" "$(basename "$MODEL")"
[ -n "$SHIPPED" ] && wait $SHIPPED
evaluate "$MODEL"
ls -la "$OUT"

#!/usr/bin/env bash
# One device call (H100): the pocket learning benchmark, resumable across calls.
# State (the SQLite store and the adapters) lives in runs/bench; it is packed into $OUT at the
# end, even when the time limit cut the run, and a later call that carries runs/bench resumes.
set -u
OUT=${OUT:-runs/out}; mkdir -p "$OUT" runs/bench
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/card.txt"
timeout ${BENCH_TIMEOUT:-520} python3 benchmarks/pocket_improve.py --db sqlite:///runs/bench/pocket_improve.db \
    --workdir runs/bench/work --out "$OUT/pocket_improve.json" --plot "$OUT/pocket_improve.png" \
    --concurrency ${CONC:-128} "$@" > "$OUT/bench.log" 2>&1
echo "bench rc=$?" | tee -a "$OUT/bench.log"
tar czf "$OUT/bench_state.tgz" -C runs bench
grep -E "^iteration|^\{" "$OUT/bench.log" | cut -c1-300 | tail -30

#!/usr/bin/env bash
# One device call (H100/H200): the pocket learning benchmark, resumable across calls.
# State (the SQLite store and the adapters) lives in runs/bench (BENCH_STATE=runs/NAME for
# another, e.g. two arms side by side on one card); it is packed into $OUT at the end, even
# when the time limit cut the run, and a call that unpacks it again resumes.
# Two processes share the card: the loop (grow, rank, train, dev eval) and the test scoring of
# iterations the loop has finished (both are I/O- and Python-bound on a 6M model).
set -u
OUT=${OUT:-runs/out}; mkdir -p "$OUT" runs
STATE=${BENCH_STATE:-runs/bench}
# A carried archive (from an earlier call's $OUT) restores the default state folder only.
[ -f .carry/bench_state.tgz ] && [ ! -d runs/bench ] && tar xzf .carry/bench_state.tgz -C runs
mkdir -p "$STATE"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/card.txt"
ARGS=(--db sqlite:///$STATE/pocket_improve.db --workdir $STATE/work
      --concurrency ${CONC:-128} "$@")
T=${BENCH_TIMEOUT:-520}
timeout $T python3 benchmarks/pocket_improve.py "${ARGS[@]}" --stage improve \
    --out "$OUT/loop.json" > "$OUT/loop.log" 2>&1 &
LOOP=$!
END=$((SECONDS + T))
sleep 20
while kill -0 $LOOP 2>/dev/null && [ $((END - SECONDS)) -gt 30 ]; do  # score what is finished
  timeout $((END - SECONDS)) python3 benchmarks/pocket_improve.py "${ARGS[@]}" --stage test \
      --out "$OUT/pocket_improve.json" --plot "$OUT/pocket_improve.png" >> "$OUT/test.log" 2>&1
  echo "test pass rc=$?" >> "$OUT/test.log"; sleep 10
done
wait $LOOP; echo "loop rc=$?" >> "$OUT/loop.log"
# The pass that scores the iteration the loop finished last (the loop above stops with it).
timeout $((END - SECONDS > 20 ? END - SECONDS : 20)) python3 benchmarks/pocket_improve.py "${ARGS[@]}" \
    --stage test --out "$OUT/pocket_improve.json" --plot "$OUT/pocket_improve.png" >> "$OUT/test.log" 2>&1
echo "final test pass rc=$?" >> "$OUT/test.log"
# Where the time went (LLM calls per purpose), then drop the call log: it is most of the
# file, and the trajectories, steps and rankings that resuming needs stay.
STATE=$STATE python3 - > "$OUT/llm_calls.txt" <<'PY'
import os, sqlite3
db = sqlite3.connect(os.environ["STATE"] + "/pocket_improve.db")
print("purpose calls mean_s completion_tokens")
for row in db.execute("select purpose, count(*), round(avg(duration_s), 3), sum(completion_tokens) "
                      "from llm_calls group by purpose order by 2 desc"):
    print(*row)
print("engines", db.execute("select distinct json_extract(options, '$.engine') from llm_calls").fetchall())
db.execute("delete from llm_calls"); db.commit()
db.execute("PRAGMA wal_checkpoint(TRUNCATE)"); db.execute("VACUUM")
PY
tar czf "$OUT/bench_state.tgz" -C "$(dirname "$STATE")" "$(basename "$STATE")"
grep -h -E "^iteration|^\{|rc=" "$OUT/loop.log" "$OUT/test.log" | cut -c1-300 | tail -30

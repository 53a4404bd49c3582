#!/usr/bin/env bash
# One device call: several learning-benchmark arms side by side on one card, each in its own
# state folder (runs/b_NAME), e.g.
#   BENCH_TIMEOUT=540 bash benchmarks/device/pocket_improve_arms.sh \
#       "all:--grow-questions 500 --dev 100 --test 100 --eval-runs 3 --samples-for summarize=8" \
#       "guided:--grow-questions 500 --dev 100 --test 100 --eval-runs 3 --samples-for summarize=8 --grow-choose rules --trajectories clean"
# A call returns about eight files, so each arm comes back as its JSON result and one archive
# of its logs (the state archives stay on the machine: a call right after resumes them).
set -u
OUT=${OUT:-runs/out}; mkdir -p "$OUT"
names=()
for arm in "$@"; do
  name=${arm%%:*}; args=${arm#*:}; names+=("$name")
  # shellcheck disable=SC2086  # the arm's arguments are meant to split
  OUT=/tmp/arm_$name BENCH_STATE=runs/b_$name bash benchmarks/device/pocket_improve.sh $args \
      > "/tmp/arm_$name.txt" 2>&1 &
done
wait
for name in "${names[@]}"; do
  cp "/tmp/arm_$name/pocket_improve.json" "$OUT/pi_$name.json" 2>/dev/null
  cp "/tmp/arm_$name.txt" "/tmp/arm_$name/run.txt"
  tar czf "$OUT/logs_$name.tgz" -C "/tmp/arm_$name" --exclude bench_state.tgz .
  echo "== $name"; tail -6 "/tmp/arm_$name.txt"
done

#!/usr/bin/env bash
# One device call (one H100): benchmarks/trajectory_bench.py's device plan, within about five
# minutes. The graph engine with its prefix cache, then without it (the same engine
# prefilling every prompt whole), at 32 concurrent trajectories of the Llama-3-8B architecture
# and 128 of SmolLM2-135M's; then transformers' anchors and the fixed 512 + 128 shape while
# time is left. Every part runs in its own process; the results file is rewritten after each,
# so a part cut short loses only itself.
#   bash benchmarks/device/trajectory.sh            -> $OUT/trajectory_bench.json, .log, card.txt
#   TRAJ_TINY=1 bash benchmarks/device/trajectory.sh  the same plan at CPU size (a smoke run)
# TRAJ_DEADLINE_S (default 270): no part runs past it; TRAJ_BUDGET_S (250): none starts after;
# TRAJ_PART_TIMEOUT (150): one part's limit; TRAJ_ONLY: trajectory_bench.py's --only.
set -u
PY=${PY:-python3}  # the interpreter (a venv's on a CPU machine)
OUT=${OUT:-runs/out}; mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -z "${PYTHONPATH:-}" ] && [ -d .whl ]; then  # a bare machine: the carried wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl .whl_app/*.whl && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/card.txt" 2>/dev/null
A=(--plan device --out "$OUT/trajectory_bench.json" --deadline-s "${TRAJ_DEADLINE_S:-270}"
   --budget-s "${TRAJ_BUDGET_S:-250}" --part-timeout "${TRAJ_PART_TIMEOUT:-150}")
[ -n "${TRAJ_TINY:-}" ] && A+=(--tiny)
[ -n "${TRAJ_ONLY:-}" ] && A+=(--only "$TRAJ_ONLY")
"$PY" benchmarks/trajectory_bench.py "${A[@]}" > "$OUT/trajectory_bench.log" 2>&1
rc=$?
grep -v -e '^{' -e 'ContinuousBatchingLogger' "$OUT/trajectory_bench.log" | tail -40
exit $rc

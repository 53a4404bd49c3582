#!/usr/bin/env bash
# Is a pocket warm-start candidate worth a learning-benchmark call? Two CPU checks, ~2 minutes:
#   1. year copying on three worlds no warm start trained on (year_copy.py's probe);
#   2. greedy exact match on the first N dev questions, overall and per question type.
# The shipped model is the baseline: run it on data/pocket/model on the same machine.
#
#   bash benchmarks/analysis/warmstart_verdict.sh MODEL_DIR [N=200]
set -eu
MODEL=${1:?usage: warmstart_verdict.sh MODEL_DIR [DEV_QUESTIONS]}
N=${2:-200}
PY=${PYTHON:-python3}
DB=$(mktemp -d)/verdict.db
$PY benchmarks/analysis/year_copy.py seed "$MODEL" 9100000 9100001 5100000
SUMMARY=$(RESTREACT_DB=$DB $PY cli.py eval --world pocket --split dev --limit "$N" -c 100 \
    --model "$MODEL" --json 2>/dev/null | tail -1)
echo "$SUMMARY"
RUN=$(echo "$SUMMARY" | $PY -c "import json, sys; print(json.load(sys.stdin)['run'])")
# headroom.py's pass@1 column is this greedy run's accuracy (one run, no greedy run beside it)
$PY benchmarks/analysis/headroom.py "$DB" eval "$RUN" | tail -5 | awk -F' [|] ' '{print $1 " | " $2 " questions | " $4 " exact"}'

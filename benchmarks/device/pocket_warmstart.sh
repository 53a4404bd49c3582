#!/usr/bin/env bash
# One device call (H100): continue the pocket warm start on fresh worlds, and meanwhile run
# the end-to-end check of the loop, `improve --iterations 1` with unsloth, on the shipped model.
# Results go to $OUT. Run from the repository root with the wheels installed (README, "GPU").
set -u
OUT=${OUT:-runs/out}; mkdir -p "$OUT" runs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
python3 -c "import torch, transformers, trl, peft, unsloth; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'unsloth', unsloth.__version__)" 2>&1 | tail -1 | tee -a "$OUT/card.txt"

# The whole loop, one iteration, LoRA through unsloth (auto when CUDA + unsloth import).
( timeout 420 python3 cli.py --db sqlite:///runs/unsloth_improve.db improve \
    --world pocket --iterations 1 --name gpu-unsloth --samples 4 --grow-questions 48 \
    --eval-questions 100 --judge rules -c 48 --epochs 2 --lr 2e-4 --workdir runs/unsloth_improve \
    > "$OUT/improve_unsloth.log" 2>&1; echo "rc=$?" >> "$OUT/improve_unsloth.log" ) &
IMPROVE=$!

# More warm-start tokens, on worlds the shipped model never saw (seed 1), fp32 master weights.
timeout ${PRETRAIN_TIMEOUT:-470} python3 cli.py pocket pretrain --out runs/pocket_v2 --init-from data/pocket/model \
    --seed 1 --worlds ${WORLDS:-1000} --epochs ${EPOCHS:-2.5} --batch ${BATCH:-256} --workers 12 \
    --time-limit ${TIME_LIMIT:-340} > "$OUT/pretrain.log" 2>&1
echo "pretrain rc=$?" >> "$OUT/pretrain.log"
wait $IMPROVE
python3 cli.py --db sqlite:///runs/unsloth_improve.db logs --limit 3 > /dev/null 2>&1 || true
cp runs/unsloth_improve.db "$OUT/" 2>/dev/null
if [ -f runs/pocket_v2/model.safetensors ]; then
  timeout 100 python3 cli.py --db sqlite:///runs/eval_v2.db eval --world pocket --split dev --limit 100 \
      --model runs/pocket_v2 -c 100 --json > "$OUT/eval_v2_dev100.json" 2> "$OUT/eval_v2.err"
  tar czf "$OUT/pocket_v2.tgz" -C runs pocket_v2
fi
ls -la "$OUT"

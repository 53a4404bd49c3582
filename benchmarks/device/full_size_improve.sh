#!/usr/bin/env bash
# One device call (one H100 80GB): benchmarks/full_size_improve.py at the Llama-3-8B size, the
# bf16 path and then the 4-bit path, each in its own process and store, each under its own
# time limit. The random model is written once (runs/full_size_model, 16 GB) and shared.
#   bash benchmarks/device/full_size_improve.sh     -> $OUT/full_size_improve_bf16.json,
#        full_size_improve_4bit.json (every stage attempt's wall time and peak memory), card.txt,
#        gpu_memory_used.txt (each path's nvidia-smi peak), full_size_logs.tgz (both paths' logs)
#   FS_TINY=1 PY=.venv/bin/python bash benchmarks/device/full_size_improve.sh   CPU rehearsal
# FS_PATHS ("bf16 4bit"): which paths, in order; FS_TIMEOUT_S (260): each path's limit (a
# path that runs out gets SIGINT: the stage it was in is recorded as failed and its results
# file keeps what it finished); FS_ARGS: more arguments for both, e.g. "--grow-questions 24".
# One path at the default sizes is expected to take most of a 600 s call (not yet measured),
# so both do not fit one call: a second identical call while the machine is still warm
# (runs/ is kept) resumes each path where it stopped; or run one path a call,
# FS_PATHS=bf16 FS_TIMEOUT_S=560, then FS_PATHS=4bit FS_TIMEOUT_S=560.
# bitsandbytes is NOT in the device image (/work/.library/device/KINDS.md): the 4-bit path
# needs its wheel carried, .whl_gpu/bitsandbytes-*.whl (benchmarks/device/fetch_wheels.sh
# writes it); without it that path writes a results file saying it was skipped, and exits 2.
# The copy on the device has no git: put RESTREACT_COMMIT=<hash> in front of the command so
# the results record the commit they measured (benchmarks/provenance.py).
set -u
PY=${PY:-python3}  # the interpreter (a venv's on a CPU machine)
OUT=${OUT:-runs/out}; mkdir -p "$OUT" runs
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false \
    RESTREACT_CACHE=${RESTREACT_CACHE:-$PWD/runs/cache}
if [ -z "${PYTHONPATH:-}" ] && [ -d .whl ]; then  # a bare machine: the carried wheels
  bnb=$(ls .whl_gpu/bitsandbytes-*.whl 2>/dev/null)  # only bitsandbytes, not unsloth
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl .whl_app/*.whl $bnb && export PYTHONPATH=/tmp/site
fi
[ -n "${RESTREACT_COMMIT:-}" ] || git rev-parse HEAD >/dev/null 2>&1 \
  || echo "note: RESTREACT_COMMIT is unset and there is no git here: the results name no commit"
"$PY" -c "import bitsandbytes" 2>/dev/null || echo "note: bitsandbytes is missing: the 4-bit path will be skipped"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/card.txt" 2>/dev/null
TINY=(); S=""  # a rehearsal keeps its own model, stores and runs, apart from the full size's
[ -n "${FS_TINY:-}" ] && TINY=(--tiny) && S=_tiny
rc=0
for path in ${FS_PATHS:-bf16 4bit}; do
  A=(--db "runs/full_size_$path$S.db" --name "full-$path$S" --workdir "runs/full_size_work$S"
     --model-dir "runs/full_size_model$S" --out "$OUT/full_size_improve_$path.json" "${TINY[@]}")
  [ "$path" = 4bit ] && A+=(--4bit)
  echo "== $path path $(date +%T)" | tee -a "runs/full_size_$path$S.log"
  # The whole card's memory as nvidia-smi sees it (CUDA context and allocator cache included,
  # which the stage rows' torch.cuda.max_memory_allocated leave out), twice a second.
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 \
      > "runs/full_size_$path$S.smi" 2>/dev/null & smi=$!
  timeout -s INT -k 15 "${FS_TIMEOUT_S:-260}" "$PY" benchmarks/full_size_improve.py "${A[@]}" \
      ${FS_ARGS:-} >> "runs/full_size_$path$S.log" 2>&1
  r=$?; kill $smi 2>/dev/null
  echo "== $path path exit $r $(date +%T)" | tee -a "runs/full_size_$path$S.log"
  peak=$(sort -n "runs/full_size_$path$S.smi" | tail -1)
  echo "$path: nvidia-smi memory.used peak ${peak:-unknown (no nvidia-smi)} MiB" | tee -a "$OUT/gpu_memory_used.txt"
  [ $r -ne 0 ] && rc=$r
  grep -h -E "^iteration|^\{\"path|^error|Error" "runs/full_size_$path$S.log" | cut -c1-300 | tail -12
done
tar czf "$OUT/full_size_logs.tgz" runs/full_size_*.log 2>/dev/null  # the stores are too big to send
ls -la "$OUT"
exit $rc

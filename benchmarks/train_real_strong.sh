#!/usr/bin/env bash
# Second round of benchmarks/train_real.sh at a 5x higher learning rate (5e-4, LoRA): do the methods leave KL ~0.03?
# Same data, prompts and settings otherwise; the front uses the same eval prompts and seed (same reference/BoN draws).
set -euo pipefail
OUT=${1:-runs/real}
PA=${PA:-.venv/bin/paretoalign}
COMMON="max_length=256 progress=false seed=0"
run() {
  local name=$1; shift
  if [ -f "$OUT/$name/training.json" ]; then echo "skip $name (done)"; return; fi
  echo "== $name: $*"
  /usr/bin/time -v "$@" > "$OUT/logs/$name.log" 2>&1 || { tail -20 "$OUT/logs/$name.log"; exit 1; }
  grep -E "trained in|Maximum resident" "$OUT/logs/$name.log"
}
run dpo-lr5e-4 $PA dpo --output-dir "$OUT/dpo-lr5e-4" data=$OUT/pairs_helpful.jsonl max_pairs=128 batch_size=8 \
  learning_rate=5.0e-4 beta=0.1 $COMMON
run jbond-lr5e-4 $PA bond --output-dir "$OUT/jbond-lr5e-4" prompts=$OUT/prompts_train.jsonl max_new_tokens=48 \
  batch_size=4 $COMMON variant=jbond max_steps=30 anchor_ema=0.05 learning_rate=5.0e-4
# One front over both rounds (paired gains need every point on the same draws), in the background: the caller
# may run benchmarks/bench_train_memory.py meanwhile (front needs ~3 GB).
echo "== front (both rounds) -> $OUT/report-all (log: $OUT/logs/front-all.log)"
nohup $PA front --output "$OUT/report-all" --prompts "$OUT/prompts_eval.jsonl" --samples-per-prompt 4 \
  --max-new-tokens 48 --bon 2,4,8,16 --title "SmolLM2-135M-Instruct: training vs Best-of-N (default RM)" \
  --runs "$OUT/dpo" "$OUT/dpo-lr5e-4" "$OUT/modpo-a" "$OUT/modpo-b" "$OUT/modpo-c" "$OUT/jbond" \
         "$OUT/jbond-lr5e-4" "$OUT/warp/eta-0.25" "$OUT/warp/eta-0.5" "$OUT/warp/eta-1" \
  --names dpo dpo-lr5e-4 modpo-0.6/0.2/0.2 modpo-0.4/0.4/0.2 modpo-0.2/0.4/0.4 jbond jbond-lr5e-4 warp-eta0.25 \
          warp-eta0.5 warp-eta1 > "$OUT/logs/front-all.log" 2>&1 &

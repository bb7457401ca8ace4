#!/usr/bin/env bash
# Real training runs on SmolLM2-135M-Instruct (LoRA) with the default RM and ../shared/data HH-RLHF prompts, then the
# Pareto-front report against Best-of-N at N = 2, 4, 8, 16 on the same held-out prompts.
# Usage: bash benchmarks/train_real.sh [OUT]   (default runs/real; about 1.5 hours on 2 CPU cores)
# Needs the default RM at runs/default-rm (`paretoalign demo --skip-bon` trains it in ~2 minutes).
set -euo pipefail
OUT=${1:-runs/real}
PA=${PA:-.venv/bin/paretoalign}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT/logs"
test -f runs/default-rm/config.json || $PA demo --skip-bon
test -f "$OUT/pairs_helpful.jsonl" || $PY benchmarks/train_real_data.py --out "$OUT"

COMMON="max_length=256 progress=false seed=0"
ONLINE="prompts=$OUT/prompts_train.jsonl max_new_tokens=48 batch_size=4 $COMMON"
# Pairwise methods: 128 helpful-base pairs (train side), 16 steps of 8 pairs, LoRA r=16, lr 1e-4, beta 0.1.
PAIRWISE="data=$OUT/pairs_helpful.jsonl max_pairs=128 batch_size=8 learning_rate=1.0e-4 beta=0.1 $COMMON"

run() {  # name, command...
  local name=$1; shift
  if [ -f "$OUT/$name/training.json" ]; then echo "skip $name (done)"; return; fi
  echo "== $name: $*"
  /usr/bin/time -v "$@" > "$OUT/logs/$name.log" 2>&1 || { tail -20 "$OUT/logs/$name.log"; exit 1; }
  grep -E "trained in|Maximum resident" "$OUT/logs/$name.log"
}

run dpo $PA dpo --output-dir "$OUT/dpo" $PAIRWISE
# MODPO: helpfulness pairs (w_0), margins from the RM's harmlessness and honesty heads; three weightings.
run modpo-a $PA modpo --output-dir "$OUT/modpo-a" $PAIRWISE \
  "margin_objectives=[harmlessness,honesty]" "weights=[0.6,0.2,0.2]"
run modpo-b $PA modpo --output-dir "$OUT/modpo-b" $PAIRWISE \
  "margin_objectives=[harmlessness,honesty]" "weights=[0.4,0.4,0.2]"
run modpo-c $PA modpo --output-dir "$OUT/modpo-c" $PAIRWISE \
  "margin_objectives=[harmlessness,honesty]" "weights=[0.2,0.4,0.4]"
# J-BOND: 30 steps of 4 prompts, Best-of-2 of an EMA anchor (eta 0.05), beta 0.5, lr 1e-4.
run jbond $PA bond --output-dir "$OUT/jbond" $ONLINE variant=jbond max_steps=30 anchor_ema=0.05 learning_rate=1.0e-4
# WARP: 2 REINFORCE runs x 15 steps of 4 prompts x 4 samples, EMA anchor mu 0.05, kl_beta 0.05; SLERP; LITI grid.
run warp $PA warp --output-dir "$OUT/warp" $ONLINE max_steps=15 num_runs=2 samples_per_prompt=4 ema_rate=0.05 \
  kl_beta=0.05 learning_rate=1.0e-4 "eta_grid=[0.25,0.5,0.75,1.0]" liti_eta=0.5

echo "== front"
/usr/bin/time -v $PA front --output "$OUT/report" --prompts "$OUT/prompts_eval.jsonl" --samples-per-prompt 4 \
  --max-new-tokens 48 --bon 2,4,8,16 --title "SmolLM2-135M-Instruct: training vs Best-of-N (default RM)" \
  --runs "$OUT/dpo" "$OUT/modpo-a" "$OUT/modpo-b" "$OUT/modpo-c" "$OUT/jbond" \
         "$OUT/warp/eta-0.25" "$OUT/warp/eta-0.5" "$OUT/warp/eta-0.75" "$OUT/warp/eta-1" \
  --names dpo modpo-0.6/0.2/0.2 modpo-0.4/0.4/0.2 modpo-0.2/0.4/0.4 jbond warp-eta0.25 warp-eta0.5 warp-eta0.75 \
          warp-eta1 \
  > "$OUT/logs/front.log" 2>&1 || { tail -20 "$OUT/logs/front.log"; exit 1; }
grep -v "Command being\|^\s" "$OUT/logs/front.log" | tail -30

#!/usr/bin/env bash
# Online multi-objective alignment on SmolLM2-135M-Instruct (LoRA) with verifiable constraints (issue 13).
# Task: held-out HH-RLHF helpful-base prompts with a word limit and sometimes a required word attached
# (benchmarks/constrained_prompts.py); reward = constraint satisfaction (checkers) + the default RM's helpfulness.
# Usage: bash benchmarks/train_online.sh [OUT]     (default runs/online)
#   ONLY="grpo-fixed jbond" bash benchmarks/train_online.sh   trains only those runs (the front uses what exists).
#   Steps: grpo-fixed grpo-pama grpo-c90 grpo-hv grpo-grad grpo-fixed-s1 grpo-c10 jbond warp front mm-pooled mm-maxmin
#   front-maxmin
#   DEAL="2,2,4,5,4;4,2,4,5,4" sets the DeAL searches put on the front (beams,top_k,lookahead,lam,reward_every).
# Every run: 4 prompts x 4 samples per step, 128-token responses, LoRA r=16 (benchmarks/online/grpo_base.yaml).
# Cost on 2 CPU cores: about 43 s per GRPO step (PAMA: one extra backward per objective), so ~15 min per run.
set -euo pipefail
OUT=${1:-runs/online}
DEAL=${DEAL-"2,2,4,5,4;4,2,4,5,4"}
PA=${PA:-.venv/bin/paretoalign}
PY=${PY:-.venv/bin/python}
BASE=benchmarks/online/grpo_base.yaml
mkdir -p "$OUT/logs"
test -f "$OUT/prompts_train.jsonl" || $PY benchmarks/constrained_prompts.py --out "$OUT"
PROMPTS="prompts=$OUT/prompts_train.jsonl"
W50='rewards=[{name: constraints, checker: prompt_constraints, weight: 0.5}, {name: helpfulness, rm: helpfulness, weight: 0.5}]'
W90='rewards=[{name: constraints, checker: prompt_constraints, weight: 0.9}, {name: helpfulness, rm: helpfulness, weight: 0.1}]'
W10='rewards=[{name: constraints, checker: prompt_constraints, weight: 0.1}, {name: helpfulness, rm: helpfulness, weight: 0.9}]'

wanted() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
run() {  # name, command...
  local name=$1; shift
  wanted "$name" || return 0
  if [ -f "$OUT/$name/training.json" ]; then echo "skip $name (done)"; return; fi
  echo "== $name: $*"
  /usr/bin/time -v "$@" > "$OUT/logs/$name.log" 2>&1 || { tail -20 "$OUT/logs/$name.log"; exit 1; }
  grep -E "trained in|Maximum resident|Elapsed" "$OUT/logs/$name.log"
}

# GRPO, fixed weights 0.5/0.5 (normalise-then-sum), then the sweep points 0.9/0.1 and 0.1/0.9
run grpo-fixed $PA grpo --config $BASE --output-dir "$OUT/grpo-fixed" "$PROMPTS" "$W50"
run grpo-pama $PA grpo --config $BASE --output-dir "$OUT/grpo-pama" "$PROMPTS" "$W50" weighting=pama
run grpo-c90 $PA grpo --config $BASE --output-dir "$OUT/grpo-c90" "$PROMPTS" "$W90"
run grpo-hv $PA grpo --config $BASE --output-dir "$OUT/grpo-hv" "$PROMPTS" "$W50" weighting=hypervolume \
  scale_rewards=false
run grpo-grad $PA grpo --config $BASE --output-dir "$OUT/grpo-grad" "$PROMPTS" "$W50" weighting=gradient
# The 0.5/0.5 run again with another training seed (sampling and prompt order), to see run-to-run spread
run grpo-fixed-s1 $PA grpo --config $BASE --output-dir "$OUT/grpo-fixed-s1" "$PROMPTS" "$W50" seed=1
run grpo-c10 $PA grpo --config $BASE --output-dir "$OUT/grpo-c10" "$PROMPTS" "$W10"
# J-BOND: Best-of-2 of an EMA anchor on the same scalar reward (0.5/0.5), 20 steps of 4 prompts
run jbond $PA bond --output-dir "$OUT/jbond" "$PROMPTS" "$W50" variant=jbond max_steps=20 anchor_ema=0.05 \
  learning_rate=2.0e-4 max_new_tokens=128 max_length=256 batch_size=4 progress=false seed=0
# WARP: 2 REINFORCE runs x 10 steps of 4 prompts x 4 samples, SLERP, LITI grid
run warp $PA warp --output-dir "$OUT/warp" "$PROMPTS" "$W50" max_steps=10 num_runs=2 samples_per_prompt=4 \
  ema_rate=0.05 kl_beta=0.05 learning_rate=2.0e-4 max_new_tokens=128 max_length=256 batch_size=4 progress=false \
  "eta_grid=[0.5,1.0]" liti_eta=1.0 seed=0

if wanted front; then
echo "== front"
runs=(); names=()
for r in grpo-fixed grpo-fixed-s1 grpo-pama grpo-c90 grpo-hv grpo-grad grpo-c10 jbond warp; do
  if [ -f "$OUT/$r/training.json" ]; then runs+=("$OUT/$r/policy"); names+=("$r"); fi
done
/usr/bin/time -v $PA front --output "$OUT/report" --prompts "$OUT/prompts_eval.jsonl" --samples-per-prompt 4 \
  --max-new-tokens 128 --bon 2,4,8,16 --deal "$DEAL" --seed 1 --reward-model benchmarks/online/eval_rewards.yaml \
  --title "SmolLM2-135M-Instruct: constraint satisfaction vs helpfulness vs KL (held-out prompts)" \
  --runs "${runs[@]}" --names "${names[@]}" > "$OUT/logs/front.log" 2>&1 || { tail -20 "$OUT/logs/front.log"; exit 1; }
grep -v "Command being\|^\s" "$OUT/logs/front.log" | tail -30
fi

# MaxMin-RLHF with two user groups: H = 2 Bradley-Terry heads learned by EM from 6 helpful-base and 2 harmless-base
# HH-RLHF pseudo-annotators (benchmarks/maxmin_groups.py, MiniLM; h1 = the pooled head on the same pairs). Policy:
# GRPO on the pooled head vs GRPO with weighting=maxmin over the two group heads, on train-side prompts of both
# subsets; the front scores held-out prompts of both subsets with each group's head. Bradley-Terry heads are defined
# only up to a shift each, so the worst-served group is judged on standardised rewards (normalize: true): with raw
# rewards the head with the lower offset would always win, whoever is served worse.
MM=$OUT/maxmin
if wanted mm-pooled || wanted mm-maxmin || wanted front-maxmin; then
  test -f "$MM/h2/config.json" || $PY benchmarks/maxmin_groups.py --save-dir "$MM" --output "$MM/maxmin_groups.json"
fi
MMP="prompts=$MM/prompts_train.jsonl"
run mm-pooled $PA grpo --config $BASE --output-dir "$OUT/mm-pooled" "$MMP" "reward_model=$MM/h1" \
  'rewards=[{name: pooled, rm: group0}]'
run mm-maxmin $PA grpo --config $BASE --output-dir "$OUT/mm-maxmin" "$MMP" "reward_model=$MM/h2" \
  'rewards=[{name: group0, rm: group0, weight: 0.5}, {name: group1, rm: group1, weight: 0.5}]' weighting=maxmin \
  'weighting_params={normalize: true}'
if wanted front-maxmin && [ -f "$OUT/mm-pooled/training.json" ] && [ -f "$OUT/mm-maxmin/training.json" ]; then
  echo "== front-maxmin"
  /usr/bin/time -v $PA front --output "$OUT/report-maxmin" --prompts "$MM/prompts_eval.jsonl" --samples-per-prompt 4 \
    --max-new-tokens 128 --bon '' --seed 1 --reward-model "$MM/h2" --weights group0=0.5,group1=0.5 \
    --title "MaxMin-RLHF: each user group's reward (held-out prompts)" \
    --runs "$OUT/mm-pooled/policy" "$OUT/mm-maxmin/policy" --names mm-pooled mm-maxmin \
    > "$OUT/logs/front-maxmin.log" 2>&1 || { tail -20 "$OUT/logs/front-maxmin.log"; exit 1; }
  grep -v "Command being\|^\s" "$OUT/logs/front-maxmin.log" | tail -10
fi

#!/usr/bin/env bash
# Session 9: connector type and stacking factor, each trained from scratch (config_ablation.yaml: same data,
# same 250 steps, same batches), two runs at a time on the 2 cores (one thread each), then greedy WER on val.
#   .venv/bin/python recipes/asr/slam_tiny/prepare.py --sentences 6000 --jobs 2
#   bash recipes/asr/slam_tiny/ablate_connectors.sh [NAME ...]   (default: linear5 mlp5 linear10 qformer5; conv5, linear3 too)
# Session 10: a second phase for some of them, warm-started from their step-250 weights (fresh warmup + cosine
# over CONTINUE steps, data order seed 1 so the batches are new; identical for every name), then the same eval:
#   CONTINUE=400 bash recipes/asr/slam_tiny/ablate_connectors.sh linear5 linear10     (runs NAME_c400/)
# and a third phase from the second's weights, on a new batch order:
#   FROM=_c400 SEED=2 CONTINUE=300 bash recipes/asr/slam_tiny/ablate_connectors.sh linear5 linear10
# Session 11: the same two phases for the MLP and the Q-Former (EVAL=0 skips the val decode after a phase):
#   EVAL=0 CONTINUE=400 bash recipes/asr/slam_tiny/ablate_connectors.sh mlp5 qformer5
#   FROM=_c400 SEED=2 CONTINUE=300 bash recipes/asr/slam_tiny/ablate_connectors.sh mlp5 qformer5
set -euo pipefail
cd "$(dirname "$0")/../../.."
declare -A CONNECTOR=(
  [linear5]="{type: linear, stack: 5}"
  [linear3]="{type: linear, stack: 3}"
  [linear10]="{type: linear, stack: 10}"
  [mlp5]="{type: mlp, stack: 5, hidden_dim: 1024}"
  [conv5]="{type: conv, kernel_size: 7, stride: 5, hidden_dim: 1024}"
  [qformer5]="{type: qformer, window: 5, num_queries: 1, num_layers: 2, hidden_dim: 384, num_heads: 6}"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(linear5 mlp5 linear10 qformer5)
out=runs/asr/ablation
mkdir -p "$out"
export OMP_NUM_THREADS=1
train_eval() {  # RUN NAME [override ...]: train NAME's connector into $out/RUN, then greedy WER on val (never a test split)
  local run=$1 name=$2
  shift 2
  .venv/bin/speechllm train recipes/asr/slam_tiny/config_ablation.yaml "model.connector=${CONNECTOR[$name]}" \
    "run.out_dir=$out/$run" "$@" $( [ -f "$out/$run/last/train_state.pt" ] && echo --resume ) > "$out/$run.train.log" 2>&1
  [ "${EVAL:-1}" = 0 ] && return  # EVAL=0: the run's own dev loss and WER only
  .venv/bin/speechllm eval runs/data/synth_val/manifest.jsonl.gz --model "$out/$run/last" --num-beams 1 \
    --ctc-weight 0 --out "$out/eval/$run" > "$out/$run.eval.log" 2>&1
}
run_one() {  # NAME: from scratch
  train_eval "$1" "$1"
}
continue_one() {  # NAME: a further phase from NAME$FROM/last
  train_eval "$1${FROM:-}_c$CONTINUE" "$1" "run.init_from=$out/$1${FROM:-}/last" "run.seed=${SEED:-1}" \
    optim.warmup_steps=20 "optim.max_steps=$CONTINUE" "run.eval_every=$CONTINUE"
}
if [ -n "${CONTINUE:-}" ]; then
  job=continue_one
else
  job=run_one
  .venv/bin/speechllm train --cache-only recipes/asr/slam_tiny/config_ablation.yaml "run.out_dir=$out/cache" \
    > "$out/cache.log" 2>&1  # the encoder cache once, shared by every run
fi
for ((i = 0; i < ${#names[@]}; i += 2)); do  # two runs at a time
  $job "${names[i]}" &
  [ $((i + 1)) -lt ${#names[@]} ] && $job "${names[i + 1]}" &
  wait
done

#!/usr/bin/env bash
# Session 9: connector type and stacking factor, each trained from scratch (config_ablation.yaml: same data,
# same 400 steps, same batches), two runs at a time on the 2 cores (one thread each), then greedy WER on val.
#   .venv/bin/python recipes/asr/slam_tiny/prepare.py --sentences 6000 --jobs 2
#   bash recipes/asr/slam_tiny/ablate_connectors.sh [NAME ...]     (default: all; logs in runs/asr/ablation/)
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
[ ${#names[@]} -gt 0 ] || names=(linear5 mlp5 conv5 qformer5 linear3 linear10)
out=runs/asr/ablation
mkdir -p "$out"
export OMP_NUM_THREADS=1
run_one() {  # train, then greedy WER on the validation set (never a test split)
  local name=$1
  .venv/bin/speechllm train recipes/asr/slam_tiny/config_ablation.yaml "model.connector=${CONNECTOR[$name]}" \
    "run.out_dir=$out/$name" $( [ -f "$out/$name/last/train_state.pt" ] && echo --resume ) > "$out/$name.train.log" 2>&1
  .venv/bin/speechllm eval runs/data/synth_val/manifest.jsonl.gz --model "$out/$name/last" --num-beams 1 \
    --ctc-weight 0 --out "$out/eval/$name" > "$out/$name.eval.log" 2>&1
}
.venv/bin/speechllm train --cache-only recipes/asr/slam_tiny/config_ablation.yaml "run.out_dir=$out/cache" \
  > "$out/cache.log" 2>&1  # the encoder cache once, shared by every run
for ((i = 0; i < ${#names[@]}; i += 2)); do
  run_one "${names[i]}" &
  [ $((i + 1)) -lt ${#names[@]} ] && run_one "${names[i + 1]}" &
  wait
done

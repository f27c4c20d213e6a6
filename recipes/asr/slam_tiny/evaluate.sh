#!/usr/bin/env bash
# bash recipes/asr/slam_tiny/evaluate.sh [MODEL]   (default: the shipped speechllm-asr-tiny)
# Real held-out speech (test splits) + LibriSpeech test-clean text spoken by the held-out voice.
# Without NUM_BEAMS / CTC_WEIGHT the model decodes as its checkpoint recommends (speechllm-asr-tiny:
# beam 4 with its CTC head at weight 0.1, chosen on val) -> runs/eval/MODEL/SET.  Set them to compare:
#   NUM_BEAMS=1 CTC_WEIGHT=0 bash recipes/asr/slam_tiny/evaluate.sh   -> greedy, runs/eval/MODEL-b1-ctc0
set -euo pipefail
model=${1:-speechllm-asr-tiny}
out="runs/eval/$model"
flags=()
if [ -n "${NUM_BEAMS:-}" ] || [ -n "${CTC_WEIGHT:-}" ]; then
  flags=(--num-beams "${NUM_BEAMS:-4}" --ctc-weight "${CTC_WEIGHT:-0}")
  out="$out-b${NUM_BEAMS:-4}-ctc${CTC_WEIGHT:-0}"
fi
for set in an4:test ljspeech_sample en_vctk_4spk en_cmu_arctic_cathy_cc0 librispeech_samples:test-clean \
           runs/data/synth_test_awb/manifest.jsonl.gz; do
  name=$(basename "${set%%/manifest.jsonl.gz}" | tr ':' '_')
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/speechllm eval "$set" --model "$model" --batch-size 8 \
    "${flags[@]}" --out "$out/$name"
done

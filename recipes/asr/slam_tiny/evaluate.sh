#!/usr/bin/env bash
# bash recipes/asr/slam_tiny/evaluate.sh [MODEL]   (stage 4; default: the shipped speechllm-asr-tiny)
# Real held-out speech (test splits) + LibriSpeech test-clean text spoken by the held-out voice.
# NUM_BEAMS=4 bash recipes/asr/slam_tiny/evaluate.sh   -> beam search (chosen on val), runs/eval/MODEL-beam4
set -euo pipefail
model=${1:-speechllm-asr-tiny}
beams=${NUM_BEAMS:-1}
out="runs/eval/$model"
if [ "$beams" -gt 1 ]; then out="$out-beam$beams"; fi
for set in an4:test ljspeech_sample en_vctk_4spk en_cmu_arctic_cathy_cc0 librispeech_samples:test-clean \
           runs/data/synth_test_awb/manifest.jsonl.gz; do
  name=$(basename "${set%%/manifest.jsonl.gz}" | tr ':' '_')
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/speechllm eval "$set" --model "$model" --batch-size 8 \
    --num-beams "$beams" --out "$out/$name"
done

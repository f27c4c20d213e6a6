#!/usr/bin/env bash
# bash recipes/asr/baselines/run.sh   (from the repo root; writes runs/eval/<model>/<set>/)
# Pre-LLM (pocketsphinx) and end-to-end (Whisper tiny.en) baselines on every real held-out set.
# The cascade's transcript is Whisper's, so its ASR numbers equal Whisper's row.
set -euo pipefail
for model in whisper-tiny.en pocketsphinx; do
  for set in an4:test ljspeech_sample en_vctk_4spk en_cmu_arctic_cathy_cc0 librispeech_samples:test-clean; do
    .venv/bin/speechllm eval "$set" --model "$model" --batch-size 8
  done
done

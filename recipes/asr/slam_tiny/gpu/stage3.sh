#!/usr/bin/env bash
# GPU box, call 3 (carry .xfer/c; call 2 left gguf.b in /root/w): LLM, training under a time budget,
# then the checkpoints and logs into $OUT.  See README.md.
set -uo pipefail
W=/root/w
mkdir -p "${OUT:=/tmp/out}"
. "$W/tools/env.sh"
export PYTHONPATH="$PWD:$W/site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_MININTERVAL=30
L="${STAGE3_LIMIT:-480}"
timeout -s INT "$((L + 30))" python3 recipes/asr/slam_tiny/gpu/box.py train --xfer .xfer/c --work "$W" --deadline-s "$L" "$@" 2>&1 \
  | grep -v -E "Warning|warn\(" | tee "$OUT/stage3.log" | tail -25
cp "$W/run/log.jsonl" "$W/run/loss.png" "$OUT/" 2>/dev/null
# weights come back as fp16 (the fp32 files, 28 MB with the 4-layer CTC head, exceed what a call returns;
# export.py stores fp16 / int8 anyway)
for d in best last; do
  mkdir -p "$OUT/$d" && cp "$W/run/$d/config.yaml" "$OUT/$d/" 2>/dev/null
  python3 -c "import sys; from safetensors.torch import load_file, save_file; \
save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(sys.argv[1]).items()}, sys.argv[2])" \
    "$W/run/$d/model.safetensors" "$OUT/$d/model.safetensors" 2>/dev/null
done
grep -E '"dev_wer"|max_steps' "$W/run/log.jsonl" | cut -c1-200 | tail -12
ls -la "$OUT" "$OUT"/best "$OUT"/last

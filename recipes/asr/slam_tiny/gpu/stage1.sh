#!/usr/bin/env bash
# GPU box, call 1 (carry .xfer/a): tools, AN4 + synthetic speech, frozen-encoder cache.  See README.md.
set -euo pipefail
W=/root/w
mkdir -p "$W" "${OUT:=/tmp/out}"
cp -r .xfer/a/tools "$W/"
python3 -c "import tarfile, sys; [tarfile.open(f'$W/tools/{n}.tar.xz').extractall('$W/tools') for n in ('tts', 'wheels')]"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$W/site" "$W"/tools/wheels/*.whl
. "$W/tools/env.sh"
export PYTHONPATH="$PWD:$W/site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_MININTERVAL=20
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv,noheader || true
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())"
bash "$W/tools/check.sh" "$W/site" > "$OUT/check.log" 2>&1 || { tail -30 "$OUT/check.log"; exit 1; }
tail -3 "$OUT/check.log"
# the cache is incremental: if the limit cuts it short, the train stage builds the rest
timeout -s INT "${STAGE1_LIMIT:-230}" python3 recipes/asr/slam_tiny/gpu/box.py data --xfer .xfer/a --work "$W" "$@" 2>&1 \
  | grep -v -E "Warning|warn\(|MISSING|^decoder\.|newly initialized|^\s*$|^-+$" | tee "$OUT/stage1.log" | tail -40 || true
du -sh "$W"/data "$W"/run/encoder_cache 2>/dev/null || true

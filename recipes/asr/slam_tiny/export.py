"""Stage 3 of recipes/asr/slam_tiny: ship a trained checkpoint inside the package (fp16, a few MB).

    .venv/bin/python recipes/asr/slam_tiny/export.py runs/asr/slam_tiny/best
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from speechllm.api import ASSETS_DIR
from speechllm.model import SpeechLLM

if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/asr/slam_tiny/best")
    target = ASSETS_DIR / "asr-slam-tiny"
    SpeechLLM.from_pretrained(source).save_pretrained(target, dtype=torch.float16)
    print(target, sum(f.stat().st_size for f in target.iterdir()), "bytes")

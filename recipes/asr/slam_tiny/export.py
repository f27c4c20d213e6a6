"""Stage 3 of recipes/asr/slam_tiny: ship a trained checkpoint inside the package (a few MB): weight
matrices as int8 with one fp16 scale per row, the rest fp16 (``--weights fp16`` keeps every tensor fp16).

    .venv/bin/python recipes/asr/slam_tiny/export.py runs/asr/slam_tiny/best
    .venv/bin/python recipes/asr/slam_tiny/export.py BOX_RUN/best --out runs/candidates/gpu \\
        encoder.model=whisper-tiny.en llm.model=smollm2-135m-instruct   # a checkpoint trained elsewhere

Extra arguments are dotted overrides of the checkpoint's model config, e.g. to name the bundled models
where a GPU box saved its own paths.  The written config.yaml carries the overrides.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from speechllm.api import ASSETS_DIR
from speechllm.model import SpeechLLM

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("source", nargs="?", default="runs/asr/slam_tiny/best", type=Path)
    parser.add_argument("--out", type=Path, default=ASSETS_DIR / "asr-slam-tiny")
    parser.add_argument("--weights", choices=["int8", "fp16"], default="int8")
    args, overrides = parser.parse_known_args()
    SpeechLLM.from_pretrained(args.source, overrides).save_pretrained(args.out, dtype=torch.float16,
                                                                      int8=args.weights == "int8")
    print(args.out, sum(f.stat().st_size for f in args.out.iterdir()), "bytes")

"""Session 7: more synthetic training speech for the CPU recipe, with the Piper voice.

    .venv/bin/python recipes/asr/slam_tiny/synth_more.py [--start 12000 --stop 22000 --jobs 2]

Sentences ``start..stop`` of the same shuffled training list as prepare.py (evaluation sentences removed;
prepare.py's 12 000 are the prefix), spoken by a 14-slot voice rotation with the Piper voice in 4 slots
(the GPU runs never had Piper: its model does not travel) -> runs/data/synth_train2.  ~16 min on 2 cores.
"""

from __future__ import annotations

import argparse
import logging

from speechllm.data.synth import build_synth_set
from speechllm.data.texts import load_texts

VOICES = ["piper:joe", "flite:slt", "espeak:en-us+m1", "flite:rms", "piper:joe", "espeak:en-gb-x-rp", "flite:kal",
          "espeak:en+f4", "piper:joe", "espeak:en-029", "flite:slt", "espeak:en-us+f2", "piper:joe", "espeak:en+m3"]

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", type=int, default=12000)
    parser.add_argument("--stop", type=int, default=22000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="runs/data/synth_train2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    texts = load_texts("train", shuffle_seed=0)  # the order prepare.py takes its prefix from
    result = build_synth_set(texts[args.start:args.stop], VOICES, args.out, jobs=args.jobs)
    print(result.manifest, len(result.cuts), "clips")

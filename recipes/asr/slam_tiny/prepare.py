"""Stage 1 of recipes/asr/slam_tiny: training manifests (run from the repo root).

    .venv/bin/python recipes/asr/slam_tiny/prepare.py --sentences 12000 --jobs 1

* real speech: AN4 train (948 utterances, 74 speakers);
* synthetic speech: natural training sentences from shared/data/tts_text (evaluation
  sentences removed), each spoken by one of the training voices in rotation; flite:awb is
  held out of training for the unseen-voice test.
* validation set: --val-sentences sentences of the tts_text *val* split (no training sentence), spoken by
  the training voices in rotation — for choosing between checkpoints (runs/data/synth_val); never trained on.
* synthetic test set: --test-sentences LibriSpeech test-clean transcripts (a fixed random
  subset) spoken by the held-out voice flite:awb — evaluation only.
Outputs under runs/data/ (git-ignored); re-runs synthesize only what is missing.
"""

from __future__ import annotations

import argparse
import logging
import random

from speechllm.data.importers import import_shared, shared_data_dir
from speechllm.data.manifest import save_manifest
from speechllm.data.synth import TRAIN_VOICES, build_synth_set
from speechllm.data.texts import load_texts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=12000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--test-sentences", type=int, default=300)
    parser.add_argument("--val-sentences", type=int, default=300)
    parser.add_argument("--out", default="runs/data")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    save_manifest(import_shared("an4", split="train"), f"{args.out}/an4_train.jsonl.gz", relative=False)
    texts = load_texts("train", shuffle_seed=0)  # LibriTTS / LJ / VCTK sentences mixed before taking a prefix
    build_synth_set(texts[: args.sentences], list(TRAIN_VOICES), f"{args.out}/synth_train", jobs=args.jobs)
    val = load_texts("val", shuffle_seed=0)
    build_synth_set(val[: args.val_sentences], list(TRAIN_VOICES), f"{args.out}/synth_val", jobs=args.jobs,
                    split="val")
    lines = (shared_data_dir() / "librispeech_test_transcripts" / "test-clean.trans.txt").read_text().splitlines()
    test = [line.split(" ", 1)[1] for line in lines if " " in line]
    random.Random(0).shuffle(test)
    build_synth_set(test[: args.test_sentences], ["flite:awb"], f"{args.out}/synth_test_awb", jobs=args.jobs,
                    split="test", exclude_eval=False, allow_held_out=True)


if __name__ == "__main__":
    main()

"""A real-speech dev set for choosing decoding settings: the 40 unlabelled LibriSpeech train-clean-100 clips
in ../shared/data/librispeech_samples (20 F / 20 M speakers, 8.6 min), labelled by Whisper tiny.en (beam 4).

    .venv/bin/python recipes/asr/slam_tiny/pseudo_dev.py      # -> runs/data/ls40_pseudo/manifest.jsonl.gz

Not a test set (train-clean-100, no reference transcripts): WER against it measures disagreement with
Whisper tiny.en, which errs itself (6.9% WER on the 4 LibriSpeech test-clean samples), so it ranks
settings, it does not report accuracy.  Used in session 7 to choose max_segment_seconds: every test set stays untouched until then.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from speechllm import api
from speechllm.data.importers import import_shared
from speechllm.data.manifest import make_cut, save_manifest

OUT = Path("runs/data/ls40_pseudo/manifest.jsonl.gz")

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=OUT)
    out = parser.parse_args().out
    cuts = [c for c in import_shared("librispeech_samples") if c.supervisions[0].text is None]
    paths = [c.recording.sources[0].source for c in cuts]
    texts = api.transcribe(paths, model="whisper-tiny.en", num_beams=4)
    save_manifest([make_cut(c.id, p, text=t.strip(), speaker=c.supervisions[0].speaker, split="dev-pseudo")
                   for c, p, t in zip(cuts, paths, texts)], out, relative=False)
    print(out, len(cuts), "clips,", sum(len(t.split()) for t in texts), "words")

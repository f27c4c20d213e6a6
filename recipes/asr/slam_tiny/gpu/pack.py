"""Pack what a bare GPU box needs for recipes/asr/slam_tiny/gpu (run here, from the repo root).

A lent GPU machine has PyTorch but none of our pip packages, no TTS engines, no network, and
takes at most 64 MiB per call, so the inputs travel in three parts (git-ignored ``.xfer/``):

* ``.xfer/a``: ``tools/`` (py3.12 wheels, flite + espeak-ng runtime, ``env.sh``), the Whisper
  tiny.en *encoder* weights (fp16, exact: the bundled CTranslate2 model is fp16), AN4 train as
  Opus (~35 kbit/s; the only real training speech) and the training sentences;
* ``.xfer/b``, ``.xfer/c``: the bundled SmolLM2 GGUF in two pieces.

    .venv/bin/python recipes/asr/slam_tiny/gpu/pack.py --sentences 30000
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from speechllm.data.importers import import_shared
from speechllm.data.manifest import load_cut_audio, meta_of
from speechllm.data.texts import load_texts
from speechllm.embedded import resolve_model
from speechllm.embedded.smollm2 import gguf_path

SPLIT_AT = 50_000_000  # bytes of the GGUF in part b (each call carries the working tree too: ~12 MB, 64 MiB in all)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentences", type=int, default=30000)
    parser.add_argument("--out", default=".xfer")
    args = parser.parse_args()
    out = Path(args.out)
    a = out / "a"
    # training sentences: the same shuffled prefix as prepare.py (evaluation sentences already removed)
    texts = load_texts("train", shuffle_seed=0)
    with gzip.open(a / "sentences.txt.gz", "wt") as f:
        f.write("\n".join(texts[: args.sentences]) + "\n")
    # Whisper encoder weights only (the decoder is not used by the Speech LLM)
    whisper = Path(resolve_model("whisper-tiny.en"))
    target = a / "whisper-tiny.en"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "processor_config.json", "generation_config.json"):
        shutil.copy(whisper / name, target / name)
    weights = load_file(str(whisper / "model.safetensors"))
    encoder = {k: v.to(torch.float16) for k, v in weights.items() if "encoder" in k}
    save_file(encoder, str(target / "encoder.fp16.safetensors"))
    # AN4 train as Opus + a TSV of id, speaker, gender, text
    an4 = a / "an4"
    an4.mkdir(exist_ok=True)
    rows = []
    for cut in import_shared("an4", split="train"):
        meta = meta_of(cut)
        sf.write(an4 / f"{cut.id}.opus", load_cut_audio(cut, 16000), 16000, format="OGG", subtype="OPUS",
                 compression_level=0.9)
        rows.append({"id": cut.id, "text": meta["text"], "speaker": cut.supervisions[0].speaker,
                     "gender": cut.supervisions[0].gender})
    (an4 / "index.json").write_text(json.dumps(rows))
    # the LLM, in two parts
    blob = gguf_path().read_bytes()
    for part, chunk in (("b", blob[:SPLIT_AT]), ("c", blob[SPLIT_AT:])):
        (out / part).mkdir(parents=True, exist_ok=True)
        (out / part / f"gguf.{part}").write_bytes(chunk)
    for part in ("a", "b", "c"):
        size = sum(p.stat().st_size for p in (out / part).rglob("*") if p.is_file())
        print(f"{out / part}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()

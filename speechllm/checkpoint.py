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


def save_checkpoint(model, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write a checkpoint atomically: an interrupted save never leaves a half folder.

    ``dtype`` (e.g. torch.float16) stores floating weights smaller, for shipping; they are
    cast back to the model's dtypes on load."""
    from speechllm.paths import atomic_directory

    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        write_checkpoint(model, tmp, dtype)
    return directory


def write_checkpoint(model, folder: Path, dtype: torch.dtype | None = None,
                     state: dict[str, torch.Tensor] | None = None) -> None:
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
    save_yaml(model.config, folder / CONFIG_FILE)
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    meta = {"format_version": FORMAT_VERSION, "parameters": model.parameter_counts(),
            "saved_tensors": len(state), "saved_parameters": sum(v.numel() for v in state.values())}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    log.info("saved %d tensors (%d parameters) to %s", len(state), meta["saved_parameters"], folder)


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
    to the model's function.
    Returns the names of those kept weights."""
    directory = Path(directory)
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise ConfigError(f"{directory / WEIGHTS_FILE}: unreadable weights ({err})") from None
    expected = set(model.saved_state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    head_is_new = new_head_ok and not any(k.startswith("ctc_head.") for k in state)
    kept = [k for k in missing if (new_lora_ok and "lora_" in k) or (head_is_new and k.startswith("ctc_head."))]
    missing = [k for k in missing if k not in kept]
    if missing or unexpected:
        raise ConfigError(f"{directory}: weights do not match the config (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]})")
    own = model.state_dict()
    for name, tensor in state.items():
        if own[name].shape != tensor.shape:
            raise ConfigError(f"{directory}: {name} has shape {tuple(tensor.shape)}, model expects {tuple(own[name].shape)}")
    if copy is not None:
        copy(model, state)
        return kept
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
    return kept

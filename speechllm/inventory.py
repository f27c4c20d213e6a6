"""What is available: registered components, named and embedded models, checkpoints on
disk (``speechllm models``), and a checkpoint's self-description (``speechllm info``)."""

from __future__ import annotations

import json
from pathlib import Path



def inventory(search: list[Path]) -> dict[str, list[dict]]:
    import speechllm.connectors  # noqa: F401  (registers)
    import speechllm.encoders  # noqa: F401
    import speechllm.llms  # noqa: F401
    from speechllm.api import NAMED_MODELS
    from speechllm.embedded import EMBEDDED_MODELS
    from speechllm.paths import cache_dir, package_dir
    from speechllm.registry import CONNECTORS, ENCODERS, LLMS

    components = [{"registry": r.kind, "type": name} for r in (ENCODERS, CONNECTORS, LLMS) for name in r.names()]
    named = [{"name": n, "description": d} for n, (d, _) in NAMED_MODELS.items()]
    embedded = [
        {"name": m.name, "package": m.package,
         "status": "cached" if (cache_dir() / m.name).is_dir()
         else ("installed" if package_dir(m.package.replace("-", "_")) else "missing"),
         "description": m.description}
        for m in EMBEDDED_MODELS.values()
    ]
    return {"components": components, "models": named, "embedded": embedded,
            "checkpoints": [{"path": str(p)} for p in find_checkpoints(search)]}


def find_checkpoints(roots: list[Path]) -> list[Path]:
    from speechllm.checkpoint import CONFIG_FILE, is_checkpoint

    found = []
    for root in roots:
        if root.is_dir():
            found += [p.parent for p in sorted(root.rglob(CONFIG_FILE)) if is_checkpoint(p.parent)]
    return found


def describe_checkpoint(directory: Path) -> dict:
    from safetensors import safe_open

    from speechllm.checkpoint import META_FILE, WEIGHTS_FILE, read_checkpoint_config
    from speechllm.config import to_dict

    config = read_checkpoint_config(directory)  # validates the config against the schema
    meta = json.loads((directory / META_FILE).read_text()) if (directory / META_FILE).exists() else {}
    with safe_open(str(directory / WEIGHTS_FILE), framework="pt") as f:
        tensors = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    return {"path": str(directory), "config": to_dict(config), "meta": meta,
            "weights_bytes": (directory / WEIGHTS_FILE).stat().st_size,
            "tensors": tensors}

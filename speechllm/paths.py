"""Where speechllm keeps things on disk: the model cache (converted embedded models)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def cache_dir() -> Path:
    """The cache root: ``$SPEECHLLM_CACHE``, else ``$XDG_CACHE_HOME/speechllm``, else ``~/.cache/speechllm``."""
    if os.environ.get("SPEECHLLM_CACHE"):
        root = Path(os.environ["SPEECHLLM_CACHE"])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "speechllm"
    else:
        root = Path.home() / ".cache" / "speechllm"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces ``target`` only if the block succeeds.

    An interrupted conversion therefore never leaves a half-written cache entry behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (some data-only
    packages import heavy dependencies in their ``__init__``)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])

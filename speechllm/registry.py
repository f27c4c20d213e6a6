"""Component registries: encoders, connectors and LLM back-ends.

Each entry is one module holding a config dataclass (with a ``type`` string) and a build
function.  A component is chosen in config by ``type: whisper`` — never by a dotted import
path and never by matching substrings of a model id (the SLAM-LLM if-chain we avoid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Generic, TypeVar

C = TypeVar("C")


@dataclass
class ComponentConfig:
    """Base of every component config; ``type`` selects the registry entry."""

    type: str = ""
    registry: ClassVar["Registry | None"] = None


class Registry(Generic[C]):
    """Maps a ``type`` name to (config class, build function)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, tuple[type, Callable[..., Any]]] = {}

    def register(self, name: str, config_cls: type) -> Callable[[Callable[..., C]], Callable[..., C]]:
        def wrap(build: Callable[..., C]) -> Callable[..., C]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = (config_cls, build)
            return build

        return wrap

    def names(self) -> list[str]:
        return sorted(self._entries)

    def config_class(self, name: str) -> type:
        return self._entry(name)[0]

    def build(self, config: Any, **kwargs: Any) -> C:
        return self._entry(config.type)[1](config, **kwargs)

    def _entry(self, name: str) -> tuple[type, Callable[..., Any]]:
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} type {name!r}; registered: {', '.join(self.names())}")
        return self._entries[name]


ENCODERS: Registry = Registry("encoder")
CONNECTORS: Registry = Registry("connector")
LLMS: Registry = Registry("llm")

"""A reader for CTranslate2's binary ``model.bin``, without the ctranslate2 package.

The layout follows ``ModelSpec._serialize`` in CTranslate2's
``python/ctranslate2/specs/model_spec.py`` and ``Model::load`` in ``src/models/model.cc``
(binary versions 4 to 6; all little-endian)::

    uint32 binary_version
    string spec_name            # e.g. "WhisperSpec"
    uint32 spec_revision
    uint32 num_variables
    num_variables x {
        string name             # e.g. "encoder/layer_0/self_attention/linear_0/weight"
        uint8  rank
        uint32 dims[rank]
        uint8  dtype_id         # index into _DTYPES (include/ctranslate2/types.h DataType)
        uint32 num_bytes
        bytes  data[num_bytes]  # C order
    }
    uint32 num_aliases
    num_aliases x { string alias; string target }

where ``string`` is a uint16 length that counts a trailing NUL, then the UTF-8 bytes and
the NUL. CTranslate2 writes an alias instead of a second copy when two variables are equal
(e.g. Whisper's decoder output projection and its token embedding).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Order of CTranslate2's DataType enum; bfloat16 has no numpy dtype, so it is read as
# uint16 bit patterns and widened to float32 (see _bfloat16_to_float32).
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NUMPY_DTYPES = {
    "float32": np.dtype("<f4"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
}
# Version 4 introduced dtype ids (earlier files store an item size instead); 6 is the
# newest CTranslate2 writes. Anything else is not a layout we know how to read.
SUPPORTED_BINARY_VERSIONS = range(4, 7)


@dataclass
class CT2Model:
    """The content of one ``model.bin``.

    ``variables`` maps every name, aliases included, to a numpy array. Arrays of stored
    variables are read-only views into the file's bytes; an alias shares its target's array.
    """

    path: Path
    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)


class _Cursor:
    """Reads little-endian fields from a byte buffer, failing with the file name on truncation."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, num_bytes: int, what: str) -> memoryview:
        end = self.pos + num_bytes
        if end > len(self.data):
            raise ValueError(
                f"{self.path}: truncated CTranslate2 model file: needed {num_bytes} bytes for "
                f"{what} at offset {self.pos}, only {len(self.data) - self.pos} left"
            )
        view = memoryview(self.data)[self.pos : end]
        self.pos = end
        return view

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def uint(self, fmt: str, what: str) -> int:
        return self.unpack(fmt, what)[0]

    def string(self, what: str) -> str:
        length = self.uint("H", f"length of {what}")  # counts the trailing NUL
        raw = bytes(self.take(length, what))
        if length == 0 or raw[-1] != 0:
            raise ValueError(f"{self.path}: {what} at offset {self.pos - length} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


def _bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32: shift the 16 stored bits into place."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _read_variable(cur: _Cursor, index: int) -> tuple[str, np.ndarray]:
    """Read one ``{name, rank, dims, dtype, num_bytes, data}`` record."""
    name = cur.string(f"name of variable {index}")
    rank = cur.uint("B", f"rank of {name!r}")
    shape = cur.unpack(f"{rank}I", f"shape of {name!r}") if rank else ()
    dtype_id = cur.uint("B", f"dtype of {name!r}")
    if dtype_id >= len(_DTYPES):
        raise ValueError(f"{cur.path}: variable {name!r} has unknown dtype id {dtype_id}")
    dtype_name = _DTYPES[dtype_id]
    num_bytes = cur.uint("I", f"byte count of {name!r}")
    expected = int(np.prod(shape, dtype=np.int64)) * _NUMPY_DTYPES[dtype_name].itemsize
    if num_bytes != expected:
        raise ValueError(
            f"{cur.path}: variable {name!r} {dtype_name}{list(shape)} should take {expected} bytes, "
            f"the file says {num_bytes}"
        )
    data = cur.take(num_bytes, f"data of {name!r}")
    array = np.frombuffer(data, dtype=_NUMPY_DTYPES[dtype_name]).reshape(shape)
    if dtype_name == "bfloat16":
        array = _bfloat16_to_float32(array)
    return name, array


def read_ct2_model(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` into numpy arrays, aliases resolved.

    Raises ``ValueError`` naming ``path`` when the binary version is unknown, the file is
    truncated, has trailing bytes, or an alias points to a missing variable.
    """
    path = Path(path)
    cur = _Cursor(path.read_bytes(), path)
    version = cur.uint("I", "binary version")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ValueError(
            f"{path}: not a CTranslate2 model.bin this reader knows: binary version {version}, "
            f"expected {SUPPORTED_BINARY_VERSIONS.start}..{SUPPORTED_BINARY_VERSIONS.stop - 1}"
        )
    spec_name = cur.string("spec name")
    spec_revision = cur.uint("I", "spec revision")
    num_variables = cur.uint("I", "variable count")
    variables = dict(_read_variable(cur, i) for i in range(num_variables))
    aliases = {}
    for i in range(cur.uint("I", "alias count")):
        alias, target = cur.string(f"alias {i}"), cur.string(f"target of alias {i}")
        aliases[alias] = target
    if cur.pos != len(cur.data):
        raise ValueError(f"{path}: {len(cur.data) - cur.pos} unexpected trailing bytes after the aliases")
    for alias, target in aliases.items():
        if target not in variables:
            raise ValueError(f"{path}: alias {alias!r} points to missing variable {target!r}")
        variables[alias] = variables[target]
    return CT2Model(path, version, spec_name, spec_revision, variables, aliases)

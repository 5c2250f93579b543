#!/usr/bin/env bash
# Set-up and main job: make .venv at the repository root with the package (editable, all three
# backends, test and oracle extras), then run the built-in cross-backend conformance cases.
set -euo pipefail
cd "$(dirname "$0")/.."

# espeak-ng speaks the test sentences that the transcription tests transcribe.
if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing espeak-ng (system package) ..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "note: espeak-ng is not installed; the speech tests will be skipped" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: this release is the CPU build on this machine's wheel store, while an
# unpinned torch would pull a multi-GB CUDA build from the index.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[all,dev,oracle]"

export TF_CPP_MIN_LOG_LEVEL=3
.venv/bin/wav2vec2 conformance

#!/usr/bin/env bash
# Set-up and main job: make .venv at the repository root with the package (editable, all three
# backends and every extra, test and oracle extras), then run the built-in cross-backend conformance cases.
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
# pyctcdecode (the reference's LM decoder) is only a test oracle. It declares numpy<2 and hypothesis<7,
# which it does not need; its real needs (numpy, pygtrie, kenlm) come with the oracle and audio extras.
.venv/bin/python -m pip install -q --no-deps "pyctcdecode==0.5.0"
.venv/bin/python -c "import numpy, jax, flax, keras, tensorflow as tf, torch; print(f'numpy {numpy.__version__}, jax {jax.__version__}, flax {flax.__version__}, keras {keras.__version__}, tensorflow {tf.__version__}, torch {torch.__version__}')"

export TF_CPP_MIN_LOG_LEVEL=3
.venv/bin/wav2vec2 conformance

# The demo model (wav2vec2/demo_model: trained here by scripts/train_demo.sh, docs/training.md)
# transcribes its examples, held-out sentences in held-out voices, in each backend: the same text.
for backend in torch tensorflow flax; do
  echo "demo model, $backend backend:"
  .venv/bin/wav2vec2 transcribe --model demo --backend "$backend" --no-progress wav2vec2/demo_model/examples/*.flac
done

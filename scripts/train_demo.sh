#!/usr/bin/env bash
# Train the demo CTC model (docs/training.md, "The demo model") and put it where
# wav2vec2.demo_model_path() / `--model demo` find it. About an hour on 2 quiet CPU cores.
#
#   bash scripts/train_demo.sh [CORPUS_DIR] [RUN_DIR] [MAX_STEPS]
#
# CORPUS_DIR (default /tmp/wav2vec2-demo/corpus) is made with scripts/make_corpus.py when it holds no
# train.jsonl; RUN_DIR (default /tmp/wav2vec2-demo/run) keeps the log and checkpoints, so the same
# command resumes an interrupted run. MAX_STEPS (default 20000) should be set from a measured step
# time so that the run fits the hour.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
corpus="${1:-/tmp/wav2vec2-demo/corpus}"
run="${2:-/tmp/wav2vec2-demo/run}"
steps="${3:-20000}"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

if [ ! -f "$corpus/train.jsonl" ]; then
  "$python" "$here/scripts/make_corpus.py" --output "$corpus" --seed 0 --jobs 2
fi

# Config E of the feasibility study: a learnable filter bank (25 ms windows every 10 ms), one conv
# to 50 frames a second, a 192 x 4 pre-norm encoder; no dropout, light SpecAugment.
mkdir -p "$run"
"$python" - "$run/demo_config.json" <<'PY'
import json, sys
from wav2vec2 import Wav2Vec2Config
config = Wav2Vec2Config(
    conv_dim=(128, 256), conv_kernel=(400, 5), conv_stride=(160, 2), conv_bias=True,
    feat_extract_norm="layer", do_stable_layer_norm=True,
    hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768,
    num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=16,
    hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
    final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.05, mask_time_length=5,
    ctc_loss_reduction="mean", ctc_zero_infinity=True,
)
json.dump(config.to_dict(), open(sys.argv[1], "w"), indent=2)
PY

resume=()
[ -f "$run/log.jsonl" ] && resume=(--resume)
"$python" -m wav2vec2 train --backend torch --model "$run/demo_config.json" \
  --train "$corpus/train.jsonl" --eval "$corpus/eval.jsonl" --output "$run" \
  --max-steps "$steps" --batch-seconds 16 --lr 2e-3 --warmup-steps 300 --max-grad-norm 1.0 \
  --eval-every 1000 --save-every 500 "${resume[@]}"

"$python" -m wav2vec2 evaluate --model "$run" --data "$corpus/test.jsonl"

# The model alone (config, weights, processor files) becomes the demo model.
demo="$here/wav2vec2/demo_model"
staged="$demo.staged"
rm -rf "$staged" && mkdir -p "$staged"
for f in config.json model.safetensors preprocessor_config.json vocab.json tokenizer_config.json special_tokens_map.json; do
  cp "$run/$f" "$staged/"
done
# Its examples: the first three test utterances (held-out sentences in held-out voices), which the
# set-up's main job transcribes in every backend.
"$python" - "$corpus" "$staged/examples" <<'PY'
import json, os, shutil, sys
corpus, examples = sys.argv[1:]
os.makedirs(examples)
with open(os.path.join(corpus, "test.jsonl")) as rows, open(os.path.join(examples, "examples.jsonl"), "w") as out:
    for line in list(rows)[:3]:
        row = json.loads(line)
        name = os.path.basename(row["audio"])
        shutil.copy(os.path.join(corpus, row["audio"]), os.path.join(examples, name))
        out.write(json.dumps({"audio": name, "text": row["text"], "voice": row["voice"]}) + "\n")
PY
rm -rf "$demo" && mv "$staged" "$demo"
echo "demo model in $demo"

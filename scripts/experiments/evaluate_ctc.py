"""Throwaway: CER/WER of a train_ctc.py checkpoint (.pt) on a manifest, greedy decoding.

    python scripts/experiments/evaluate_ctc.py --checkpoint /tmp/C.pt --config c32-64-128-256_h192x4 \
        --manifest /work/corpus/espeak/test.jsonl
"""
import argparse
import json
import sys

import torch

from wav2vec2 import Wav2Vec2Config
from wav2vec2.backends.torch import Wav2Vec2ForCTC
from wav2vec2.feature_extraction import Wav2Vec2FeatureExtractor
from wav2vec2.training import batching, data, vocabulary

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from step_time import COMMON, CONFIGS  # noqa: E402
from train_ctc import evaluate  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--override", default="{}")
    parser.add_argument("--corpus", default="/work/corpus/espeak")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # the vocabulary train_ctc.py built: from the training transcripts
    texts = [json.loads(line)["text"] for line in open(f"{args.corpus}/train.jsonl")]
    vocab = vocabulary.build_vocabulary(texts)
    config = Wav2Vec2Config(**{**COMMON, **CONFIGS[args.config], **json.loads(args.override), "vocab_size": len(vocab)})
    model = Wav2Vec2ForCTC(config)
    saved = torch.load(args.checkpoint, weights_only=False)
    model.load_state_dict(saved["model"])
    tokenizer = vocabulary.ctc_tokenizer(vocab)
    collator = batching.Collator(config, Wav2Vec2FeatureExtractor(return_attention_mask=True), "ctc", tokenizer=tokenizer)
    examples = data.read_dataset(args.manifest).examples
    cer, wer, hyp, ref = evaluate(model, examples, collator, config, tokenizer)
    print(json.dumps(dict(checkpoint=args.checkpoint, step=saved["step"], manifest=args.manifest, examples=len(examples),
                          cer=round(cer, 4), wer=round(wer, 4), hyp=hyp, ref=ref)))


if __name__ == "__main__":
    main()

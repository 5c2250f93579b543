"""Throwaway: train a small CTC model from scratch on the espeak corpus for a few minutes.

    python scripts/experiments/train_ctc.py --corpus /work/corpus/espeak --config c32-64-128-256_h192x4 \
        --lr 1e-3 --batch-seconds 16 --minutes 10 --log /tmp/run.jsonl

Logs one JSON line per eval: step, wall minutes, hours of audio seen, train loss, CER/WER on a fixed
eval subset (greedy decoding). Replaced later by ``wav2vec2 train``; kept only to reproduce the
feasibility study in docs/training.md.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

from wav2vec2 import Wav2Vec2Config
from wav2vec2.backends.torch import Wav2Vec2ForCTC
from wav2vec2.feature_extraction import Wav2Vec2FeatureExtractor
from wav2vec2.training import batching, data, metrics, schedule, vocabulary

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from step_time import COMMON, CONFIGS  # noqa: E402


def evaluate(model, examples, collator, config, tokenizer):
    model.eval()
    hypotheses, references = [], []
    with torch.no_grad():
        for start in range(0, len(examples), 16):
            chunk = examples[start : start + 16]
            batch = collator(chunk, training=False)
            logits = model(torch.from_numpy(batch["input_values"]), attention_mask=torch.from_numpy(batch["attention_mask"])).logits.numpy()
            hypotheses += metrics.ctc_transcripts(logits, metrics.frame_lengths(config, batch), tokenizer)
            references += [e.text for e in chunk]
    model.train()
    return metrics.cer(references, hypotheses), metrics.wer(references, hypotheses), hypotheses[:2], references[:2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default="/work/corpus/espeak")
    parser.add_argument("--config", default="c32-64-128-256_h192x4")
    parser.add_argument("--override", default="{}", help="JSON of config overrides")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--total-steps", type=int, default=20000, help="for the linear decay")
    parser.add_argument("--batch-seconds", type=float, default=16.0)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--eval-minutes", type=float, default=2.0)
    parser.add_argument("--eval-size", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", required=True)
    parser.add_argument("--save", help="torch.save model+optimizer here at every eval; resumed from when it exists")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train = data.read_dataset(f"{args.corpus}/train.jsonl", task="ctc").examples
    eval_examples = data.read_dataset(f"{args.corpus}/eval.jsonl", task="ctc").examples[: args.eval_size]
    vocab = vocabulary.build_vocabulary(e.text for e in train)
    values = {**COMMON, **CONFIGS[args.config], **json.loads(args.override), "vocab_size": len(vocab)}
    config = Wav2Vec2Config(**values)
    model = Wav2Vec2ForCTC(config).train()
    hp = schedule.OptimizerSettings(learning_rate=args.lr, warmup_steps=args.warmup_steps, total_steps=args.total_steps)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=hp.learning_rate, betas=hp.betas, eps=hp.epsilon, weight_decay=hp.weight_decay
    )
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    tokenizer = vocabulary.ctc_tokenizer(vocab)
    collator = batching.Collator(config, extractor, "ctc", tokenizer=tokenizer)
    sampler = batching.LengthBucketSampler([e.seconds for e in train], args.batch_seconds, seed=args.seed)
    rng = np.random.default_rng(args.seed)

    start = time.time()
    train_seconds = eval_seconds = 0.0
    audio_seen, step, losses, next_eval = 0.0, 0, [], 0.0
    position = batching.Position()
    if args.save and os.path.exists(args.save):
        saved = torch.load(args.save, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        rng.bit_generator.state = saved["rng"]
        step, audio_seen, train_seconds = saved["step"], saved["audio_seen"], saved["train_seconds"]
        position = batching.Position.from_dict(saved["position"])
        next_eval = train_seconds / 60 + args.eval_minutes
        print(f"resumed at step {step}", flush=True)
    log = open(args.log, "a")
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.config} {params / 1e6:.2f}M params, vocab {len(vocab)}", flush=True)
    for position, indices in sampler.iterate(position):
        if train_seconds / 60 >= next_eval or train_seconds / 60 >= args.minutes:
            t0 = time.time()
            cer, wer, hyp, ref = evaluate(model, eval_examples, collator, config, tokenizer)
            eval_seconds += time.time() - t0
            row = dict(
                step=step, train_minutes=round(train_seconds / 60, 2), audio_hours=round(audio_seen / 3600, 3),
                loss=round(float(np.mean(losses)), 4) if losses else None, lr=schedule.learning_rate(hp, max(step, 1)),
                cer=round(cer, 4), wer=round(wer, 4), hyp=hyp[0], ref=ref[0],
            )
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(json.dumps(row), flush=True)
            losses = []
            next_eval += args.eval_minutes
            if args.save:
                torch.save(dict(
                    model=model.state_dict(), optimizer=optimizer.state_dict(), rng=rng.bit_generator.state,
                    step=step, audio_seen=audio_seen, train_seconds=train_seconds, position=position.to_dict(),
                ), args.save + ".tmp")
                os.replace(args.save + ".tmp", args.save)
            if train_seconds / 60 >= args.minutes:
                break
        t0 = time.time()
        chunk = [train[i] for i in indices]
        batch = collator(chunk, rng=rng)
        loss = model(
            torch.from_numpy(batch["input_values"]), attention_mask=torch.from_numpy(batch["attention_mask"]),
            labels=torch.from_numpy(batch["labels"]),
            mask_time_indices=None if batch["mask_time_indices"] is None else torch.from_numpy(batch["mask_time_indices"]),
            spec_augment_rng=rng,
        ).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
        for group in optimizer.param_groups:
            group["lr"] = schedule.learning_rate(hp, step + 1)
        optimizer.step()
        step += 1
        losses.append(float(loss.detach()))
        audio_seen += sum(e.seconds for e in chunk)
        train_seconds += time.time() - t0
        if not math.isfinite(float(loss)):
            print("non-finite loss", flush=True)


if __name__ == "__main__":
    main()

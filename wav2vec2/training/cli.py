"""``wav2vec2 train`` and ``wav2vec2 evaluate``: the command line of ``wav2vec2.training.api``.

Exit statuses (``wav2vec2.cli``): 2 for a bad option or model (an unknown preset, a checkpoint that
cannot be read, a vocabulary that does not fit, an output directory that holds another run);
1 for data that cannot be used (a missing manifest, no usable rows) or a failure while training;
0 otherwise. Bad rows are reported on stderr by line and skipped.

Under ``torchrun --nproc-per-node N -m wav2vec2 train --backend torch ...`` every process trains
its share of each batch (DDP, or FSDP with ``--fsdp``) and rank 0 alone writes.
"""
from __future__ import annotations

import argparse
import sys

from ..cli import InputError, UsageError, non_negative_float, positive_float, positive_int
from .data import TASKS, DataError

from .trainer import PRECISIONS


def _backends():
    from .api import BACKENDS

    return tuple(BACKENDS)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def add_arguments(parser) -> None:
    parser.add_argument("--backend", choices=_backends(), default="torch")
    parser.add_argument("--model", required=True,
                        help="a preset (base, large, large-lv60, xls-r-300m, mms-1b), a config .json, demo, or a "
                             "checkpoint directory or hub id to fine-tune")
    parser.add_argument("--train", required=True, metavar="DATA",
                        help="training data: a .jsonl/.csv/.tsv manifest (audio, text or label) or a datasets directory")
    parser.add_argument("--eval", default=None, metavar="DATA", help="evaluation data, scored every --eval-every updates")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="run directory: log.jsonl, checkpoint-<step>/, and at the end the trained model")
    parser.add_argument("--task", choices=TASKS, default="ctc")
    parser.add_argument("--vocab", default=None, metavar="FILE",
                        help="CTC vocabulary (vocab.json); default: the checkpoint's, else built from the training text")
    parser.add_argument("--max-steps", type=positive_int, default=1000, help="optimizer updates")
    parser.add_argument("--batch-seconds", type=positive_float, default=100.0,
                        help="seconds of (padded) audio per batch; longer utterances are skipped")
    parser.add_argument("--lr", type=positive_float, default=1e-4, help="peak learning rate of AdamW")
    parser.add_argument("--warmup-steps", type=_non_negative_int, default=None,
                        help="linear warm-up updates (default: a tenth of --max-steps, at most 500)")
    parser.add_argument("--weight-decay", type=non_negative_float, default=0.0)
    parser.add_argument("--max-grad-norm", type=positive_float, default=1.0, help="clip the gradients' global norm")
    parser.add_argument("--gradient-accumulation-steps", type=positive_int, default=1)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="bf16: bfloat16 compute, float32 weights, optimizer and losses")
    parser.add_argument("--fsdp", action="store_true",
                        help="torch under torchrun: shard parameters, gradients and optimizer state over the "
                             "processes (FSDP2) instead of replicating the model (DDP); needs LayerDrop 0")
    parser.add_argument("--freeze-feature-encoder", action="store_true",
                        help="do not train the conv feature encoder (the usual setting for fine-tuning)")
    parser.add_argument("--layerdrop", type=non_negative_float, default=None, help="override the config's LayerDrop")
    parser.add_argument("--eval-every", type=positive_int, default=None, help="evaluate every N updates (and at the end)")
    parser.add_argument("--save-every", type=positive_int, default=None, help="checkpoint every N updates (and at the end)")
    parser.add_argument("--log-every", type=positive_int, default=10)
    parser.add_argument("--keep-last", type=positive_int, default=2, help="checkpoints kept")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    parser.add_argument("--seed", type=_non_negative_int, default=0)
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events to DIR/tensorboard")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")


def run(args) -> int:
    from .api import ModelError, train

    overrides = {"layerdrop": args.layerdrop} if args.layerdrop is not None else None
    try:
        last = train(
            args.train, args.output, model=args.model, backend=args.backend, task=args.task, eval_data=args.eval,
            vocab=args.vocab, max_steps=args.max_steps, batch_seconds=args.batch_seconds, learning_rate=args.lr,
            warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
            gradient_accumulation_steps=args.gradient_accumulation_steps, precision=args.precision,
            freeze_feature_encoder=args.freeze_feature_encoder, eval_every=args.eval_every,
            save_every=args.save_every, log_every=args.log_every, keep_last=args.keep_last, resume=args.resume,
            seed=args.seed, tensorboard=args.tensorboard, progress=False if args.no_progress else None,
            fsdp=args.fsdp, config_overrides=overrides,
        )
    except ModelError as e:
        raise UsageError(str(e)) from None
    except DataError as e:
        raise InputError(str(e)) from None
    except FileExistsError as e:
        raise UsageError(f"{e}") from None
    except ValueError as e:  # settings that do not fit together, a run that cannot be resumed
        raise UsageError(str(e)) from None
    if last:
        print(f"trained to update {last.get('step')}: {_describe(last)}; model in {args.output}", file=sys.stderr)
    return 0


def _describe(record) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items() if k != "step")


# ------------------------------------------------------------------------------------ evaluate
def add_evaluate_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a trained checkpoint directory (or hub id)")
    parser.add_argument("--data", required=True, metavar="DATA", help="a manifest or datasets directory")
    parser.add_argument("--backend", choices=_backends(), default="torch")
    parser.add_argument("--task", choices=("ctc", "sequence-classification"), default=None,
                        help="default: ctc when the checkpoint has a vocabulary")
    parser.add_argument("--batch-seconds", type=positive_float, default=100.0)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")


def run_evaluate(args) -> int:
    from .api import ModelError, evaluate, write_metrics

    try:
        metrics = evaluate(args.model, args.data, backend=args.backend, task=args.task,
                           batch_seconds=args.batch_seconds, precision=args.precision)
    except ModelError as e:
        raise UsageError(str(e)) from None
    except DataError as e:
        raise InputError(str(e)) from None
    write_metrics(metrics)
    return 0


"""Training without a framework: everything but the tensor math, shared by every backend.

Modules (NumPy only; ``datasets``, ``jiwer`` and ``tensorboard`` are imported only when used):
  data        read_dataset(DATA, task) -> Dataset of Examples; bad rows skipped and named by line
  vocabulary  normalize_text, build_vocabulary (vocab.json layout), ctc_tokenizer, label_vocabulary
  batching    LengthBucketSampler (batches by seconds of audio, resumable Position), Collator
              (padding, attention mask, labels padded with -100, SpecAugment / pretraining masks
              and negatives from the spec layer, drawn from one numpy Generator)
  schedule    OptimizerSettings (AdamW, clipping, accumulation) and learning_rate(settings, step)
  metrics     wer, cer (jiwer), accuracy, evaluate_ctc, evaluate_classification
  run         log.jsonl, TensorBoard event files, atomic checkpoint-<step>/ directories, latest
  trainer     Trainer: the protocol a backend implements
  loop        fit(trainer, settings, data, collator, run_dir): the loop itself
  parallel    the arithmetic of a step every backend shares: data-parallel shards and loss weights,
              padding to fixed shapes, clipping, per-update seeds, the Gumbel temperature
  api         train(DATA, DIR, model=..., backend=...) and evaluate(DIR, DATA): the commands' library API
  cli         `wav2vec2 train` (cli_evaluate: `wav2vec2 evaluate`)

The trainers are wav2vec2.backends.{torch,tensorflow,flax}.training (TorchTrainer,
TensorFlowTrainer, FlaxTrainer); ``train`` picks one by ``backend``:

    from wav2vec2.training import train, evaluate
    train("corpus/train.jsonl", "runs/demo", model="base", backend="flax", eval_data="corpus/eval.jsonl",
          max_steps=2000, batch_seconds=100, learning_rate=1e-4)
    print(evaluate("runs/demo", "corpus/test.jsonl", backend="tensorflow"))   # {"wer": ..., "cer": ...}

A backend provides a ``Trainer`` (``wav2vec2.training.trainer``):

    class TorchTrainer:                       # e.g. in wav2vec2.backends.torch
        backend = "torch"
        def init(self, model, settings): ...              # AdamW from settings.optimizer
        def train_step(self, batches, learning_rate): ... # -> {"loss": ..., "grad_norm": ...}
        def logits(self, batch): ...                      # eval forward -> NumPy
        def state_dict(self): ...                         # optimizer + RNG as NumPy arrays
        def load_state_dict(self, state): ...
        def save_model(self, directory): ...              # config + weights, the backend's format
        def load_model(self, directory): ...

and ``fit`` does the rest:

    train = read_dataset("train.jsonl", "ctc", min_samples=min_input_length(config))
    tokenizer = ctc_tokenizer(build_vocabulary(e.text for e in train.examples))
    collator = Collator(config, Wav2Vec2FeatureExtractor(return_attention_mask=True), "ctc", tokenizer=tokenizer)
    trainer.init(model, settings)
    fit(trainer, settings, train, collator, "runs/demo", evaluate=..., write_processor=...)

Because batches, masks, negatives and learning rates are computed here from one seed, every
backend trains on the same numbers, and a resumed run on the same numbers as an uninterrupted one.
"""
from .batching import Collator, LengthBucketSampler, Position
from .data import BadRow, DataError, Dataset, Example, read_dataset
from .loop import TrainSettings, fit
from .schedule import OptimizerSettings, learning_rate
from .trainer import Trainer
from .vocabulary import build_vocabulary, ctc_tokenizer, label_vocabulary, normalize_text

__all__ = [
    "BadRow", "Collator", "DataError", "Dataset", "Example", "LengthBucketSampler", "OptimizerSettings",
    "Position", "TrainSettings", "Trainer", "build_vocabulary", "ctc_tokenizer", "fit", "label_vocabulary",
    "learning_rate", "normalize_text", "read_dataset", "train", "evaluate", "ModelError", "demo_model_path",
]


def __getattr__(name):
    # train / evaluate (wav2vec2.training.api) are resolved on first use
    if name in ("train", "evaluate", "ModelError", "demo_model_path"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'wav2vec2.training' has no attribute {name!r}")

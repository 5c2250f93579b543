"""``train`` and ``evaluate``: the library API behind ``wav2vec2 train`` and ``wav2vec2 evaluate``.

``train`` resolves the model (a preset, a config file, a checkpoint directory or hub id), reads the
data (bad rows reported and skipped), builds or loads the vocabulary (CTC) or the labels
(classification), makes the backend's model and trainer, and runs ``fit``. The output directory
ends as a complete checkpoint directory (config.json, the weights in the backend's format, the
processor files) that every backend, ``transcribe`` and ``convert`` load, beside ``log.jsonl`` and
the ``checkpoint-<step>/`` directories that ``resume`` continues from.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Callable, Dict, Optional

from ..config import PRESETS, Wav2Vec2Config
from .data import TASKS, DataError, read_dataset
from .trainer import TASK_HEADS

BACKENDS = {
    "torch": ("wav2vec2.backends.torch.training", "TorchTrainer"),
    "tensorflow": ("wav2vec2.backends.tensorflow.training", "TensorFlowTrainer"),
    "flax": ("wav2vec2.backends.flax.training", "FlaxTrainer"),
}
DEMO = "demo"


class ModelError(ValueError):
    """A model that cannot be trained or evaluated (unknown preset, unreadable checkpoint, a
    vocabulary that does not fit): the message names it."""


def backend_module(backend: str):
    """The ``training`` module of a backend (importing it imports the framework)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")
    return importlib.import_module(BACKENDS[backend][0])


def make_trainer(backend: str, task: str, **options):
    module = backend_module(backend)
    return getattr(module, BACKENDS[backend][1])(task, **options)


def demo_model_path() -> Path:
    """The demo CTC model shipped in the repository (``--model demo``); ModelError when it is not there."""
    from ..demo import demo_model_path as path

    try:
        return path()
    except FileNotFoundError as e:
        raise ModelError(str(e)) from None


# ------------------------------------------------------------------------------------ the model
def resolve_model(spec) -> tuple:
    """(config, checkpoint or None) for ``--model``: a preset name, a config .json file, ``demo``,
    or a checkpoint directory / hub id."""
    spec = os.fspath(spec)
    if spec == DEMO:
        spec = os.fspath(demo_model_path())
    if spec in PRESETS:
        return Wav2Vec2Config.preset(spec), None
    if os.path.isfile(spec):
        if not spec.endswith(".json"):
            raise ModelError(f"{spec}: a model file must be a config .json (or give a checkpoint directory)")
        try:
            return Wav2Vec2Config.from_json_file(spec), None
        except (OSError, ValueError) as e:
            raise ModelError(f"{spec}: not a usable config file: {e}") from None
    try:
        return Wav2Vec2Config.from_pretrained(spec), spec
    except Exception as e:  # noqa: BLE001 - a missing directory, no network, a bad config.json
        known = ", ".join(sorted(PRESETS))
        raise ModelError(f"{spec}: not a preset ({known}), a config .json or a checkpoint: {e}") from None


def _has_file(checkpoint, name: str) -> bool:
    from ..io.hub import resolve_file

    try:
        return resolve_file(checkpoint, name, required=False) is not None
    except Exception:  # noqa: BLE001 - treated as absent
        return False


def _feature_extractor(config, checkpoint):
    from ..feature_extraction import Wav2Vec2FeatureExtractor

    if checkpoint is not None and _has_file(checkpoint, "preprocessor_config.json"):
        return Wav2Vec2FeatureExtractor.from_pretrained(checkpoint)
    # Layer-norm conv stacks take an attention mask; group-norm ones are trained without one.
    return Wav2Vec2FeatureExtractor(return_attention_mask=config.feat_extract_norm == "layer", do_normalize=True)


def _read_vocab_file(path) -> dict:
    from ..io.hub import read_json_object

    try:
        vocab = read_json_object(Path(path), "vocabulary")
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not a vocabulary file: {e}") from None
    if not vocab or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in vocab.items()):
        raise ModelError(f"{path}: a vocabulary must be a JSON object of token -> integer id")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ModelError(f"{path}: the token ids must be 0 .. {len(vocab) - 1}, each once")
    return vocab


def _ctc_tokenizer(config, checkpoint, vocab, texts):
    """(tokenizer, config, whether the head is new)."""
    from ..tokenization import Wav2Vec2CTCTokenizer
    from .vocabulary import build_vocabulary, check_tokenizer, ctc_tokenizer

    new_head = True
    try:
        if vocab is not None:
            tokenizer = ctc_tokenizer(_read_vocab_file(vocab))
        elif checkpoint is not None and _has_file(checkpoint, "vocab.json"):
            tokenizer, new_head = Wav2Vec2CTCTokenizer.from_pretrained(checkpoint), False
        else:
            tokenizer = ctc_tokenizer(build_vocabulary(texts))
    except ValueError as e:
        raise ModelError(str(e)) from None
    if new_head:
        config = config.replace(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    try:
        check_tokenizer(tokenizer, config)
    except ValueError as e:
        raise ModelError(f"{checkpoint or 'the model'}: {e}") from None
    return tokenizer, config, new_head


def _labels(config, checkpoint, labels):
    """(config, whether the head is new) for classification with the training ``labels``: a
    classification checkpoint whose labels cover them keeps its head, else the head is new."""
    from .vocabulary import label_vocabulary

    architectures = config.extra.get("architectures") or []
    if (
        checkpoint is not None and config.id2label is not None
        and any("SequenceClassification" in str(a) for a in architectures)
        and set(labels) <= set(config.id2label.values())
    ):
        return config, False
    return config.replace(id2label=label_vocabulary(labels)), True


def initial_model(backend: str, task: str, config, checkpoint, new_head: bool, seed: int):
    """The backend's model for ``task``: fresh from ``seed``, then the checkpoint's weights (all of
    them, or the body only when the head is new)."""
    from ..io import match_state_dict, read_state_dict
    from ..spec.names import canonical_shapes

    module = backend_module(backend)
    model = module.new_model(task, config, seed)
    if checkpoint is None:
        return model
    head = module.model_class(task).head
    try:
        state = read_state_dict(checkpoint)
        if new_head:
            state = {k: v for k, v in state.items() if k.startswith("wav2vec2.") or not _is_head_key(k)}
        report = match_state_dict(state, canonical_shapes(config, head))
    except (OSError, ValueError) as e:
        raise ModelError(f"{checkpoint}: {e}") from None
    weights = model.canonical_state_dict()
    weights.update(report.state)
    model.load_canonical_state_dict(weights)
    return model


_HEAD_PREFIXES = ("lm_head.", "projector.", "classifier.", "layer_weights", "quantizer.", "project_hid.", "project_q.")


def _is_head_key(key: str) -> bool:
    return key.startswith(_HEAD_PREFIXES)


def mark_architecture(directory, task: str) -> None:
    """Name the trained head in ``config.json``'s ``architectures`` (as the reference does), so that
    a classification checkpoint keeps its head when it is fine-tuned again."""
    path = Path(directory) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["architectures"] = [TASK_HEADS[task]]
    staged = path.with_name(".config.json.staged")
    staged.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(staged, path)


# ------------------------------------------------------------------------------------ train
def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _report_data(dataset, report) -> None:
    report(dataset.summary())
    for row in dataset.bad_rows:
        report(f"  skipped {row}")


def _progress(progress, max_steps: int, start: int):
    if progress is False:
        return None, lambda: None
    from tqdm.auto import tqdm

    bar = tqdm(total=max_steps, initial=start, unit="update", desc="training", file=sys.stderr,
               disable=None if progress is None else not progress, dynamic_ncols=True)

    def update(step, metrics):
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", refresh=False)

    return update, bar.close


def train(
    train_data,
    output,
    *,
    model,
    backend: str = "torch",
    task: str = "ctc",
    eval_data=None,
    vocab=None,
    max_steps: int = 1000,
    batch_seconds: float = 100.0,
    learning_rate: float = 1e-4,
    warmup_steps: Optional[int] = None,
    weight_decay: float = 0.0,
    max_grad_norm: Optional[float] = 1.0,
    gradient_accumulation_steps: int = 1,
    precision: str = "fp32",
    freeze_feature_encoder: bool = False,
    eval_every: Optional[int] = None,
    save_every: Optional[int] = None,
    log_every: int = 10,
    keep_last: Optional[int] = 2,
    resume=False,
    seed: int = 0,
    tensorboard: bool = False,
    progress: Optional[bool] = False,
    fsdp: bool = False,
    config_overrides: Optional[Dict] = None,
    workers: Optional[int] = None,
    report: Callable[[str], None] = _stderr,
) -> Dict:
    """Train ``model`` on ``train_data`` into ``output``; returns the last log record.

    ``model``: a preset (``base``, ``large-lv60``, ...), a config .json, ``demo`` or a checkpoint.
    ``warmup_steps`` defaults to a tenth of ``max_steps`` (at most 500). ``config_overrides``
    change config fields (e.g. ``{"layerdrop": 0.0}``). ``progress``: a tqdm bar (None: on a
    terminal). ``fsdp`` (torch under torchrun): shard the model over the processes (FSDP2) instead
    of replicating it (DDP). Raises ModelError, DataError or ValueError with a message naming the problem.
    """
    from ..spec.lengths import min_input_length
    from .batching import Collator
    from .loop import TrainSettings, fit
    from .schedule import OptimizerSettings

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")
    if fsdp and backend != "torch":
        raise ValueError(f"fsdp is for the torch backend (torchrun), not {backend!r}")
    config, checkpoint = resolve_model(model)
    if config_overrides:
        try:
            config = config.replace(**config_overrides)
        except (TypeError, ValueError) as e:
            raise ModelError(f"config overrides {config_overrides}: {e}") from None
    optimizer = OptimizerSettings(
        learning_rate=learning_rate, total_steps=max_steps,
        warmup_steps=min(500, max_steps // 10) if warmup_steps is None else warmup_steps,
        weight_decay=weight_decay, max_grad_norm=max_grad_norm, gradient_accumulation_steps=gradient_accumulation_steps,
    )
    settings = TrainSettings(
        max_steps=max_steps, batch_seconds=batch_seconds, optimizer=optimizer, seed=seed, log_every=log_every,
        eval_every=eval_every, save_every=save_every, keep_last=keep_last,
    )
    options = {"fsdp": True} if fsdp else {}
    trainer = make_trainer(backend, task, precision=precision, freeze_feature_encoder=freeze_feature_encoder, **options)

    common = dict(min_samples=min_input_length(config), max_seconds=batch_seconds, workers=workers)
    train_set = read_dataset(train_data, task, **common)
    _report_data(train_set, report)
    if not train_set.examples:
        raise DataError(f"{train_data}: no usable rows to train on")

    feature_extractor = _feature_extractor(config, checkpoint)
    tokenizer = label2id = None
    new_head = task != "pretraining"
    if task == "ctc":
        tokenizer, config, new_head = _ctc_tokenizer(config, checkpoint, vocab, (e.text for e in train_set.examples))
        from .vocabulary import unknown_characters

        unknown = unknown_characters(tokenizer, (e.text for e in train_set.examples))
        if unknown:
            report(f"characters not in the vocabulary (trained as <unk>): {dict(unknown.most_common(10))}")
    elif task == "sequence-classification":
        config, new_head = _labels(config, checkpoint, [e.label for e in train_set.examples])
        label2id = config.label2id
    eval_set = None
    if eval_data is not None:
        labels = list(label2id) if label2id is not None else None
        eval_set = read_dataset(eval_data, task, labels=labels, **common)
        _report_data(eval_set, report)
        if not eval_set.examples:
            raise DataError(f"{eval_data}: no usable rows to evaluate on")

    collator = Collator(config, feature_extractor, task, tokenizer=tokenizer, label2id=label2id)
    network = initial_model(backend, task, config, checkpoint, new_head, seed)
    trainer.init(network, settings)
    writer = getattr(trainer, "is_writer", True)

    evaluate = None
    # Sharded weights are gathered by every process for each evaluation forward; only the writer logs.
    if eval_set is not None and task != "pretraining" and (writer or getattr(trainer, "sharded", False)):
        evaluate = _evaluator(task, config, eval_set, collator, tokenizer, batch_seconds, trainer.logits)

    def write_processor(directory):
        mark_architecture(directory, task)
        if tokenizer is not None:
            from ..processing import Wav2Vec2Processor

            Wav2Vec2Processor(feature_extractor, tokenizer).save_pretrained(directory)
        else:
            feature_extractor.save_pretrained(directory)

    start = 0
    if resume:
        from . import run

        latest = run.resolve_resume(output, resume)
        start = run.load_trainer_state(latest)["step"] if latest is not None else 0
    on_update, close = _progress(progress if writer else False, max_steps, start)
    try:
        last = fit(
            trainer, settings, train_set, collator, output, evaluate=evaluate, write_processor=write_processor,
            resume=resume, tensorboard=tensorboard, writer=writer, on_update=on_update,
        )
        return last if writer else {}
    finally:
        close()


def _evaluator(task, config, dataset, collator, tokenizer, batch_seconds, logits_fn):
    """evaluate(trainer) for ``fit``: the metrics of the whole evaluation set (batches made once)."""
    from .batching import sequential_batches
    from .metrics import evaluate_classification, evaluate_ctc

    groups = [[dataset.examples[i] for i in indices]
              for indices in sequential_batches([e.seconds for e in dataset.examples], batch_seconds)]
    batches = [collator(group, training=False) for group in groups]
    references = [[e.text for e in group] for group in groups]

    def evaluate(_trainer=None):
        if task == "ctc":
            return evaluate_ctc(logits_fn, batches, references, config, tokenizer)
        return evaluate_classification(logits_fn, batches)

    return evaluate


# ------------------------------------------------------------------------------------ evaluate
def infer_task(model_dir) -> str:
    """CTC when the checkpoint has a vocabulary, else sequence classification."""
    return "ctc" if _has_file(model_dir, "vocab.json") else "sequence-classification"


def evaluate(model, data, *, backend: str = "torch", task: Optional[str] = None, batch_seconds: float = 100.0,
             precision: str = "fp32", workers: Optional[int] = None, report: Callable[[str], None] = _stderr) -> Dict:
    """WER and CER (CTC) or accuracy (classification) of a checkpoint on DATA, with greedy decoding."""
    from ..spec.lengths import min_input_length
    from .batching import Collator

    config, checkpoint = resolve_model(model)
    if checkpoint is None:
        raise ModelError(f"{model}: evaluate needs a trained checkpoint directory, not a preset or config")
    task = task or infer_task(checkpoint)
    if task == "pretraining":
        raise ValueError("evaluate scores CTC and classification models, not pretraining")
    module = backend_module(backend)
    feature_extractor = _feature_extractor(config, checkpoint)
    tokenizer = None
    if task == "ctc":
        from ..tokenization import Wav2Vec2CTCTokenizer

        if not _has_file(checkpoint, "vocab.json"):
            raise ModelError(f"{checkpoint}: no vocab.json, so no CTC transcripts to score")
        tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(checkpoint)
    label2id = config.label2id if task == "sequence-classification" else None
    dataset = read_dataset(data, task, labels=list(label2id) if label2id else None,
                           min_samples=min_input_length(config), workers=workers)
    _report_data(dataset, report)
    if not dataset.examples:
        raise DataError(f"{data}: no usable rows to evaluate on")
    try:
        network = module.model_class(task).from_pretrained(checkpoint, config=config)
    except (OSError, ValueError) as e:
        raise ModelError(f"{checkpoint}: {e}") from None
    longest = max(e.seconds for e in dataset.examples)
    collator = Collator(config, feature_extractor, task, tokenizer=tokenizer, label2id=label2id)
    evaluator = _evaluator(task, config, dataset, collator, tokenizer, max(batch_seconds, longest),
                           lambda batch: module.eval_logits(network, task, batch, precision))
    metrics = evaluator()
    return {"model": os.fspath(model), "data": os.fspath(data), "backend": backend, "task": task, **metrics}


def write_metrics(metrics: Dict, stream=None) -> None:
    (stream or sys.stdout).write(json.dumps(metrics) + "\n")

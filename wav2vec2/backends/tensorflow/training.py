"""Training in TensorFlow/Keras 3: the ``wav2vec2.training.Trainer`` of this backend.

``TensorFlowTrainer(task)`` trains a ``Wav2Vec2ForCTC``, ``Wav2Vec2ForSequenceClassification`` or
``Wav2Vec2ForPreTraining`` on the NumPy batches of ``wav2vec2.training`` (masks and negatives come
in the batch), under a ``tf.distribute`` strategy:

- ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set (one process per machine), else
  ``MirroredStrategy`` over the local GPUs, or over the logical CPU devices when there are several
  (``tf.config.set_logical_device_configuration``), else the default strategy. The model is
  rebuilt in the strategy's scope with the given model's weights and gradient checkpointing switch.
  Each replica takes its rows of every batch with the weights of ``wav2vec2.training.parallel``;
  the replicas' gradients are summed, so N replicas make the update one replica makes with the same
  batch. Only worker 0 writes.
- The update is AdamW written out as in the PyTorch and Flax trainers (Keras' Adam folds epsilon
  differently): clipping of the global norm, decoupled weight decay except on biases and
  normalisation weights, float32 moments.
- Randomness: every Keras seed generator of the model (dropout, LayerDrop, Gumbel noise) is
  reseeded for each update from ``parallel.step_seed``, so a resumed run draws the same masks.
- Precision: ``precision="bf16"`` builds the model under Keras' ``mixed_bfloat16`` policy
  (float32 variables, bfloat16 compute); losses are float32.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Sequence

import keras
import numpy as np
import tensorflow as tf

from ...training import parallel
from ...training.trainer import check_model, check_options, task_class
from ...training.schedule import decays_weight
from . import modeling

def model_class(task: str):
    return task_class(modeling, task)


def new_model(task: str, config, seed: int = 0):
    """A freshly initialised model for ``task`` (the reference's initialisation, from ``seed``)."""
    keras.utils.set_random_seed(seed)
    return model_class(task)(config)


def _inputs(task: str, batch: Dict[str, np.ndarray], training: bool) -> dict:
    inputs = {"input_values": batch["input_values"], "attention_mask": batch.get("attention_mask")}
    if task == "pretraining":
        inputs["mask_time_indices"] = batch["mask_time_indices"]
        if training:
            inputs["sampled_negative_indices"] = batch["sampled_negative_indices"]
        return inputs
    if training:
        inputs["labels"] = batch["labels"]
        for key in ("mask_time_indices", "mask_feature_indices"):
            if batch.get(key) is not None:
                inputs[key] = batch[key]
    return inputs


def eval_logits(model, task: str, batch: Dict[str, np.ndarray], precision: str = "fp32") -> np.ndarray:
    """Evaluation forward as NumPy: CTC (batch, frames, vocab), classification (batch, labels),
    pretraining the projected states."""
    out = model(**_inputs(task, batch, training=False), training=False)
    out = out.projected_states if task == "pretraining" else out.logits
    return np.asarray(tf.cast(out, tf.float32))


def default_strategy():
    """The strategy the module docstring describes."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


def _seed_generators(model):
    found = []
    for layer in [model, *model._flatten_layers(include_self=False)]:
        for value in vars(layer).values():
            if isinstance(value, keras.random.SeedGenerator) and all(value is not g for g in found):
                found.append(value)
    return found


class TensorFlowTrainer:
    """See the module docstring. ``strategy``: a ``tf.distribute`` strategy (default: ``default_strategy()``)."""

    backend = "tensorflow"

    def __init__(self, task: str = "ctc", *, precision: str = "fp32", freeze_feature_encoder: bool = False,
                 strategy=None):
        check_options(task, precision)
        self.task = task
        self.precision = precision
        self.freeze_feature_encoder = freeze_feature_encoder
        self.strategy = strategy

    @property
    def is_writer(self) -> bool:
        resolver = getattr(self.strategy, "cluster_resolver", None)
        return resolver is None or not resolver.task_type or resolver.task_id == 0

    # ------------------------------------------------------------------ set-up
    def init(self, model, settings) -> None:
        check_model(model, modeling, self.task)
        if self.strategy is None:
            self.strategy = default_strategy()
        self.settings = settings
        weights = model.canonical_state_dict()
        policy = keras.config.dtype_policy()
        with self.strategy.scope():
            try:
                if self.precision == "bf16":
                    keras.config.set_dtype_policy("mixed_bfloat16")
                self.model = type(model)(model.config)
            finally:
                keras.config.set_dtype_policy(policy)
            self.model.load_canonical_state_dict(weights)
            if model._body().encoder.gradient_checkpointing:
                self.model.gradient_checkpointing_enable()
            if self.freeze_feature_encoder:
                self.model.freeze_feature_encoder()
            self.variables = list(self.model.trainable_variables)
            names = {v.path: name for name, (v, _) in self.model.canonical_variables().items()}
            self.names = [names[v.path] for v in self.variables]
            zeros = lambda v: tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False)  # noqa: E731
            self.exp_avg = [zeros(v) for v in self.variables]
            self.exp_avg_sq = [zeros(v) for v in self.variables]
            self.accumulated = [zeros(v) for v in self.variables]
        self.seed_generators = _seed_generators(self.model)
        self.step_count = 0
        self.replicas = self.strategy.num_replicas_in_sync
        self._accumulate = tf.function(self._accumulate_fn, reduce_retracing=True)
        self._apply = tf.function(self._apply_fn)

    # ------------------------------------------------------------------ training
    def _replica_fn(self, inputs, weight):
        with tf.GradientTape() as tape:
            loss = tf.cast(self.model(**inputs, training=True).loss, tf.float32) * weight
        gradients = tape.gradient(loss, self.variables)
        gradients = [tf.zeros(v.shape, tf.float32) if g is None else tf.cast(g, tf.float32)
                     for v, g in zip(self.variables, gradients)]
        return loss, gradients

    def _accumulate_fn(self, inputs, weight):
        loss, gradients = self.strategy.run(self._replica_fn, args=(inputs, weight))
        total = self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        for accumulated, g in zip(self.accumulated, gradients):
            accumulated.assign_add(self.strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None))
        return total

    def _apply_fn(self, learning_rate, count, step):
        s = self.settings.optimizer
        beta1, beta2 = s.betas
        gradients = [a / count for a in self.accumulated]
        norm = tf.linalg.global_norm(gradients)
        clip = 1.0 if s.max_grad_norm is None else tf.minimum(1.0, s.max_grad_norm / (norm + parallel.GRADIENT_CLIP_EPSILON))
        correction1, correction2 = 1 - beta1**step, 1 - beta2**step
        for name, var, g, m, v in zip(self.names, self.variables, gradients, self.exp_avg, self.exp_avg_sq):
            g = g * clip
            m.assign(beta1 * m + (1 - beta1) * g)
            v.assign(beta2 * v + (1 - beta2) * g * g)
            value = tf.cast(var.value, tf.float32)
            if s.weight_decay and decays_weight(name):
                value = value * (1 - learning_rate * s.weight_decay)
            value = value - learning_rate / correction1 * m / (tf.sqrt(v / correction2) + s.epsilon)
            var.assign(value)
        for accumulated in self.accumulated:
            accumulated.assign(tf.zeros_like(accumulated))
        return norm

    def _distribute(self, batch):
        parts = parallel.shards(self.task, self.model.config, batch, self.replicas)

        def value(context):
            part, weight = parts[context.replica_id_in_sync_group]
            inputs = {k: tf.constant(v) for k, v in _inputs(self.task, part, training=True).items() if v is not None}
            return inputs, tf.constant(weight, tf.float32)

        return self.strategy.experimental_distribute_values_from_function(value)

    def train_step(self, batches: Sequence[Dict[str, np.ndarray]], learning_rate: float) -> Dict[str, float]:
        self.step_count += 1
        seed = parallel.step_seed(self.settings.seed, 0, self.step_count)
        for index, generator in enumerate(self.seed_generators):
            generator.state.assign(np.array([seed, index], dtype=generator.state.dtype))
        if self.task == "pretraining":
            self.model.set_gumbel_temperature(parallel.gumbel_temperature(self.step_count))
        total = 0.0
        for batch in batches:
            inputs, weight = self._distribute(batch)
            total += float(self._accumulate(inputs, weight))
        norm = self._apply(tf.constant(learning_rate, tf.float32), tf.constant(len(batches), tf.float32),
                           tf.constant(self.step_count, tf.float32))
        return {"loss": total / len(batches), "grad_norm": float(norm)}

    def logits(self, batch: Dict[str, np.ndarray]) -> np.ndarray:
        return eval_logits(self.model, self.task, batch, self.precision)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, np.ndarray]:
        state = {"step": np.array(self.step_count, np.int64)}
        for name, m, v in zip(self.names, self.exp_avg, self.exp_avg_sq):
            state[f"exp_avg/{name}"] = m.numpy()
            state[f"exp_avg_sq/{name}"] = v.numpy()
        return state

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        for name, m, v in zip(self.names, self.exp_avg, self.exp_avg_sq):
            for key, variable in (("exp_avg", m), ("exp_avg_sq", v)):
                if f"{key}/{name}" not in state:
                    raise ValueError(f"the optimizer state lacks {key}/{name} (another model or task?)")
                value = np.asarray(state[f"{key}/{name}"])
                if value.shape != tuple(variable.shape):
                    raise ValueError(f"optimizer state {key}/{name}: shape {value.shape}, expected {tuple(variable.shape)}")
                variable.assign(value)
        self.step_count = int(state["step"])

    def save_model(self, directory: Path) -> None:
        self.model.save_pretrained(directory)

    def load_model(self, directory: Path) -> None:
        from ...io import read_state_dict

        self.model.load_canonical_state_dict(read_state_dict(directory))

"""Training in JAX/Flax: the ``wav2vec2.training.Trainer`` of this backend.

``FlaxTrainer(task)`` trains ``model.params`` of a ``Wav2Vec2ForCTC``,
``Wav2Vec2ForSequenceClassification`` or ``Wav2Vec2ForPreTraining`` with optax (AdamW after
clipping the global norm, as ``wav2vec2.training.parallel`` and the other backends do it), on
the NumPy batches of ``wav2vec2.training``: masks and negatives come in the batch.

- Devices: a one-axis ``jax.sharding.Mesh`` ("data") over every device JAX sees; each batch is
  sharded along its rows, parameters and optimizer state are replicated, and XLA inserts the
  gradient all-reduce. With ``jax.distributed.initialize`` (called here when
  ``JAX_COORDINATOR_ADDRESS`` is set) the mesh spans every host; each host builds the same
  batches and feeds the rows of its own devices. Only process 0 writes.
- Shapes: batches are padded (``parallel.pad_batch``) to a whole number of rows per device and,
  with an attention mask, to a multiple of ``frames_multiple`` frames, so that a run compiles a
  few step functions rather than one per batch. Padding rows weigh 0 in the loss, which is
  computed here from the logits with the heads' own loss functions.
- Randomness: dropout, LayerDrop and Gumbel keys come from ``parallel.step_seed`` per update
  (folded with the micro-batch number): a resumed run draws the same keys. The conv adapter's
  LayerDrop is drawn on the host from the same key (``modeling.adapter_layers_skipped``): each
  pattern of skipped layers is a static argument, compiled once.
- Precision: ``precision="bf16"`` computes in bfloat16 (the module's dtype); parameters,
  gradients, optimizer state and losses stay float32.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ...training import parallel
from ...training.trainer import check_model, check_options, task_class
from ...training.schedule import decays_weight
from ...spec.lengths import feat_extract_output_lengths
from ...spec.names import flax_key
from . import modeling, models

def model_class(task: str):
    return task_class(models, task)


def new_model(task: str, config, seed: int = 0):
    """A freshly initialised model for ``task`` (the reference's initialisation, from ``seed``)."""
    return model_class(task)(config, seed=seed)


def eval_logits(model, task: str, batch: Dict[str, np.ndarray], precision: str = "fp32") -> np.ndarray:
    """Evaluation forward as NumPy: CTC (batch, frames, vocab), classification (batch, labels),
    pretraining the projected states."""
    if task == "pretraining":
        out = model(batch["input_values"], batch.get("attention_mask"), mask_time_indices=batch["mask_time_indices"])
        return np.asarray(out.projected_states, np.float32)
    return np.asarray(model(batch["input_values"], batch.get("attention_mask")).logits, np.float32)


def _module_inputs(task: str, batch) -> dict:
    inputs = {"input_values": batch["input_values"], "attention_mask": batch.get("attention_mask"),
              "mask_time_indices": batch.get("mask_time_indices")}
    if task == "pretraining":
        inputs["sampled_negative_indices"] = batch["sampled_negative_indices"]
    else:
        inputs["mask_feature_indices"] = batch.get("mask_feature_indices")
    return inputs


def _loss(module, config, task: str, params, batch, weights, scale, rngs, temperature):
    """The micro-batch's loss (module docstring of wav2vec2.training.parallel), padding rows at weight 0."""
    inputs = _module_inputs(task, batch)
    if task == "pretraining":
        out = module.apply({"params": params}, **inputs, gumbel_temperature=temperature, deterministic=False,
                           rngs=rngs)
        return out.loss.astype(jnp.float32) * scale
    out = module.apply({"params": params}, **inputs, deterministic=False, rngs=rngs)
    logits = out.logits.astype(jnp.float32)
    real = weights.sum()
    if task == "ctc":
        mask = batch.get("attention_mask")
        samples = mask.sum(-1) if mask is not None else jnp.full(logits.shape[:1], batch["input_values"].shape[1])
        frames = feat_extract_output_lengths(config, samples.astype(jnp.int32))
        labels = batch["labels"]
        losses = modeling.ctc_loss(logits, frames, labels, config.pad_token_id, "none", config.ctc_zero_infinity)
        if config.ctc_loss_reduction == "mean":
            return (weights * losses / jnp.maximum((labels >= 0).sum(-1), 1)).sum() / real
        return (weights * losses).sum()
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
    return (weights * losses).sum() / real


class FlaxTrainer:
    """See the module docstring. ``frames_multiple``: batches are padded to a multiple of this many
    frames (1: no padding beyond the longest utterance)."""

    backend = "flax"

    def __init__(self, task: str = "ctc", *, precision: str = "fp32", freeze_feature_encoder: bool = False,
                 frames_multiple: int = 16):
        check_options(task, precision)
        self.task = task
        self.precision = precision
        self.freeze_feature_encoder = freeze_feature_encoder
        self.frames_multiple = int(frames_multiple)

    @property
    def is_writer(self) -> bool:
        return jax.process_index() == 0

    # ------------------------------------------------------------------ set-up
    def init(self, model, settings) -> None:
        check_model(model, models, self.task)
        if os.environ.get("JAX_COORDINATOR_ADDRESS") and not jax.distributed.is_initialized():
            jax.distributed.initialize()
        if self.precision == "bf16":
            model = type(model)(model.config, dtype=jnp.bfloat16, params=model.params)
        if self.freeze_feature_encoder:
            model.freeze_feature_encoder()
        self.model = model
        self.config = model.config
        self.settings = settings
        s = settings.optimizer
        self.mesh = Mesh(np.asarray(jax.devices()), ("data",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.rows = NamedSharding(self.mesh, PartitionSpec("data"))

        names = {path: flax_key(path)[0] for path in flatten_dict(model.params)}
        frozen = {p: self.freeze_feature_encoder and ".feature_extractor." in "." + n for p, n in names.items()}
        labels = unflatten_dict({p: "frozen" if frozen[p] else "train" for p in names})
        decay = unflatten_dict({p: decays_weight(n) for p, n in names.items()})
        adamw = optax.inject_hyperparams(optax.adamw)(
            learning_rate=0.0, b1=s.betas[0], b2=s.betas[1], eps=s.epsilon, weight_decay=s.weight_decay, mask=decay,
        )
        # Frozen parameters get neither updates nor weight decay, as when the other backends leave them out.
        self.optimizer = optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()}, labels)
        self.params = jax.device_put(jax.tree_util.tree_map(jnp.asarray, model.params), self.replicated)
        self.opt_state = jax.device_put(self.optimizer.init(self.params), self.replicated)
        self.step_count = 0
        module, config, task = model.module, model.config, self.task

        def grad_fn(params, batch, weights, scale, key, temperature, adapter_skipped):
            rngs = modeling.rng_streams(key)
            step_module = module.clone(adapter_skipped=adapter_skipped) if adapter_skipped else module
            return jax.value_and_grad(
                lambda p: _loss(step_module, config, task, p, batch, weights, scale, rngs, temperature)
            )(params)

        def update_fn(params, opt_state, grads, learning_rate, max_norm):
            norm = optax.global_norm(grads)
            clip = jnp.minimum(1.0, max_norm / (norm + parallel.GRADIENT_CLIP_EPSILON))
            grads = jax.tree_util.tree_map(lambda g: g * clip, grads)
            opt_state.inner_states["train"].inner_state.hyperparams["learning_rate"] = learning_rate
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, norm

        self._grad = jax.jit(grad_fn, static_argnames="adapter_skipped")
        self._add = jax.jit(lambda a, b: jax.tree_util.tree_map(jnp.add, a, b))
        self._update = jax.jit(update_fn, donate_argnums=(0, 1))

    def _device_batch(self, batch: Dict[str, np.ndarray]):
        """The padded batch as global arrays sharded by rows (each host feeds its devices' rows)."""
        padded, weights = parallel.pad_batch(
            batch, self.config, rows_multiple=len(self.mesh.devices.flat), frames_multiple=self.frames_multiple,
            labels_multiple=16,
        )
        # JAX runs 32-bit integers unless x64 is enabled.
        padded = {k: v.astype(np.int32) if v.dtype == np.int64 else v for k, v in padded.items() if v is not None}
        padded["weights"] = weights

        def put(value):
            return jax.make_array_from_callback(value.shape, self.rows, lambda index: value[index])

        arrays = {k: put(v) for k, v in padded.items()}
        return arrays, arrays.pop("weights")

    # ------------------------------------------------------------------ training
    def train_step(self, batches: Sequence[Dict[str, np.ndarray]], learning_rate: float) -> Dict[str, float]:
        s = self.settings.optimizer
        self.step_count += 1
        temperature = jnp.float32(parallel.gumbel_temperature(self.step_count))
        key = jax.random.key(parallel.step_seed(self.settings.seed, 0, self.step_count))
        total, grads = 0.0, None
        for number, batch in enumerate(batches):
            scale = parallel.pretraining_scale(batch) if self.task == "pretraining" else 1.0
            arrays, weights = self._device_batch(batch)
            micro_key = jax.random.fold_in(key, number)
            adapter_skipped = modeling.adapter_layers_skipped(self.config, modeling.rng_streams(micro_key)["layerdrop"])
            loss, g = self._grad(self.params, arrays, weights, jnp.float32(scale), micro_key, temperature,
                                 adapter_skipped=adapter_skipped)
            grads = g if grads is None else self._add(grads, g)
            total += float(loss)
        grads = jax.tree_util.tree_map(lambda g: g / len(batches), grads)
        max_norm = jnp.float32(np.inf if s.max_grad_norm is None else s.max_grad_norm)
        self.params, self.opt_state, norm = self._update(
            self.params, self.opt_state, grads, jnp.float32(learning_rate), max_norm
        )
        return {"loss": total / len(batches), "grad_norm": float(norm)}

    def _sync_model(self) -> None:
        self.model.params = jax.device_get(self.params)

    def logits(self, batch: Dict[str, np.ndarray]) -> np.ndarray:
        self._sync_model()
        return eval_logits(self.model, self.task, batch, self.precision)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, np.ndarray]:
        leaves, _ = jax.tree_util.tree_flatten_with_path(self.opt_state)
        state = {"step": np.array(self.step_count, np.int64)}
        for path, leaf in leaves:
            state["opt" + jax.tree_util.keystr(path)] = np.asarray(jax.device_get(leaf))
        return state

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        leaves, treedef = jax.tree_util.tree_flatten_with_path(self.opt_state)
        restored = []
        for path, leaf in leaves:
            name = "opt" + jax.tree_util.keystr(path)
            if name not in state:
                raise ValueError(f"the optimizer state lacks {name!r} (another model or task?)")
            value = np.asarray(state[name])
            if value.shape != tuple(np.shape(leaf)):
                raise ValueError(f"optimizer state {name}: shape {value.shape}, expected {tuple(np.shape(leaf))}")
            restored.append(jnp.asarray(value, dtype=jnp.asarray(leaf).dtype))
        self.opt_state = jax.device_put(jax.tree_util.tree_unflatten(treedef, restored), self.replicated)
        self.step_count = int(state["step"])

    def save_model(self, directory: Path) -> None:
        self._sync_model()
        self.model.save_pretrained(directory)

    def load_model(self, directory: Path) -> None:
        from ...io import read_state_dict

        self.model.load_canonical_state_dict(read_state_dict(directory), source=str(directory))
        self.params = jax.device_put(self.model.params, self.replicated)

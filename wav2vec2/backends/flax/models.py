"""The public Flax classes: a linen module, its parameter pytree, and loading/saving.

``model.module`` is the pure linen module and ``model.params`` its parameters, so ``jax.jit``,
``jax.grad`` and sharding apply to them directly; calling ``model(...)`` is a jit-compiled
convenience that checks its inputs, draws SpecAugment masks in training and splits the PRNG key.
It may itself be called inside ``jax.jit``, ``jax.grad`` (pass ``params=``) and ``jax.vmap``:
traced inputs stay JAX arrays, and only the checks that need concrete values are skipped on them.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, path_aware_map, unflatten_dict

from ... import pretrained
from ...config import Wav2Vec2Config
from ...spec import checks, masking, names
from ...spec.lengths import feat_extract_output_lengths, min_input_length, xvector_min_frames
from ...spec.masking import spec_augment_masks
from . import modeling

logger = logging.getLogger(__name__)

_FLAX_WEIGHTS = "flax_model.msgpack"


def _as_array(value, name: str):
    """A JAX array (traced or not) as it is; NumPy arrays, lists and framework tensors as NumPy."""
    if value is None or isinstance(value, jax.Array):
        return value
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as e:  # noqa: BLE001 - any unconvertible object is a user error
        raise ValueError(f"{name}: cannot be converted to an array ({e})") from None


def _concrete(value):
    """``value`` as NumPy when its values are known here (not inside a jax trace), else None."""
    if value is None or isinstance(value, jax.core.Tracer):
        return None
    return np.asarray(value)


def _is_floating(array) -> bool:
    return jnp.issubdtype(array.dtype, jnp.floating)


def _is_integer(array) -> bool:
    return jnp.issubdtype(array.dtype, jnp.integer)


class Wav2Vec2PreTrainedModel:
    """Shared by the six classes: init, forward plumbing, weights and checkpoints."""

    module_class = modeling.Wav2Vec2Module
    head = "model"  # the wav2vec2.spec.names head name

    def __init__(self, config: Wav2Vec2Config, seed: int = 0, dtype=jnp.float32, *, params=None):
        if not isinstance(config, Wav2Vec2Config):
            raise ValueError(f"config must be a wav2vec2.Wav2Vec2Config, got {type(config).__name__}")
        self._check_config(config)
        self.config = config
        self.dtype = dtype
        self.name_or_path = None  # where from_pretrained found the weights; load_adapter looks there
        self.hub_kwargs = {}
        self.target_lang = None
        self._options = dict(freeze_feature_encoder=False, gradient_checkpointing=False)
        if self.module_class is not modeling.Wav2Vec2Module:
            self._options["freeze_base_model"] = False
        self._rebuild()
        self.params = params if params is not None else self.init_params(jax.random.key(seed))

    @staticmethod
    def _check_config(config):
        pass

    # ------------------------------------------------------------------------------- the module
    def _rebuild(self):
        """Build the linen module from config and options, and the jitted forward that uses it."""
        self.module = self.module_class(self.config, self.dtype, **self._options)
        self._jitted_apply = jax.jit(
            self._apply, static_argnames=("train", "output_hidden_states", "output_attentions", "adapter_skipped")
        )

    def _apply(self, params, inputs, rngs, train, output_hidden_states, output_attentions, adapter_skipped=()):
        # Each pattern of skipped conv-adapter layers is a shape of its own: one compilation each.
        module = self.module.clone(adapter_skipped=adapter_skipped) if adapter_skipped else self.module
        return module.apply(
            {"params": params}, **inputs, deterministic=not train, output_hidden_states=output_hidden_states,
            output_attentions=output_attentions, rngs=rngs,
        )

    def _dummy_inputs(self):
        # long enough for every head (the x-vector's TDNN context included)
        samples = min_input_length(self.config, frames=xvector_min_frames(self.config))
        return {"input_values": jnp.zeros((1, samples), jnp.float32)}

    def init_params(self, rng):
        """Fresh parameters drawn as the reference initialises them (float32)."""
        # Not jitted: compiling the initialisers costs more than running them once, op by op.
        return self.module.init({"params": rng}, **self._dummy_inputs())["params"]

    def param_shapes(self):
        return jax.eval_shape(lambda: self.module.init({"params": jax.random.key(0)}, **self._dummy_inputs()))["params"]

    def gradient_checkpointing_enable(self):
        """Rematerialise every conv and encoder layer in the backward pass (nn.remat), as torch checkpoints them."""
        self._options["gradient_checkpointing"] = True
        self._rebuild()

    def gradient_checkpointing_disable(self):
        self._options["gradient_checkpointing"] = False
        self._rebuild()

    def freeze_feature_encoder(self):
        """Stop gradients at the conv feature encoder's parameters (their gradients are zero)."""
        self._options["freeze_feature_encoder"] = True
        self._rebuild()

    # ------------------------------------------------------------------------------ forward
    def _check_inputs(self, input_values, attention_mask):
        """Checked inputs (wav2vec2.spec.checks): waveform (batch, samples), int32 mask or None."""
        input_values = _as_array(input_values, "input_values")
        checks.waveform_shape(self.config, input_values.shape, _is_floating(input_values), str(input_values.dtype))
        if input_values.ndim == 1:
            input_values = input_values[None]
        if attention_mask is not None:
            attention_mask = _as_array(attention_mask, "attention_mask")
            shape = checks.attention_mask_shape(attention_mask.shape, input_values.shape)
            attention_mask = attention_mask.reshape(shape).astype(jnp.int32)
        return input_values, attention_mask

    def _num_frames(self, num_samples: int) -> int:
        return feat_extract_output_lengths(self.config, num_samples, add_adapter=False)

    def _rngs(self, train: bool, dropout_rng, gumbel_rng=None):
        if not train:
            return {}
        if dropout_rng is None:
            raise ValueError("train=True needs an explicit dropout_rng (a jax.random key)")
        rngs = modeling.rng_streams(dropout_rng)
        return rngs if gumbel_rng is None else {**rngs, "gumbel": gumbel_rng}

    def _adapter_skipped(self, rngs):
        """The conv adapter layers LayerDrop skips in this call (modeling.adapter_layers_skipped), drawn
        here, outside jit, from the "layerdrop" key: a skipped layer changes the output length."""
        if not rngs:
            return ()
        return modeling.adapter_layers_skipped(self.config, rngs["layerdrop"])

    def _masks(self, inputs, train, mask_time_indices, spec_augment_rng, dropout_rng):
        """SpecAugment masks: the given time mask, else in training draw both with wav2vec2.spec.masking."""
        batch, samples = inputs["input_values"].shape
        frames = self._num_frames(samples)
        mask_feature_indices = None
        if mask_time_indices is not None:
            mask_time_indices = _as_array(mask_time_indices, "mask_time_indices").astype(bool)
            checks.frame_input("mask_time_indices", mask_time_indices.shape, (batch, frames))
            checks.masked_spec_embed(self.config)
        elif train and self.config.apply_spec_augment and (self.config.mask_time_prob or self.config.mask_feature_prob):
            if spec_augment_rng is None:  # seeded from the dropout key, so one key reproduces a step
                key_data = _concrete(jax.random.key_data(dropout_rng))
                if key_data is None:
                    raise ValueError("SpecAugment masks are drawn with NumPy, seeded from dropout_rng; inside a jax "
                                     "trace pass spec_augment_rng (a numpy Generator) or the masks instead")
                spec_augment_rng = masking.seeded_generator(key_data)
            valid = None
            if inputs.get("attention_mask") is not None:
                mask = _concrete(inputs["attention_mask"])
                if mask is None:
                    raise ValueError("SpecAugment masks are drawn with NumPy from the attention mask; inside a jax "
                                     "trace pass mask_time_indices (wav2vec2.spec.masking) instead")
                lengths = feat_extract_output_lengths(self.config, mask.sum(-1), add_adapter=False)
                valid = np.arange(frames)[None, :] < np.asarray(lengths)[:, None]
            mask_time_indices, mask_feature_indices = spec_augment_masks(
                self.config, batch, frames, rng=spec_augment_rng, frame_attention_mask=valid
            )
        return mask_time_indices, mask_feature_indices

    def _check_labels(self, labels, input_shape):
        batch = input_shape[0]
        return labels

    def _forward(self, input_values, attention_mask, labels, mask_time_indices, mask_feature_indices,
                 output_attentions, output_hidden_states, spec_augment_rng, params, dropout_rng, train):
        input_values, attention_mask = self._check_inputs(input_values, attention_mask)
        inputs = {"input_values": input_values, "attention_mask": attention_mask}
        if labels is not None:
            if attention_mask is not None:
                counts = _concrete(attention_mask)
                checks.samples_for_loss(None if counts is None else counts.sum(-1))
            inputs["labels"] = self._check_labels(_as_array(labels, "labels"), input_values.shape)
        rngs = self._rngs(train, dropout_rng)
        mask_time, mask_feature = self._masks(inputs, train, mask_time_indices, spec_augment_rng, dropout_rng)
        if mask_feature_indices is not None and train:
            mask_feature_indices = _as_array(mask_feature_indices, "mask_feature_indices").astype(bool)
            checks.frame_input("mask_feature_indices", mask_feature_indices.shape,
                               (input_values.shape[0], self.config.hidden_size))
            mask_feature = mask_feature_indices if self.config.mask_feature_prob > 0 else None
        inputs.update(mask_time_indices=mask_time, mask_feature_indices=mask_feature)
        return self._jitted_apply(
            self._compute_params(train) if params is None else params, inputs, rngs, train, output_hidden_states,
            output_attentions, self._adapter_skipped(rngs),
        )

    def _compute_params(self, train: bool):
        """self.params, or for inference in bf16/fp16 the same tree with every kernel (the Dense and conv
        weights, which those layers cast to the compute dtype in every call) cast once, kept while
        self.params holds the same arrays: recasting a base model's 94M weights took a fifth of a bf16
        call (benchmarks/bench_cpu.py). Training keeps float32 weights."""
        if train or self.dtype not in (jnp.bfloat16, jnp.float16):
            return self.params
        leaves = jax.tree_util.tree_leaves(self.params)
        cached = getattr(self, "_compute_params_cache", None)
        if cached is None or len(cached[0]) != len(leaves) or any(a is not b for a, b in zip(cached[0], leaves)):
            cast = path_aware_map(
                lambda path, value: value.astype(self.dtype) if path[-1] == "kernel" else value, self.params)
            self._compute_params_cache = cached = (leaves, cast)
        return cached[1]

    # ---------------------------------------------------------------------------- weights
    def canonical_state_dict(self):
        """{reference PyTorch name: NumPy array in the PyTorch layout}; heads prefix the body with wav2vec2."""
        state = names.from_flax_tree(self.params)
        names.check_keys(state, names.canonical_shapes(self.config, self.head), type(self).__name__)
        return state

    def load_canonical_state_dict(self, state):
        """Replace every parameter; the key set and shapes must match exactly (ValueError otherwise)."""
        layouts = self._layouts()
        state = names.checked_state(state, {key: shape for key, _, shape in layouts.values()}, type(self).__name__)
        flat = {path: names.relayout(state[key].astype(np.float32), rev) for path, (key, rev, _) in layouts.items()}
        self.params = jax.tree_util.tree_map(jnp.asarray, unflatten_dict(flat))

    def canonical_shapes(self):
        return {key: shape for key, _, shape in self._layouts().values()}

    def _layouts(self):
        """{tree path: (canonical name, whether Flax reverses its axes, canonical shape)} of every parameter."""
        layouts = {}
        for path, value in flatten_dict(self.param_shapes()).items():
            key, reversed_axes = names.flax_key(path)
            layouts[path] = key, reversed_axes, tuple(value.shape)[::-1] if reversed_axes else tuple(value.shape)
        names.check_keys([key for key, _, _ in layouts.values()], names.canonical_shapes(self.config, self.head),
                         type(self).__name__)
        return layouts

    # ---------------------------------------------------------------------------- files (wav2vec2.pretrained)
    @classmethod
    def from_pretrained(cls, path_or_repo_id, target_lang: Optional[str] = None, config: Optional[Wav2Vec2Config] = None,
                        dtype=jnp.float32, seed: int = 0, **hub_kwargs):
        """Load config.json and weights (any format wav2vec2.io reads) from a directory or hub repo.

        Head parameters the checkpoint lacks are initialised and named in a warning; parameters of
        other heads are dropped. target_lang loads the MMS adapter ``adapter.<lang>.safetensors``.
        """
        return pretrained.from_pretrained(cls, path_or_repo_id, target_lang, config, hub_kwargs, seed=seed, dtype=dtype)

    def save_pretrained(self, directory, format: Optional[str] = None, max_shard_size=None):
        """Write config.json and the weights (flax_model.msgpack by default, in the reference layout).
        The directory is left with these weights only (see wav2vec2.pretrained)."""
        pretrained.save_pretrained(self, directory, format or "flax", max_shard_size)


class _HeadModel(Wav2Vec2PreTrainedModel):
    """A task head over the body (its parameters under "wav2vec2")."""

    def __call__(
        self,
        input_values,
        attention_mask=None,
        labels=None,
        mask_time_indices=None,
        mask_feature_indices=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        spec_augment_rng: Optional[np.random.Generator] = None,
        *,
        params=None,
        dropout_rng=None,
        train: bool = False,
    ):
        """Forward pass. input_values: (batch, samples) or (samples,) float audio; attention_mask:
        same shape, 1 on real samples. train=True enables dropout, LayerDrop and SpecAugment and
        needs ``dropout_rng``; SpecAugment masks come from ``mask_time_indices`` /
        ``mask_feature_indices`` or are drawn with ``spec_augment_rng`` (a numpy Generator; by
        default derived from ``dropout_rng``). ``params`` replaces ``self.params`` (for jax.grad).
        """
        return self._forward(input_values, attention_mask, labels, mask_time_indices, mask_feature_indices,
                             output_attentions, output_hidden_states, spec_augment_rng, params, dropout_rng, train)

    def freeze_base_model(self):
        """Stop gradients at every wav2vec2.* parameter: only the head trains."""
        self._options["freeze_base_model"] = True
        self._rebuild()


class Wav2Vec2Model(Wav2Vec2PreTrainedModel):
    """The bare model; returns last_hidden_state (batch, frames, hidden) and extract_features."""

    module_class = modeling.Wav2Vec2Module
    head = "model"

    def __call__(
        self,
        input_values,
        attention_mask=None,
        mask_time_indices=None,
        mask_feature_indices=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        spec_augment_rng: Optional[np.random.Generator] = None,
        *,
        params=None,
        dropout_rng=None,
        train: bool = False,
    ):
        """Forward pass of the body; arguments as for the heads, without labels."""
        return self._forward(input_values, attention_mask, None, mask_time_indices, mask_feature_indices,
                             output_attentions, output_hidden_states, spec_augment_rng, params, dropout_rng, train)


class Wav2Vec2ForCTC(_HeadModel):
    """CTC head: logits (batch, frames, vocab_size); labels (batch, max_len) padded with -100."""

    module_class = modeling.Wav2Vec2ForCTCModule
    head = "ctc"

    def __init__(self, config: Wav2Vec2Config, target_lang: Optional[str] = None, seed: int = 0, dtype=jnp.float32,
                 *, params=None):
        super().__init__(config, seed, dtype, params=params)
        self.target_lang = target_lang

    def _check_labels(self, labels, input_shape):
        batch = input_shape[0]
        values = _concrete(labels)
        max_label = values.max() if values is not None and values.size and values.ndim == 2 and _is_integer(labels) else None
        checks.ctc_labels(self.config, labels.shape, _is_integer(labels), batch, max_label)
        return labels.astype(jnp.int32)

    def load_adapter(self, target_lang: str, path_or_repo_id=None, **hub_kwargs):
        """Load ``adapter.{target_lang}.safetensors`` (or .bin, .h5, .msgpack) from where the model came
        from, or from ``path_or_repo_id``. A vocabulary of another size resizes lm_head (and the model
        gets a config of its own with the new vocab_size)."""
        pretrained.load_adapter(self, target_lang, path_or_repo_id, **hub_kwargs)

    def _resize_lm_head(self, config):
        self.config = config
        self._rebuild()


class Wav2Vec2ForSequenceClassification(_HeadModel):
    """Mean-pooled utterance classification; labels (batch,)."""

    module_class = modeling.Wav2Vec2ForSequenceClassificationModule
    head = "sequence_classification"

    @staticmethod
    def _check_config(config):
        checks.no_conv_adapter(config, "Wav2Vec2ForSequenceClassification")

    def _check_labels(self, labels, input_shape):
        batch = input_shape[0]
        checks.class_labels(labels.shape, _is_integer(labels), batch, "class ids")
        return labels.astype(jnp.int32)


class Wav2Vec2ForAudioFrameClassification(_HeadModel):
    """Per-frame classification; labels (batch, frames, num_labels) scores (their argmax is the target)."""

    module_class = modeling.Wav2Vec2ForAudioFrameClassificationModule
    head = "audio_frame_classification"

    @staticmethod
    def _check_config(config):
        checks.no_conv_adapter(config, "Wav2Vec2ForAudioFrameClassification")

    def _check_labels(self, labels, input_shape):
        batch = input_shape[0]
        frames = self._num_frames(input_shape[1])
        checks.frame_labels(labels.shape, (batch, frames, self.config.num_labels))
        return labels


class Wav2Vec2ForXVector(_HeadModel):
    """Speaker embeddings (TDNN + statistics pooling); AM-softmax loss on labels (batch,)."""

    module_class = modeling.Wav2Vec2ForXVectorModule
    head = "xvector"

    def _check_labels(self, labels, input_shape):
        batch = input_shape[0]
        checks.class_labels(labels.shape, _is_integer(labels), batch, "speaker ids")
        return labels.astype(jnp.int32)


class Wav2Vec2ForPreTraining(_HeadModel):
    """Contrastive pretraining: Gumbel product quantizer, contrastive and diversity losses.

    mask_time_indices (batch, frames) and sampled_negative_indices (batch, frames, num_negatives)
    come from wav2vec2.spec.masking / wav2vec2.spec.negatives; the loss needs both.
    """

    module_class = modeling.Wav2Vec2ForPreTrainingModule
    head = "pretraining"

    def __init__(self, config, seed: int = 0, dtype=jnp.float32, *, params=None):
        self.gumbel_temperature = 2.0
        super().__init__(config, seed, dtype, params=params)

    def set_gumbel_temperature(self, temperature: float):
        """The Gumbel-softmax temperature used in training (a traced value: no recompilation)."""
        self.gumbel_temperature = float(temperature)

    def __call__(
        self,
        input_values,
        attention_mask=None,
        mask_time_indices=None,
        sampled_negative_indices=None,
        gumbel_noise=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        *,
        params=None,
        dropout_rng=None,
        train: bool = False,
        gumbel_rng=None,
        spec_augment_rng: Optional[np.random.Generator] = None,
    ):
        """mask_time_indices (batch, frames) and sampled_negative_indices (batch, frames, num_negatives)
        from wav2vec2.spec; gumbel_noise (batch, frames, groups, vars) standard Gumbel samples, else
        drawn from ``gumbel_rng`` (by default split from ``dropout_rng``) in training."""
        input_values, attention_mask = self._check_inputs(input_values, attention_mask)
        inputs = {"input_values": input_values, "attention_mask": attention_mask}
        rngs = self._rngs(train, dropout_rng, gumbel_rng)
        mask_time, mask_feature = self._masks(inputs, train, mask_time_indices, spec_augment_rng, dropout_rng)
        if sampled_negative_indices is not None:
            checks.negatives_need_mask(mask_time)
            sampled_negative_indices = _as_array(sampled_negative_indices, "sampled_negative_indices")
            expected = (*mask_time.shape, self.config.num_negatives)
            checks.frame_input("sampled_negative_indices", sampled_negative_indices.shape, expected)
            sampled_negative_indices = sampled_negative_indices.astype(jnp.int32)
        if gumbel_noise is not None:
            gumbel_noise = _as_array(gumbel_noise, "gumbel_noise")
            expected = (*input_values.shape[:1], self._num_frames(input_values.shape[1]),
                        self.config.num_codevector_groups, self.config.num_codevectors_per_group)
            checks.frame_input("gumbel_noise", gumbel_noise.shape, expected)
        inputs.update(
            mask_time_indices=mask_time, mask_feature_indices=mask_feature,
            sampled_negative_indices=sampled_negative_indices,
            gumbel_temperature=jnp.float32(self.gumbel_temperature), gumbel_noise=gumbel_noise,
        )
        return self._jitted_apply(
            self._compute_params(train) if params is None else params, inputs, rngs, train, output_hidden_states,
            output_attentions, self._adapter_skipped(rngs),
        )

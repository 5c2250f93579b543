"""The public Flax classes: a linen module, its parameter pytree, and loading/saving.

``model.module`` is the pure linen module and ``model.params`` its parameters, so ``jax.jit``,
``jax.grad`` and sharding apply to them directly; calling ``model(...)`` is a jit-compiled
convenience that checks its inputs, draws SpecAugment masks in training and splits the PRNG key.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ...config import Wav2Vec2Config
from ...spec.lengths import feat_extract_output_lengths, min_input_length
from ...spec.masking import spec_augment_masks
from . import modeling, weights

logger = logging.getLogger(__name__)

_FLAX_WEIGHTS = "flax_model.msgpack"


def _as_array(value, name: str):
    """NumPy view of a NumPy array, a JAX array or a framework tensor."""
    if value is None:
        return None
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as e:  # noqa: BLE001 - any unconvertible object is a user error
        raise ValueError(f"{name}: cannot be converted to an array ({e})") from None


class Wav2Vec2PreTrainedModel:
    """Shared by the six classes: init, forward plumbing, weights and checkpoints."""

    module_class = modeling.Wav2Vec2Module
    head = "model"  # the wav2vec2.spec.names head name
    supports_labels = False

    def __init__(self, config: Wav2Vec2Config, seed: int = 0, dtype=jnp.float32, *, params=None):
        if not isinstance(config, Wav2Vec2Config):
            raise ValueError(f"config must be a wav2vec2.Wav2Vec2Config, got {type(config).__name__}")
        self._check_config(config)
        self.config = config
        self.dtype = dtype
        self.name_or_path = None
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
            self._apply, static_argnames=("train", "output_hidden_states", "output_attentions")
        )

    def _apply(self, params, inputs, rngs, train, output_hidden_states, output_attentions):
        return self.module.apply(
            {"params": params}, **inputs, deterministic=not train, output_hidden_states=output_hidden_states,
            output_attentions=output_attentions, rngs=rngs,
        )

    def _dummy_inputs(self):
        return {"input_values": jnp.zeros((1, min_input_length(self.config)), jnp.float32)}

    def init_params(self, rng):
        """Fresh parameters drawn as the reference initialises them (float32)."""
        # Not jitted: compiling the initialisers costs more than running them once, op by op.
        return self.module.init({"params": rng}, **self._dummy_inputs())["params"]

    def param_shapes(self):
        return jax.eval_shape(lambda: self.module.init({"params": jax.random.key(0)}, **self._dummy_inputs()))["params"]

    def gradient_checkpointing_enable(self):
        """Rematerialise every encoder layer in the backward pass (nn.remat)."""
        self._options["gradient_checkpointing"] = True
        self._rebuild()

    def freeze_feature_encoder(self):
        """Stop gradients at the conv feature encoder's parameters (their gradients are zero)."""
        self._options["freeze_feature_encoder"] = True
        self._rebuild()

    # ------------------------------------------------------------------------------ forward
    def _check_inputs(self, input_values, attention_mask):
        input_values = _as_array(input_values, "input_values")
        if input_values.ndim == 1:
            input_values = input_values[None]
        if input_values.ndim != 2:
            raise ValueError(f"input_values must have shape (batch, samples) or (samples,), got {input_values.shape}")
        if not np.issubdtype(input_values.dtype, np.floating) and input_values.dtype != jnp.bfloat16:
            raise ValueError(f"input_values must be floating point audio, got dtype {input_values.dtype}")
        minimum = min_input_length(self.config)
        if input_values.shape[1] < minimum:
            raise ValueError(
                f"input_values has {input_values.shape[1]} samples; the conv feature encoder needs at least {minimum}"
            )
        if attention_mask is not None:
            attention_mask = _as_array(attention_mask, "attention_mask")
            if attention_mask.ndim == 1:
                attention_mask = attention_mask[None]
            if attention_mask.shape != input_values.shape:
                raise ValueError(
                    f"attention_mask must have the shape of input_values {input_values.shape}, got {attention_mask.shape}"
                )
            attention_mask = attention_mask.astype(np.int32)
        return input_values, attention_mask

    def _num_frames(self, num_samples: int) -> int:
        return feat_extract_output_lengths(self.config, num_samples, add_adapter=False)

    def _rngs(self, train: bool, dropout_rng, gumbel_rng=None):
        if not train:
            return {}
        if dropout_rng is None:
            raise ValueError("train=True needs an explicit dropout_rng (a jax.random key)")
        dropout, layerdrop, gumbel = jax.random.split(dropout_rng, 3)
        return {"dropout": dropout, "layerdrop": layerdrop, "gumbel": gumbel if gumbel_rng is None else gumbel_rng}

    def _masks(self, inputs, train, mask_time_indices, spec_augment_rng, dropout_rng):
        """SpecAugment masks: the given time mask, else in training draw both with wav2vec2.spec.masking."""
        batch, samples = inputs["input_values"].shape
        frames = self._num_frames(samples)
        mask_feature_indices = None
        if mask_time_indices is not None:
            mask_time_indices = _as_array(mask_time_indices, "mask_time_indices").astype(bool)
            if mask_time_indices.shape != (batch, frames):
                raise ValueError(f"mask_time_indices must have shape {(batch, frames)}, got {mask_time_indices.shape}")
            if self.config.mask_time_prob <= 0 and self.config.mask_feature_prob <= 0:
                raise ValueError("mask_time_indices given, but the config has no masked_spec_embed (mask_time_prob=0)")
        elif train and self.config.apply_spec_augment:
            if spec_augment_rng is None:  # derived from the dropout key, so one key reproduces a step
                spec_augment_rng = np.random.default_rng(np.asarray(jax.random.key_data(dropout_rng)).ravel())
            valid = None
            if inputs.get("attention_mask") is not None:
                lengths = feat_extract_output_lengths(self.config, inputs["attention_mask"].sum(-1), add_adapter=False)
                valid = np.arange(frames)[None, :] < np.asarray(lengths)[:, None]
            mask_time_indices, mask_feature_indices = spec_augment_masks(
                self.config, batch, frames, rng=spec_augment_rng, frame_attention_mask=valid
            )
        return mask_time_indices, mask_feature_indices

    def _check_labels(self, labels, batch):
        return labels

    def __call__(
        self,
        input_values,
        attention_mask=None,
        labels=None,
        *,
        params=None,
        dropout_rng=None,
        train: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        mask_time_indices=None,
        spec_augment_rng: Optional[np.random.Generator] = None,
    ):
        """Forward pass. input_values: (batch, samples) or (samples,) float audio; attention_mask:
        same shape, 1 on real samples. train=True enables dropout, LayerDrop and SpecAugment and
        needs ``dropout_rng``; SpecAugment masks come from ``mask_time_indices`` or are drawn with
        ``spec_augment_rng`` (a numpy Generator; by default derived from ``dropout_rng``).
        """
        input_values, attention_mask = self._check_inputs(input_values, attention_mask)
        inputs = {"input_values": input_values, "attention_mask": attention_mask}
        if labels is not None:
            if not self.supports_labels:
                raise ValueError(f"{type(self).__name__} takes no labels")
            inputs["labels"] = self._check_labels(_as_array(labels, "labels"), input_values.shape[0])
        rngs = self._rngs(train, dropout_rng)
        mask_time, mask_feature = self._masks(inputs, train, mask_time_indices, spec_augment_rng, dropout_rng)
        inputs.update(mask_time_indices=mask_time, mask_feature_indices=mask_feature)
        return self._jitted_apply(
            self.params if params is None else params, inputs, rngs, train, output_hidden_states, output_attentions
        )

    # ---------------------------------------------------------------------------- weights
    def canonical_state_dict(self):
        """{reference PyTorch name: NumPy array in the PyTorch layout}; heads prefix the body with wav2vec2."""
        return weights.to_canonical(self.params)

    def load_canonical_state_dict(self, state, source: str = "state dict"):
        """Replace every parameter; the key set and shapes must match exactly (ValueError otherwise)."""
        tree = weights.from_canonical(state, self.param_shapes(), source)
        self.params = jax.tree_util.tree_map(jnp.asarray, tree)

    def canonical_shapes(self):
        return weights.canonical_shapes(self.param_shapes())

    @classmethod
    def from_pretrained(cls, path_or_repo_id, target_lang: Optional[str] = None, config: Optional[Wav2Vec2Config] = None,
                        dtype=jnp.float32, seed: int = 0, **hub_kwargs):
        """Load config.json and weights (any format wav2vec2.io reads) from a directory or hub repo.

        Head parameters the checkpoint lacks are initialised and named in a warning; parameters of
        other heads are dropped. target_lang loads the MMS adapter ``adapter.<lang>.safetensors``.
        """
        from ... import io

        path_or_repo_id = os.fspath(path_or_repo_id)
        if config is None:
            config = Wav2Vec2Config.from_pretrained(path_or_repo_id, **hub_kwargs)
        model = cls(config, seed=seed, dtype=dtype)
        state = io.read_state_dict(path_or_repo_id, **hub_kwargs)
        report = io.match_state_dict(state, model.canonical_shapes())
        if report.missing:
            logger.warning(
                "%s: newly initialised weights not in the checkpoint %s: %s",
                cls.__name__, path_or_repo_id, sorted(report.missing),
            )
        model.load_canonical_state_dict({**model.canonical_state_dict(), **report.state}, source=path_or_repo_id)
        model.name_or_path = path_or_repo_id
        if target_lang is not None:
            model.load_adapter(target_lang, **hub_kwargs)
        return model

    def save_pretrained(self, directory, format: str = "flax"):
        """Write config.json and the weights (flax_model.msgpack by default, in the reference layout)."""
        from ... import io

        os.makedirs(directory, exist_ok=True)
        self.config.save_pretrained(directory)
        io.write_state_dict(self.canonical_state_dict(), directory, format=format)

    def load_adapter(self, target_lang: str, path_or_repo_id=None, **hub_kwargs):
        """Load the MMS adapter weights of one language (and its lm_head, resizing the vocabulary)."""
        from ... import io

        if self.config.adapter_attn_dim is None:
            raise ValueError(f"cannot load adapter {target_lang!r}: config.adapter_attn_dim is not set")
        source = path_or_repo_id or self.name_or_path
        if source is None:
            raise ValueError("load_adapter needs path_or_repo_id (the model was not loaded with from_pretrained)")
        adapter = io.read_adapter(source, target_lang, **hub_kwargs)
        if self.head != "ctc":  # only the CTC head has an lm_head to swap
            adapter = {k: v for k, v in adapter.items() if not k.startswith("lm_head.")}
        if self.head == "model":
            adapter = {k.removeprefix("wav2vec2."): v for k, v in adapter.items()}

        state = self.canonical_state_dict()
        source_name = f"{source}: adapter {target_lang!r}"
        unknown = sorted(k for k in adapter if k not in state)
        if unknown:
            raise ValueError(f"{source_name}: keys that are not adapter weights: {unknown[:8]}")
        new_vocab = adapter.get("lm_head.weight", state.get("lm_head.weight"))
        if new_vocab is not None and new_vocab.shape != state["lm_head.weight"].shape:
            # A language may have its own alphabet: resize lm_head and the config with it.
            self.config = self.config.replace(vocab_size=int(new_vocab.shape[0]))
            self._rebuild()
        state.update(adapter)
        self.load_canonical_state_dict(state, source=source_name)
        self.target_lang = target_lang


class _HeadModel(Wav2Vec2PreTrainedModel):
    supports_labels = True

    def freeze_base_model(self):
        """Stop gradients at every wav2vec2.* parameter: only the head trains."""
        self._options["freeze_base_model"] = True
        self._rebuild()


class Wav2Vec2Model(Wav2Vec2PreTrainedModel):
    """The bare model; returns last_hidden_state (batch, frames, hidden) and extract_features."""

    module_class = modeling.Wav2Vec2Module
    head = "model"


class Wav2Vec2ForCTC(_HeadModel):
    """CTC head: logits (batch, frames, vocab_size); labels (batch, max_len) padded with -100."""

    module_class = modeling.Wav2Vec2ForCTCModule
    head = "ctc"

    def _check_labels(self, labels, batch):
        if labels.ndim != 2 or labels.shape[0] != batch:
            raise ValueError(f"labels must have shape (batch={batch}, target_length), got {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        if labels.size and labels.max() >= self.config.vocab_size:
            raise ValueError(f"labels must be < vocab_size={self.config.vocab_size}, got {labels.max()}")
        return labels.astype(np.int32)


class Wav2Vec2ForSequenceClassification(_HeadModel):
    """Mean-pooled utterance classification; labels (batch,)."""

    module_class = modeling.Wav2Vec2ForSequenceClassificationModule
    head = "sequence_classification"

    @staticmethod
    def _check_config(config):
        if config.add_adapter:
            raise ValueError("sequence classification does not support the conv adapter (config.add_adapter=True)")

    def _check_labels(self, labels, batch):
        if labels.shape != (batch,):
            raise ValueError(f"labels must have shape (batch={batch},), got {labels.shape}")
        return labels.astype(np.int32)


class Wav2Vec2ForAudioFrameClassification(_HeadModel):
    """Per-frame classification; labels (batch, frames, num_labels) scores (their argmax is the target)."""

    module_class = modeling.Wav2Vec2ForAudioFrameClassificationModule
    head = "audio_frame_classification"

    @staticmethod
    def _check_config(config):
        if config.add_adapter:
            raise ValueError("audio frame classification does not support the conv adapter (config.add_adapter=True)")

    def _check_labels(self, labels, batch):
        if labels.ndim != 3 or labels.shape[0] != batch or labels.shape[2] != self.config.num_labels:
            raise ValueError(
                f"labels must have shape (batch={batch}, frames, num_labels={self.config.num_labels}), got {labels.shape}"
            )
        return labels


class Wav2Vec2ForXVector(_HeadModel):
    """Speaker embeddings (TDNN + statistics pooling); AM-softmax loss on labels (batch,)."""

    module_class = modeling.Wav2Vec2ForXVectorModule
    head = "xvector"

    def _check_labels(self, labels, batch):
        if labels.shape != (batch,):
            raise ValueError(f"labels must have shape (batch={batch},), got {labels.shape}")
        return labels.astype(np.int32)


class Wav2Vec2ForPreTraining(Wav2Vec2PreTrainedModel):
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
        *,
        mask_time_indices=None,
        sampled_negative_indices=None,
        params=None,
        dropout_rng=None,
        gumbel_rng=None,
        train: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        spec_augment_rng: Optional[np.random.Generator] = None,
    ):
        input_values, attention_mask = self._check_inputs(input_values, attention_mask)
        inputs = {"input_values": input_values, "attention_mask": attention_mask}
        rngs = self._rngs(train, dropout_rng, gumbel_rng)
        mask_time, mask_feature = self._masks(inputs, train, mask_time_indices, spec_augment_rng, dropout_rng)
        if sampled_negative_indices is not None:
            if mask_time is None:
                raise ValueError("sampled_negative_indices needs mask_time_indices (the loss is over masked frames)")
            sampled_negative_indices = _as_array(sampled_negative_indices, "sampled_negative_indices")
            expected = (*mask_time.shape, self.config.num_negatives)
            if sampled_negative_indices.shape != expected:
                raise ValueError(f"sampled_negative_indices must have shape {expected}, got {sampled_negative_indices.shape}")
            sampled_negative_indices = sampled_negative_indices.astype(np.int32)
        inputs.update(
            mask_time_indices=mask_time, mask_feature_indices=mask_feature,
            sampled_negative_indices=sampled_negative_indices,
            gumbel_temperature=jnp.float32(self.gumbel_temperature),
        )
        return self._jitted_apply(
            self.params if params is None else params, inputs, rngs, train, output_hidden_states, output_attentions
        )

"""wav2vec 2.0 as Keras 3 layers and models on the TensorFlow backend.

Blocks follow the other backends in name and order: FeatureEncoder, FeatureProjection, WeightNormConv,
PositionalConvEmbedding, Attention, FeedForward, EncoderLayer, StableEncoderLayer, AttnAdapterLayer,
Encoder, Adapter, GumbelVectorQuantizer, TDNNLayer, AMSoftmaxLoss, then the six models. Every block
takes the one Wav2Vec2Config. Weights are built when a model is constructed, so
``canonical_state_dict()`` works straight away. Layers are held in attributes named as the canonical
(reference PyTorch) modules and variables are stored as the reference TF stores them, so the layout table
of wav2vec2.spec.names maps every variable to its canonical name (``canonical_variables()``).

Shapes use B = batch, S = samples, T = frames, C = channels, H = heads, D = head size.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Dict, Optional, Tuple

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ... import pretrained  # noqa: E402
from ...config import Wav2Vec2Config  # noqa: E402
from ...spec import checks, masking, names  # noqa: E402
from ...spec.lengths import conv_spans, feat_extract_output_lengths, min_input_length, tdnn_output_lengths  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"wav2vec2.backends.tensorflow needs Keras on the TensorFlow backend, but KERAS_BACKEND is "
        f"{keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow before importing keras"
    )

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------- weights
# Keras variables that are state, not weights (no checkpoint holds them). Seed generators are no layers:
# the walk never reaches their state.
_STATE_VARIABLES = ("temperature",)  # the Gumbel quantizer's


def _named_variables(layer, path=()):
    """(TF weight name, variable) of each variable ``layer`` holds in an attribute and, depth first, of each
    layer its public attributes hold. The attributes carry the canonical module names; a list item is
    named ``layers.0``, as Keras names it in the reference's h5 files."""
    for attribute, value in vars(layer).items():
        if isinstance(value, keras.Variable):
            yield "/".join([*path, value.name]), value
        elif attribute.startswith("_"):
            continue
        elif isinstance(value, keras.layers.Layer):
            yield from _named_variables(value, (*path, attribute))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, keras.layers.Layer):
                    yield from _named_variables(item, (*path, f"{attribute}.{i}"))


def _canonical_shapes(variables) -> Dict[str, tuple]:
    """Canonical name -> canonical shape, from ``canonical_variables()``."""
    return {key: tuple(v.shape)[::-1] if rev else tuple(v.shape) for key, (v, rev) in variables.items()}


# ---------------------------------------------------------------------------------------- outputs


class _Output:
    """Base of the output dataclasses: tf.function may return them (tf.nest flattens them by field)."""

    def __tf_flatten__(self):
        fields = dataclasses.fields(self)
        return tuple(f.name for f in fields), tuple(getattr(self, f.name) for f in fields)

    @classmethod
    def __tf_unflatten__(cls, names, values):
        return cls(**dict(zip(names, values)))


@dataclasses.dataclass
class Wav2Vec2BaseModelOutput(_Output):
    last_hidden_state: tf.Tensor = None
    extract_features: tf.Tensor = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


@dataclasses.dataclass
class HeadOutput(_Output):
    """CTC, sequence and audio-frame classification: logits and, with labels, a loss."""

    loss: Optional[tf.Tensor] = None
    logits: tf.Tensor = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


@dataclasses.dataclass
class XVectorOutput(_Output):
    loss: Optional[tf.Tensor] = None
    logits: tf.Tensor = None
    embeddings: tf.Tensor = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None


@dataclasses.dataclass
class Wav2Vec2ForPreTrainingOutput(_Output):
    loss: Optional[tf.Tensor] = None
    projected_states: tf.Tensor = None
    projected_quantized_states: tf.Tensor = None
    codevector_perplexity: tf.Tensor = None
    hidden_states: Optional[tuple] = None
    attentions: Optional[tuple] = None
    contrastive_loss: Optional[tf.Tensor] = None
    diversity_loss: Optional[tf.Tensor] = None


# ---------------------------------------------------------------------------------------- helpers

def _gelu(approximate: bool):
    """GELU; bf16/fp16 inputs are computed in float32 and rounded once: TensorFlow's own bf16 GELU
    (outside XLA) runs at half its float32 speed on the CPU (benchmarks/bench_cpu.py, bf16 rows)."""

    def gelu(x):
        if x.dtype in (tf.bfloat16, tf.float16):
            return tf.cast(tf.nn.gelu(tf.cast(x, tf.float32), approximate=approximate), x.dtype)
        return tf.nn.gelu(x, approximate=approximate)

    return gelu


_ACTIVATIONS = {
    "gelu": _gelu(approximate=False),
    "gelu_python": _gelu(approximate=False),
    "gelu_new": _gelu(approximate=True),
    "gelu_pytorch_tanh": _gelu(approximate=True),
    "quick_gelu": lambda x: x * tf.sigmoid(1.702 * x),
    "relu": tf.nn.relu,
    "silu": tf.nn.silu,
    "swish": tf.nn.silu,
    "tanh": tf.tanh,
}


# The activations TensorFlow's CPU graph optimiser fuses into the matmul before them (a 2-D MatMul and
# a BiasAdd, then the op): in bf16 and float32 with oneDNN, which then applies the activation to the
# float32 sums. A bf16 (499 x 768) @ (768 x 3072) with bias and GELU: 3.2 ms fused, 5.9 ms unfused.
_FUSED_ACTIVATIONS = {
    "gelu": lambda x: tf.nn.gelu(x, approximate=False),
    "gelu_python": lambda x: tf.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: tf.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: tf.nn.gelu(x, approximate=True),
    "relu": tf.nn.relu,
}


def _matmul_activation(hidden_states, kernel, bias, activation):
    """activation(hidden_states @ kernel + bias) for (..., K) @ (K, N), as one 2-D MatMul, a BiasAdd and
    the activation, the form that fuses (_FUSED_ACTIVATIONS). Without a bias, the BiasAdd adds kernel[0] * 0:
    the optimiser folds away a constant zero bias, and the fusion with it (bf16 2.7x slower)."""
    units = kernel.shape[-1]
    kernel = tf.cast(kernel, hidden_states.dtype)  # Keras' autocast does not reach every trace of the call
    outputs = tf.matmul(tf.reshape(hidden_states, (-1, kernel.shape[0])), kernel)
    outputs = tf.nn.bias_add(outputs, kernel[0] * 0 if bias is None else tf.cast(bias, outputs.dtype))
    outputs = _FUSED_ACTIVATIONS.get(activation, _ACTIVATIONS[activation])(outputs)
    return tf.reshape(outputs, tf.concat([tf.shape(hidden_states)[:-1], [units]], axis=0))


def _normal(stddev):
    return keras.initializers.RandomNormal(stddev=stddev)


def _uniform(limit):
    return keras.initializers.RandomUniform(-limit, limit)


def _dense(units, config, use_bias=True, **kwargs):
    """A Dense layer initialised like the reference's Linear layers: N(0, initializer_range), zero bias."""
    return keras.layers.Dense(units, use_bias=use_bias, kernel_initializer=_normal(config.initializer_range), **kwargs)


def _layer_norm(epsilon):
    return keras.layers.LayerNormalization(epsilon=epsilon)


def _seeded_dropout(hidden_states, rate, seed):
    """Dropout whose mask is a function of ``seed`` ((2,) int), or the identity when seed is None (eval).

    A recomputed layer (gradient checkpointing) gets the seed it ran with, so it draws the same masks.
    """
    if seed is None or rate == 0.0:
        return hidden_states
    if rate == 1.0:
        return tf.zeros_like(hidden_states)
    return tf.nn.experimental.stateless_dropout(hidden_states, rate=rate, seed=seed)


def _layer_seeds(seed, count):
    """``count`` independent (2,) int32 seeds from one, or Nones (eval)."""
    if seed is None:
        return (None,) * count
    # Seed generators keep int64 state; XLA's stateless random ops take int32 seeds.
    seed = tf.cast(tf.math.floormod(tf.cast(seed, tf.int64), tf.int32.max - 1), tf.int32)
    return tf.unstack(tf.random.experimental.stateless_split(seed, count))


def _frame_mask(config, attention_mask, num_frames, add_adapter):
    """Frame-level validity (B, T) bool from a sample-level attention mask (B, S)."""
    lengths = feat_extract_output_lengths(config, tf.reduce_sum(tf.cast(attention_mask, tf.int32), -1), add_adapter)
    return tf.range(num_frames)[None, :] < lengths[:, None]


def _sparse_cross_entropy(logits, labels):
    """Mean cross-entropy over rows, in float32. logits (N, L), labels (N,)."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32)
    )
    return tf.reduce_mean(losses)


def ctc_loss(logits, labels, input_lengths, *, blank, reduction="sum", zero_infinity=False):
    """CTC loss normalised like PyTorch's ``F.ctc_loss``.

    logits: (B, T, V); labels: (B, L) int, padded with negative values (-100); input_lengths: (B,).
    "mean" divides each utterance's loss by its target length, then averages over the batch.
    """
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    valid = labels >= 0
    target_lengths = tf.reduce_sum(tf.cast(valid, tf.int32), -1)
    # Move each row's labels in front of its padding, keeping their order: (B, L)
    order = tf.argsort(tf.cast(~valid, tf.int32), axis=-1, stable=True)
    packed = tf.gather(tf.where(valid, labels, tf.zeros_like(labels)), order, batch_dims=1)
    input_lengths = tf.cast(input_lengths, tf.int32)
    losses = tf.nn.ctc_loss(
        tf.cast(packed, tf.int32), log_probs, target_lengths, input_lengths, logits_time_major=False, blank_index=blank
    )
    # An alignment needs a frame per label plus a blank between equal neighbours. TensorFlow returns a
    # large finite loss when there are fewer frames; PyTorch returns inf, or 0 with zero_infinity.
    in_target = tf.range(tf.shape(packed)[1] - 1)[None, :] < target_lengths[:, None] - 1
    repeats = tf.reduce_sum(tf.cast((packed[:, 1:] == packed[:, :-1]) & in_target, tf.int32), -1)
    feasible = input_lengths >= target_lengths + repeats
    impossible_loss = tf.zeros_like(losses) if zero_infinity else tf.fill(tf.shape(losses), np.inf)
    losses = tf.where(feasible, losses, impossible_loss)
    if reduction == "sum":
        return tf.reduce_sum(losses)
    if reduction == "mean":
        return tf.reduce_mean(losses / tf.cast(tf.maximum(target_lengths, 1), tf.float32))
    return losses


# ---------------------------------------------------------------------------------------- blocks


def _tap_blocks(hidden_states, kernel, stride):
    """[(rows, first tap)]: for each block of `stride` taps of a "VALID" conv (the last may be shorter),
    the (B, T', taps * C) slice of x's rows of `stride` samples that the block reads (x (B, S, C) cut
    into rows of `stride` consecutive samples: frame t's window is rows t, t + 1, ...)."""
    channels = hidden_states.shape[-1]
    samples = tf.shape(hidden_states)[1]
    frames = (samples - kernel) // stride + 1
    blocks = -(-kernel // stride)
    rows = frames + blocks - 1
    hidden_states = tf.pad(hidden_states, [[0, 0], [0, tf.maximum(0, rows * stride - samples)], [0, 0]])
    hidden_states = tf.reshape(hidden_states[:, :rows * stride], (tf.shape(hidden_states)[0], rows, stride * channels))
    return [(hidden_states[:, j:j + frames, :min(stride, kernel - j * stride) * channels], j * stride)
            for j in range(blocks)]


def _strided_windows(hidden_states, kernel, stride):
    """Every frame's window of a "VALID" conv: (B, S, C) -> (B, T', kernel * C), tap-major (the rows of a
    (kernel, C, C_out) kernel reshaped), a copy."""
    return tf.concat([rows for rows, _ in _tap_blocks(hidden_states, kernel, stride)], axis=-1)


class ConvLayer(keras.layers.Layer):
    """One conv of the feature encoder: Conv1D, optional norm, activation. (B, T, C_in) -> (B, T', C_out)."""

    def __init__(self, config, layer_id, **kwargs):
        super().__init__(**kwargs)
        in_channels = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
        kernel = config.conv_kernel[layer_id]
        self.kernel_size, self.stride = kernel, config.conv_stride[layer_id]
        # Kaiming-normal weights and a uniform bias, like the reference's Conv1d initialisation.
        bias_limit = math.sqrt(1.0 / (in_channels * kernel))
        self.conv = keras.layers.Conv1D(
            config.conv_dim[layer_id], kernel, strides=config.conv_stride[layer_id], use_bias=config.conv_bias,
            kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal"),
            bias_initializer=_uniform(bias_limit),
        )
        # The reference's PyTorch conv norms use eps 1e-5 whatever layer_norm_eps says.
        if config.feat_extract_norm == "layer":
            self.layer_norm = _layer_norm(1e-5)
        elif layer_id == 0:  # group norm with one group per channel: normalises each channel over time
            self.layer_norm = keras.layers.GroupNormalization(groups=config.conv_dim[0], epsilon=1e-5)
        else:
            self.layer_norm = None
        self.activation = config.feat_extract_activation  # a name in _ACTIVATIONS

    def call(self, hidden_states, folded_norm=None):
        """With `folded_norm` (``folded_group_norm``'s weight and bias of one utterance, the whole one when
        hidden_states is a span of it), the conv and its GroupNorm run as one matmul."""
        if folded_norm is not None:
            return _matmul_activation(
                _strided_windows(hidden_states, self.kernel_size, self.stride), *folded_norm, self.activation)
        hidden_states = self.conv(hidden_states)
        if self.layer_norm is not None:
            hidden_states = self.layer_norm(hidden_states)
        return _ACTIVATIONS[self.activation](hidden_states)

    def call_as_matmul(self, hidden_states):
        """The layer without a norm as a matmul over its windows with the activation fused (copied windows
        where the kernel is longer than its stride): in TensorFlow's graphs faster than the Conv1D and the
        activation after it (a bf16 span's 512-channel layer 1: 8.8 against 12.7 ms; the fp32 model as a
        graph 639 against 684 ms), slower under XLA (695 against 672 ms)."""
        if self.layer_norm is not None:
            return self.call(hidden_states)
        kernel = tf.reshape(self.conv.kernel, (-1, self.conv.kernel.shape[-1]))  # (kernel * C_in, C_out)
        windows = _strided_windows(hidden_states, self.kernel_size, self.stride)
        return _matmul_activation(windows, kernel, self.conv.bias if self.conv.use_bias else None, self.activation)

    def folded_group_norm(self, hidden_states):
        """The conv and its GroupNorm (one group per channel, over time) as one matmul per utterance:
        (B, S, 1) -> the weight (B, kernel, C_out) and bias (B, C_out) that ``call`` applies to the windows,
        in the input's dtype.

        A channel's output is its kernel column w times the window c, so its mean over frames is
        w . mean(c) and its variance w Cov(c) w^T: the statistics come from the windows' mean and
        covariance (float64, without computing the large output), and the norm's scale and shift fold
        into a weight and bias per utterance. The conv's own bias cancels in the norm."""
        dtype = hidden_states.dtype
        kernel = tf.cast(tf.cast(self.conv.kernel, dtype), tf.float64)  # the weights the conv would use
        kernel = tf.reshape(kernel, (-1, kernel.shape[-1]))  # (kernel * C_in, C_out)
        windows = _strided_windows(tf.cast(hidden_states, tf.float64), self.kernel_size, self.stride)
        mean = tf.reduce_mean(windows, axis=1)  # (B, taps)
        centred = windows - mean[:, None]
        covariance = tf.matmul(centred, centred, transpose_a=True) / tf.cast(tf.shape(windows)[1], tf.float64)
        variance = tf.einsum("ko,bkl,lo->bo", kernel, covariance, kernel)  # (B, C_out)
        norm = self.layer_norm
        scale = tf.cast(norm.gamma, tf.float64) * tf.math.rsqrt(variance + norm.epsilon)
        shift = tf.cast(norm.beta, tf.float64) - tf.matmul(mean, kernel) * scale
        return tf.cast(kernel[None] * scale[:, None], dtype), tf.cast(shift, dtype)


class FeatureEncoder(keras.layers.Layer):
    """The conv stack over the raw waveform. (B, S) -> (B, T, conv_dim[-1]).

    Every layer but a GroupNorm is local in time, so in a graph (tf.function; eagerly the loop cost more
    than it saved), outside gradient checkpointing and for inputs of a known batch and length, the stack
    runs utterance by utterance and span by span of SPAN_FRAMES output frames, each from its own
    samples, in a loop: the early layers' activations (64 times the size of the last one's) then stay
    in the caches, and the memory is bounded whatever the input's length. A GroupNorm's statistics are
    over the whole utterance: they fold into the first layer's weights up front
    (``ConvLayer.folded_group_norm``)."""

    # Output frames per span, as the other backends' (docs/performance.md): 128 (2.6 s)
    SPAN_FRAMES = 128

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.conv_layers = [ConvLayer(config, i) for i in range(config.num_feat_extract_layers)]
        self.gradient_checkpointing = False

    def call(self, input_values, training=False):
        # (B, S, 1); expand_dims, not [:, :, None]: TFLite has no builtin for a slice adding an axis
        hidden_states = tf.expand_dims(input_values, -1)
        built = all(layer.built for layer in self.conv_layers)  # the first call builds them the plain way
        if (built and not tf.executing_eagerly() and not (self.gradient_checkpointing and training)
                and None not in hidden_states.shape[:2]):
            return self.by_spans(hidden_states)
        for conv_layer in self.conv_layers:
            if self.gradient_checkpointing and training:
                hidden_states = tf.recompute_grad(conv_layer)(hidden_states)
            else:
                hidden_states = conv_layer(hidden_states)
        return hidden_states

    def by_spans(self, hidden_states, span_frames=None):
        """The stack span by span: (B, S, 1) with B and S known -> (B, T, conv_dim[-1]); spans of
        `span_frames` (default SPAN_FRAMES) output frames."""
        config = self.config
        batch, samples = hidden_states.shape[0], hidden_states.shape[1]
        checks.waveform_shape(config, (batch, samples), True, hidden_states.dtype.name)  # long enough
        first = self.conv_layers[0]
        folded = first.folded_group_norm(hidden_states) if config.feat_extract_norm == "group" else None
        plan = conv_spans(config, samples, span_frames or self.SPAN_FRAMES)
        padded = tf.pad(hidden_states, [[0, 0], [0, max(0, plan.padded_samples - samples)], [0, 0]])  # last span's

        def encode(chunk, utterance):  # one span of one utterance: (1, span_samples, 1) -> (1, span, C)
            chunk = first(chunk, None if folded is None else (folded[0][utterance], folded[1][utterance]))
            for layer in self.conv_layers[1:]:
                chunk = layer.call_as_matmul(chunk)
            return chunk

        outputs = []
        for utterance in range(batch):  # one at a time: each layer's input is one (frames, channels) matrix
            chunks = tf.stack([padded[utterance:utterance + 1, plan.start(i):plan.start(i) + plan.span_samples]
                               for i in range(plan.count)])
            out = tf.map_fn(lambda chunk: encode(chunk, utterance), chunks, fn_output_signature=self.compute_dtype)
            outputs.append(tf.reshape(out, (plan.count * plan.span, out.shape[-1]))[:plan.frames])  # (T, C)
        return tf.stack(outputs)


class FeatureProjection(keras.layers.Layer):
    """LayerNorm then projection to the encoder width. Returns (projected (B, T, hidden), normed (B, T, C))."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.layer_norm = _layer_norm(config.layer_norm_eps)
        limit = math.sqrt(1.0 / config.conv_dim[-1])
        self.projection = keras.layers.Dense(
            config.hidden_size, kernel_initializer=_uniform(limit), bias_initializer=_uniform(limit)
        )
        self.dropout = keras.layers.Dropout(config.feat_proj_dropout)

    def call(self, hidden_states, training=False):
        normed = self.layer_norm(hidden_states)
        projected = self.dropout(self.projection(normed), training=training)
        return projected, normed


class WeightNormConv(keras.layers.Layer):
    """Grouped conv whose weight is ``weight_g * weight_v / ||weight_v||``, one norm per kernel tap.
    (B, T, C) -> (B, T + 1 - K % 2, C).

    weight_v (C, C/groups, K) and weight_g (K, 1, 1) as the reference TF stores them. The grouped conv
    runs as one conv per group, concatenated: TensorFlow has no CPU gradient for a grouped conv, and XLA
    fuses the groups.
    """

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        channels, kernel = config.hidden_size, config.num_conv_pos_embeddings
        self.groups = config.num_conv_pos_embedding_groups
        self.kernel_size = kernel
        self.weight_v = self.add_weight(
            shape=(channels, channels // self.groups, kernel), name="weight_v",
            initializer=_normal(2.0 * math.sqrt(1.0 / (kernel * channels))),
        )
        self.weight_g = self.add_weight(shape=(kernel, 1, 1), name="weight_g", initializer="ones")
        self.weight_g.assign(tf.transpose(self._tap_norms()))  # start as the plain conv weight_v
        self.bias = self.add_weight(shape=(channels,), name="bias", initializer="zeros")

    def _tap_norms(self):
        return tf.sqrt(tf.reduce_sum(tf.square(self.weight_v), axis=(0, 1), keepdims=True))  # (1, 1, K)

    def call(self, hidden_states):
        weight = tf.transpose(self.weight_g) * self.weight_v / self._tap_norms()  # (C, C/G, K)
        kernel = tf.transpose(weight, (2, 1, 0))  # (K, C/G, C)
        pad = self.kernel_size // 2
        padded = tf.pad(hidden_states, [[0, 0], [pad, pad], [0, 0]])  # (B, T + 2 pad, C)
        inputs = tf.split(padded, self.groups, axis=-1)
        kernels = tf.split(kernel, self.groups, axis=-1)
        outputs = [tf.nn.conv1d(x, k, stride=1, padding="VALID") for x, k in zip(inputs, kernels)]
        return tf.concat(outputs, axis=-1) + self.bias


class PositionalConvEmbedding(keras.layers.Layer):
    """The weight-normalised conv over time giving relative position, then the activation. (B, T, C) -> (B, T, C)."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.conv = WeightNormConv(config)
        self.trim_last_frame = config.num_conv_pos_embeddings % 2 == 0  # an even kernel gives one frame too many
        self.activation = _ACTIVATIONS[config.feat_extract_activation]

    def call(self, hidden_states):
        hidden_states = self.conv(hidden_states)
        if self.trim_last_frame:
            hidden_states = hidden_states[:, :-1]
        return self.activation(hidden_states)


class Attention(keras.layers.Layer):
    """Multi-head self-attention. (B, T, C) -> (B, T, C), and the weights (B, H, T, T)."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        self.k_proj = _dense(config.hidden_size, config)
        self.v_proj = _dense(config.hidden_size, config)
        self.q_proj = _dense(config.hidden_size, config)
        self.out_proj = _dense(config.hidden_size, config)
        self.dropout_rate = config.attention_dropout

    def _split_heads(self, x):  # (B, T, C) -> (B, H, T, D)
        batch, frames = tf.shape(x)[0], tf.shape(x)[1]
        return tf.transpose(tf.reshape(x, (batch, frames, self.num_heads, self.head_dim)), (0, 2, 1, 3))

    def call(self, hidden_states, attention_bias=None, seed=None):
        """seed: (2,) int32 for the dropout of the attention weights in training, None in evaluation."""
        query = self._split_heads(self.q_proj(hidden_states) * self.scale)
        key = self._split_heads(self.k_proj(hidden_states))
        value = self._split_heads(self.v_proj(hidden_states))
        scores = tf.matmul(query, key, transpose_b=True)  # (B, H, T, T)
        if attention_bias is not None:
            scores = scores + attention_bias
        weights = tf.nn.softmax(scores, axis=-1)
        dropped = _seeded_dropout(weights, self.dropout_rate, seed)
        context = tf.transpose(tf.matmul(dropped, value), (0, 2, 1, 3))  # (B, T, H, D)
        context = tf.reshape(context, tf.shape(hidden_states))  # (B, T, C)
        return self.out_proj(context), weights


class FeedForward(keras.layers.Layer):
    """Position-wise MLP. (B, T, C) -> (B, T, C)."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.intermediate_dropout_rate = config.activation_dropout
        self.intermediate_dense = _dense(config.intermediate_size, config)
        self.activation = config.hidden_act  # a name in _ACTIVATIONS
        self.output_dense = _dense(config.hidden_size, config)
        self.output_dropout_rate = config.hidden_dropout

    def call(self, hidden_states, seed=None):
        """seed: (2,) int32 for the two dropouts in training, None in evaluation."""
        intermediate_seed, output_seed = _layer_seeds(seed, 2)
        dense = self.intermediate_dense
        # Fused in float32 and bf16 graphs (bf16 weights: 265 vs 281 ms per 10 s); eagerly nothing
        # fuses, fp16 is unmeasured, and a quantized Dense holds int8 kernels that its own call scales
        if (tf.executing_eagerly() or not dense.built or hidden_states.dtype == tf.float16
                or dense.quantization_mode is not None):
            hidden_states = _ACTIVATIONS[self.activation](dense(hidden_states))
        else:
            hidden_states = _matmul_activation(hidden_states, dense.kernel, dense.bias, self.activation)
        hidden_states = _seeded_dropout(hidden_states, self.intermediate_dropout_rate, intermediate_seed)
        return _seeded_dropout(self.output_dense(hidden_states), self.output_dropout_rate, output_seed)


class EncoderLayer(keras.layers.Layer):
    """Post-norm transformer layer (wav2vec2-base style).

    Its dropout masks are a function of ``seed`` ((2,) int, drawn by the Encoder; None in evaluation),
    never of a seed generator: a layer recomputed in the backward pass (gradient checkpointing)
    must draw the masks it ran with.
    """

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.attention = Attention(config)
        self.dropout_rate = config.hidden_dropout
        self.layer_norm = _layer_norm(config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.final_layer_norm = _layer_norm(config.layer_norm_eps)

    def call(self, hidden_states, attention_bias=None, seed=None):
        attention_seed, dropout_seed, feed_forward_seed = _layer_seeds(seed, 3)
        attended, weights = self.attention(hidden_states, attention_bias, seed=attention_seed)
        hidden_states = self.layer_norm(hidden_states + _seeded_dropout(attended, self.dropout_rate, dropout_seed))
        hidden_states = hidden_states + self.feed_forward(hidden_states, seed=feed_forward_seed)
        return self.final_layer_norm(hidden_states), weights


class AttnAdapterLayer(keras.layers.Layer):
    """MMS per-language adapter: LayerNorm, down-projection, ReLU, up-projection. (B, T, C) -> (B, T, C)."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.norm = _layer_norm(1e-5)
        self.linear_1 = _dense(config.adapter_attn_dim, config)
        self.linear_2 = _dense(config.hidden_size, config)

    def call(self, hidden_states):
        return self.linear_2(tf.nn.relu(self.linear_1(self.norm(hidden_states))))


class StableEncoderLayer(EncoderLayer):
    """Pre-norm transformer layer (large-lv60 / XLS-R style), with the MMS adapter when configured."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.adapter_layer = AttnAdapterLayer(config) if config.adapter_attn_dim is not None else None

    def call(self, hidden_states, attention_bias=None, seed=None):
        attention_seed, dropout_seed, feed_forward_seed = _layer_seeds(seed, 3)
        attended, weights = self.attention(self.layer_norm(hidden_states), attention_bias, seed=attention_seed)
        hidden_states = hidden_states + _seeded_dropout(attended, self.dropout_rate, dropout_seed)
        hidden_states = hidden_states + self.feed_forward(self.final_layer_norm(hidden_states), seed=feed_forward_seed)
        if self.adapter_layer is not None:
            hidden_states = hidden_states + self.adapter_layer(hidden_states)
        return hidden_states, weights


class Encoder(keras.layers.Layer):
    """Positional conv embedding plus the transformer layers. (B, T, C) -> (B, T, C).

    Post-norm (base) normalises after the positional embedding; pre-norm (stable) at the very end.
    In training every layer call draws its LayerDrop decision and its dropout seed here, outside the
    layer, so that with gradient_checkpointing (tf.recompute_grad) the recomputed layer is the one that ran.
    """

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.stable = config.do_stable_layer_norm
        self.layerdrop = config.layerdrop
        self.pos_conv_embed = PositionalConvEmbedding(config)
        self.layer_norm = _layer_norm(config.layer_norm_eps)
        self.dropout = keras.layers.Dropout(config.hidden_dropout)
        layer_class = StableEncoderLayer if self.stable else EncoderLayer
        self.layers = [layer_class(config) for _ in range(config.num_hidden_layers)]
        self.seed_generator = keras.random.SeedGenerator()
        self.gradient_checkpointing = False

    def call(self, hidden_states, frame_mask=None, training=False, output_hidden_states=False, output_attentions=False):
        attention_bias = None
        if frame_mask is not None:
            # Padded frames are zeroed before the positional conv and hidden from every query.
            # (expand_dims rather than None-indexing, which TFLite has no builtin for)
            hidden_states = hidden_states * tf.expand_dims(tf.cast(frame_mask, hidden_states.dtype), -1)
            attention_bias = tf.where(frame_mask, 0.0, hidden_states.dtype.min)
            attention_bias = tf.expand_dims(tf.expand_dims(attention_bias, 1), 1)  # (B, 1, 1, T)
            attention_bias = tf.cast(attention_bias, hidden_states.dtype)
        hidden_states = hidden_states + self.pos_conv_embed(hidden_states)
        if not self.stable:
            hidden_states = self.layer_norm(hidden_states)
        hidden_states = self.dropout(hidden_states, training=training)

        all_hidden_states, all_attentions = [], []
        for layer in self.layers:
            all_hidden_states.append(hidden_states)
            hidden_states, weights = self._run_layer(layer, hidden_states, attention_bias, training, output_attentions)
            all_attentions.append(weights)
        if self.stable:
            hidden_states = self.layer_norm(hidden_states)
        all_hidden_states.append(hidden_states)
        return (
            hidden_states,
            tuple(all_hidden_states) if output_hidden_states else None,
            tuple(all_attentions) if output_attentions else None,
        )

    def _run_layer(self, layer, hidden_states, attention_bias, training, output_attentions):
        """(hidden states, attention weights or None) of one layer."""
        seed = self.seed_generator.next() if training else None
        # LayerDrop: skip the whole layer with probability layerdrop (its attention weights read as 0).
        skip = None
        if training and self.layerdrop > 0:
            skip = keras.random.uniform((), seed=self.seed_generator) < self.layerdrop

        def run(hidden_states):
            def layer_outputs():
                outputs, weights = layer(hidden_states, attention_bias, seed=seed)
                # Only what is returned is kept for the backward pass: without output_attentions,
                # a checkpointed layer keeps none of its (B, H, T, T) weights.
                return (outputs, weights) if output_attentions else outputs

            def skipped():
                if not output_attentions:
                    return hidden_states
                batch, frames = tf.shape(hidden_states)[0], tf.shape(hidden_states)[1]
                return hidden_states, tf.zeros((batch, layer.attention.num_heads, frames, frames), hidden_states.dtype)

            return layer_outputs() if skip is None else tf.cond(skip, skipped, layer_outputs)

        if self.gradient_checkpointing and training:
            # The LayerDrop tf.cond sits inside the recomputed function: TensorFlow cannot take the
            # gradient of a cond whose branch is a recompute_grad over variables.
            run = tf.recompute_grad(run)
        outputs = run(hidden_states)
        return outputs if output_attentions else (outputs, None)


class AdapterLayer(keras.layers.Layer):
    """Strided conv (padding 1) then a gated linear unit. (B, T, C) -> (B, T', C)."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        channels, kernel = config.output_hidden_size, config.adapter_kernel_size
        bias_limit = math.sqrt(1.0 / (channels * kernel))
        self.conv = keras.layers.Conv1D(
            2 * channels, kernel, strides=config.adapter_stride,
            kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal"),
            bias_initializer=_uniform(bias_limit),
        )

    def call(self, hidden_states):
        hidden_states = self.conv(tf.pad(hidden_states, [[0, 0], [1, 1], [0, 0]]))  # (B, T', 2C)
        values, gates = tf.split(hidden_states, 2, axis=-1)
        return values * tf.sigmoid(gates)


class Adapter(keras.layers.Layer):
    """Conv adapter after the encoder (add_adapter): optional projection, then strided GLU convs.

    LayerDrop skips a whole strided conv, so the output length depends on the draw: it runs eagerly
    and in a tf.function, but not under XLA, which needs static shapes (train with layerdrop=0 there).
    """

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        if config.output_hidden_size != config.hidden_size:
            self.proj = _dense(config.output_hidden_size, config)
            self.proj_layer_norm = _layer_norm(1e-5)
        else:
            self.proj = self.proj_layer_norm = None
        self.layers = [AdapterLayer(config) for _ in range(config.num_adapter_layers)]
        self.layerdrop = config.layerdrop
        self.seed_generator = keras.random.SeedGenerator()

    def call(self, hidden_states, training=False):
        if self.proj is not None:
            hidden_states = self.proj_layer_norm(self.proj(hidden_states))
        for layer in self.layers:
            if training and self.layerdrop > 0:
                skip = keras.random.uniform((), seed=self.seed_generator) < self.layerdrop
                hidden_states = tf.cond(skip, lambda: hidden_states, lambda: layer(hidden_states))
            else:
                hidden_states = layer(hidden_states)
        return hidden_states


class GumbelVectorQuantizer(keras.layers.Layer):
    """Product quantizer: per group, pick one of V codevectors. (B, T, C_conv) -> (B, T, codevector_dim).

    Training picks by a straight-through Gumbel softmax (noise given as ``gumbel_noise`` (B, T, G, V) or
    drawn here); evaluation by argmax. Also returns the perplexity of the (masked) code distribution.
    """

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.num_groups = config.num_codevector_groups
        self.num_vars = config.num_codevectors_per_group
        self.codevectors = self.add_weight(
            shape=(1, self.num_groups * self.num_vars, config.codevector_dim // self.num_groups),
            name="codevectors", initializer=keras.initializers.RandomUniform(0.0, 1.0),
        )
        self.weight_proj = keras.layers.Dense(self.num_groups * self.num_vars, kernel_initializer=_normal(1.0))
        # A variable rather than a float, so that a compiled train step sees updates.
        self.temperature = self.add_weight(
            shape=(), name="temperature", initializer=keras.initializers.Constant(2.0), trainable=False
        )
        self.seed_generator = keras.random.SeedGenerator()

    @staticmethod
    def _perplexity(probs, mask):
        """probs (N, G, V), mask (N,) bool or None -> summed exp-entropy of the marginal per group."""
        if mask is None:
            marginal = tf.reduce_mean(probs, axis=0)
        else:
            mask = tf.cast(mask, probs.dtype)[:, None, None]
            marginal = tf.reduce_sum(probs * mask, axis=0) / tf.reduce_sum(mask)
        return tf.reduce_sum(tf.exp(-tf.reduce_sum(marginal * tf.math.log(marginal + 1e-7), axis=-1)))

    def call(self, hidden_states, mask_time_indices=None, training=False, gumbel_noise=None):
        batch, frames = tf.shape(hidden_states)[0], tf.shape(hidden_states)[1]
        logits = tf.reshape(self.weight_proj(hidden_states), (-1, self.num_groups, self.num_vars))  # (B*T, G, V)
        logits = tf.cast(logits, tf.float32)
        mask = None if mask_time_indices is None else tf.reshape(mask_time_indices, (-1,))
        if training:
            if gumbel_noise is None:
                uniform = keras.random.uniform(tf.shape(logits), minval=1e-10, maxval=1.0, seed=self.seed_generator)
                gumbel_noise = -tf.math.log(-tf.math.log(uniform))
            gumbel_noise = tf.reshape(tf.cast(gumbel_noise, tf.float32), tf.shape(logits))
            soft = tf.nn.softmax((logits + gumbel_noise) / self.temperature, axis=-1)
            hard = tf.one_hot(tf.argmax(soft, axis=-1), self.num_vars, dtype=soft.dtype)
            probs = hard - tf.stop_gradient(soft) + soft  # straight-through: hard forward, soft gradient
            perplexity = self._perplexity(tf.nn.softmax(logits, axis=-1), mask)
        else:
            probs = tf.one_hot(tf.argmax(logits, axis=-1), self.num_vars, dtype=logits.dtype)
            perplexity = self._perplexity(probs, mask)
        codebook = tf.reshape(self.codevectors, (self.num_groups, self.num_vars, -1))  # (G, V, D/G)
        codevectors = tf.einsum("ngv,gvd->ngd", tf.cast(probs, codebook.dtype), codebook)  # (B*T, G, D/G)
        return tf.reshape(codevectors, (batch, frames, -1)), perplexity


class TDNNLayer(keras.layers.Layer):
    """Dilated conv of the x-vector head, stored as a Dense over stacked taps. (B, T, C) -> (B, T', C')."""

    def __init__(self, config, layer_id, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = config.tdnn_kernel[layer_id]
        self.dilation = config.tdnn_dilation[layer_id]
        self.kernel = _dense(config.tdnn_dim[layer_id], config)

    def call(self, hidden_states):
        span = self.dilation * (self.kernel_size - 1)
        frames = tf.shape(hidden_states)[1] - span
        # Tap j reads frame t + j * dilation; taps are stacked tap-major, as the Dense kernel expects.
        taps = [hidden_states[:, j * self.dilation : j * self.dilation + frames] for j in range(self.kernel_size)]
        return tf.nn.relu(self.kernel(tf.concat(taps, axis=-1)))  # (B, T - span, C')


class AMSoftmaxLoss(keras.layers.Layer):
    """Additive-margin softmax loss over cosine similarities (scale 30, margin 0.4)."""

    def __init__(self, input_dim, num_labels, scale=30.0, margin=0.4, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.margin, self.num_labels = scale, margin, num_labels
        self.weight = self.add_weight(shape=(input_dim, num_labels), name="weight", initializer=_normal(1.0))

    def call(self, hidden_states, labels):
        labels = tf.reshape(tf.cast(labels, tf.int32), (-1,))
        cos_theta = tf.matmul(tf.math.l2_normalize(hidden_states, axis=1), tf.math.l2_normalize(self.weight, axis=0))
        target = tf.one_hot(labels, self.num_labels) > 0
        logits = self.scale * tf.where(target, cos_theta - self.margin, cos_theta)
        return _sparse_cross_entropy(logits, labels)


# ---------------------------------------------------------------------------------------- models


class Wav2Vec2PreTrainedModel(keras.Model):
    """What every model shares: weights in the canonical layout, loading, saving, and a Keras train step."""

    head = None  # the head name of wav2vec2.spec.names.canonical_shapes

    def __init__(self, config: Wav2Vec2Config, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(config, Wav2Vec2Config):
            raise ValueError(f"config must be a wav2vec2.Wav2Vec2Config, got {type(config).__name__}")
        self.config = config
        self.name_or_path = None  # where from_pretrained found the weights; load_adapter looks there
        self.hub_kwargs = {}
        self.loss_tracker = keras.metrics.Mean(name="loss")  # what fit and evaluate report

    def _build_weights(self):
        """Create every weight by running the shortest possible waveform through the model once (eval mode)."""
        self(np.zeros((1, min_input_length(self.config, add_adapter=False)), np.float32))

    # --- canonical weights -------------------------------------------------------------------
    def canonical_variables(self) -> Dict[str, Tuple[keras.Variable, bool]]:
        """{canonical name: (Keras variable, whether its axes are reversed against the canonical array)},
        in the canonical order. The TF names come from one walk over the layers' attributes and map through
        the layout table of wav2vec2.spec.names; a variable it does not know, or a key set other than the
        canonical one of this config and head (a weight out of the walk's reach is missing), is a ValueError."""
        found = {}
        for name, variable in _named_variables(self):
            if variable.name not in _STATE_VARIABLES:
                key, reversed_axes = names.tf_key(name)
                found[key] = (variable, reversed_axes)
        expected = names.canonical_shapes(self.config, self.head)
        names.check_keys(found, expected, type(self).__name__)
        return {key: found[key] for key in expected}

    def canonical_state_dict(self) -> Dict[str, np.ndarray]:
        """Every weight as a NumPy array under its reference PyTorch name and layout."""
        return {key: names.relayout(v.numpy(), rev) for key, (v, rev) in self.canonical_variables().items()}

    def canonical_shapes(self) -> Dict[str, tuple]:
        """Canonical name -> canonical shape of every weight."""
        return _canonical_shapes(self.canonical_variables())

    def load_canonical_state_dict(self, state):
        """Assign weights from a canonical dict; every key must be known and every weight given."""
        variables = self.canonical_variables()
        state = names.checked_state(state, _canonical_shapes(variables), type(self).__name__)
        for key, (variable, reversed_axes) in variables.items():
            variable.assign(names.relayout(state[key], reversed_axes).astype(variable.dtype))

    # --- loading and saving (wav2vec2.pretrained) --------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_repo_id, target_lang=None, config=None, **hub_kwargs):
        """Load config.json and the weights of any supported format from a directory or hub repo.

        Head weights the checkpoint lacks keep their fresh initialisation (a warning names them);
        weights of other heads are dropped. ``target_lang`` loads that MMS adapter too."""
        return pretrained.from_pretrained(cls, path_or_repo_id, target_lang, config, hub_kwargs)

    def save_pretrained(self, directory, format=None, max_shard_size=None):
        """Write config.json and the weights (tf_model.h5 by default, or another wav2vec2.io format).
        The directory is left with these weights only (see wav2vec2.pretrained)."""
        pretrained.save_pretrained(self, directory, format or "tensorflow", max_shard_size)

    # --- training -----------------------------------------------------------------------------
    def freeze_feature_encoder(self):
        self._body().feature_extractor.trainable = False

    def gradient_checkpointing_enable(self):
        """Recompute conv layers and encoder layers in the backward pass (tf.recompute_grad) instead of
        storing their activations; dropout and LayerDrop draw the same as without. A tf.function
        traced before the switch keeps what it traced."""
        self._body().feature_extractor.gradient_checkpointing = True
        self._body().encoder.gradient_checkpointing = True

    def gradient_checkpointing_disable(self):
        self._body().feature_extractor.gradient_checkpointing = False
        self._body().encoder.gradient_checkpointing = False

    def _body(self):
        return self.wav2vec2

    @property
    def metrics(self):
        return [self.loss_tracker]

    @staticmethod
    def _unpack(data):
        """(waveforms, call kwargs) from a fit/evaluate batch: x is the waveforms or a dict of inputs, y the labels."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        inputs = dict(x) if isinstance(x, dict) else {"input_values": x}
        if y is not None:
            inputs["labels"] = y
        return inputs.pop("input_values"), inputs

    def train_step(self, data):
        """One optimizer step on the loss the model computes itself."""
        input_values, inputs = self._unpack(data)
        with tf.GradientTape() as tape:
            loss = self(input_values, training=True, **inputs).loss
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        input_values, inputs = self._unpack(data)
        self.loss_tracker.update_state(self(input_values, training=False, **inputs).loss)
        return {"loss": self.loss_tracker.result()}


def _check_inputs(config, input_values, attention_mask):
    """Validate and convert the waveform batch (B, S) (or one waveform (S,)) and its mask (wav2vec2.spec.checks)."""
    input_values = tf.convert_to_tensor(input_values)
    checks.waveform_shape(config, input_values.shape, input_values.dtype.is_floating, input_values.dtype.name)
    if input_values.shape.rank == 1:
        input_values = input_values[None]
    if attention_mask is not None:
        attention_mask = tf.convert_to_tensor(attention_mask)
        checks.attention_mask_shape(attention_mask.shape, input_values.shape)
        if attention_mask.shape.rank == 1:
            attention_mask = attention_mask[None]
    return input_values, attention_mask


def _is_integer(tensor) -> bool:
    return tensor.dtype.is_integer


def _sample_counts(input_values, attention_mask):
    """Valid samples per utterance (B,) int32, from the mask or the full length."""
    if attention_mask is None:
        return tf.fill(tf.shape(input_values)[:1], tf.shape(input_values)[1])
    return tf.reduce_sum(tf.cast(attention_mask, tf.int32), -1)


def _check_loss_samples(sample_counts):
    """With labels, no utterance may be all padding (checked where the values are known: eagerly)."""
    if tf.executing_eagerly():
        checks.samples_for_loss(sample_counts.numpy())


class Wav2Vec2Model(Wav2Vec2PreTrainedModel):
    """The bare encoder: waveform (B, S) -> last_hidden_state (B, T, C) and extract_features (B, T, C_conv)."""

    head = "model"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.feature_extractor = FeatureEncoder(config)
        self.feature_projection = FeatureProjection(config)
        if config.mask_time_prob > 0 or config.mask_feature_prob > 0:
            self.masked_spec_embed = self.add_weight(
                shape=(config.hidden_size,), name="masked_spec_embed", initializer=keras.initializers.RandomUniform(0.0, 1.0)
            )
        else:
            self.masked_spec_embed = None
        self.encoder = Encoder(config)
        self.adapter = Adapter(config) if config.add_adapter else None
        # Seeds the NumPy Generator of SpecAugment masks drawn here (as the dropout seed generators are seeded)
        self.spec_augment_seed_generator = keras.random.SeedGenerator()
        self._build_weights()

    def _body(self):
        return self

    def call(
        self, input_values, attention_mask=None, mask_time_indices=None, mask_feature_indices=None,
        output_attentions=False, output_hidden_states=False, spec_augment_rng=None, training=False,
    ):
        """SpecAugment (training, apply_spec_augment): ``mask_time_indices`` (B, T) and ``mask_feature_indices``
        (B, C) as computed by wav2vec2.spec.masking; those not given are drawn here with the NumPy
        Generator ``spec_augment_rng``, by default one seeded per call from the model's Keras
        ``spec_augment_seed_generator`` (wav2vec2.spec.masking.seeded_generator). A given time mask applies
        in eval mode too, like the reference. Under XLA pass the masks: drawing them calls into NumPy."""
        input_values, attention_mask = _check_inputs(self.config, input_values, attention_mask)
        extract_features = self.feature_extractor(input_values, training=training)  # (B, T, C_conv)
        frame_mask = None
        if attention_mask is not None:
            frame_mask = _frame_mask(self.config, attention_mask, tf.shape(extract_features)[1], add_adapter=False)
        hidden_states, extract_features = self.feature_projection(extract_features, training=training)
        hidden_states = self._mask_hidden_states(
            hidden_states, mask_time_indices, mask_feature_indices, frame_mask, training, spec_augment_rng
        )
        hidden_states, all_hidden_states, attentions = self.encoder(
            hidden_states, frame_mask, training=training, output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        if self.adapter is not None:
            hidden_states = self.adapter(hidden_states, training=training)
        return Wav2Vec2BaseModelOutput(
            last_hidden_state=hidden_states, extract_features=extract_features, hidden_states=all_hidden_states,
            attentions=attentions,
        )

    def _mask_hidden_states(self, hidden_states, mask_time_indices, mask_feature_indices, frame_mask, training, rng):
        """SpecAugment: masked frames become masked_spec_embed, masked channels become 0."""
        config = self.config
        if not config.apply_spec_augment:
            return hidden_states
        draw_time = mask_time_indices is None and training and config.mask_time_prob > 0
        use_features = training and config.mask_feature_prob > 0
        draw_features = use_features and mask_feature_indices is None
        if draw_time or draw_features:
            time_mask, feature_mask = self._draw_spec_augment(hidden_states, frame_mask, rng)
            mask_time_indices = time_mask if draw_time else mask_time_indices
            mask_feature_indices = feature_mask if draw_features else mask_feature_indices
        if mask_time_indices is not None:
            checks.masked_spec_embed(config)
            mask = tf.cast(tf.convert_to_tensor(mask_time_indices), tf.bool)[:, :, None]  # (B, T, 1)
            hidden_states = tf.where(mask, tf.cast(self.masked_spec_embed, hidden_states.dtype), hidden_states)
        if use_features:
            mask = tf.cast(tf.convert_to_tensor(mask_feature_indices), tf.bool)[:, None, :]  # (B, 1, C)
            hidden_states = tf.where(mask, tf.zeros_like(hidden_states), hidden_states)
        return hidden_states

    def _draw_spec_augment(self, hidden_states, frame_mask, rng):
        """Masks from the NumPy spec layer, drawn at run time (also inside tf.function, not under XLA)."""
        config = self.config
        shape = tf.shape(hidden_states)
        if frame_mask is None:
            frame_mask = tf.ones(shape[:2], tf.bool)
        seed = self.spec_augment_seed_generator.next() if rng is None else tf.zeros((2,), tf.int64)  # unused then

        def draw(frame_mask, seed):
            batch, frames = frame_mask.shape
            time_mask, feature_mask = masking.spec_augment_masks(
                config, batch, frames, rng=masking.seeded_generator(seed) if rng is None else rng,
                frame_attention_mask=frame_mask,
            )
            time_mask = np.zeros((batch, frames), bool) if time_mask is None else time_mask
            feature_mask = np.zeros((batch, config.hidden_size), bool) if feature_mask is None else feature_mask
            return time_mask, feature_mask

        time_mask, feature_mask = tf.numpy_function(draw, [frame_mask, seed], (tf.bool, tf.bool), stateful=True)
        time_mask.set_shape(hidden_states.shape[:2])
        feature_mask.set_shape((hidden_states.shape[0], config.hidden_size))
        return time_mask, feature_mask


class _HeadModel(Wav2Vec2PreTrainedModel):
    """A task head over ``self.wav2vec2``; weights of the body carry the ``wav2vec2.`` prefix."""

    def freeze_base_model(self):
        """Train the head only."""
        self.wav2vec2.trainable = False

    def _layer_weighted_states(self, outputs):
        """The last hidden state, or the softmax-weighted sum of all of them (use_weighted_layer_sum)."""
        if not self.config.use_weighted_layer_sum:
            return outputs.last_hidden_state
        stacked = tf.stack(outputs.hidden_states, axis=0)  # (L + 1, B, T, C)
        weights = tf.nn.softmax(self.layer_weights)[:, None, None, None]
        return tf.reduce_sum(stacked * weights, axis=0)

    def _add_layer_weights(self):
        num_layers = self.config.num_hidden_layers + 1  # the embedding output and every layer
        if self.config.use_weighted_layer_sum:
            self.layer_weights = self.add_weight(
                shape=(num_layers,), name="layer_weights", initializer=keras.initializers.Constant(1.0 / num_layers)
            )

    def _body_outputs(self, input_values, attention_mask, labels, mask_time_indices, mask_feature_indices,
                      output_attentions, output_hidden_states, spec_augment_rng, training):
        """The body's outputs; with use_weighted_layer_sum all hidden states are computed (and returned)."""
        if labels is not None and attention_mask is not None:
            checked, mask = _check_inputs(self.config, input_values, attention_mask)
            _check_loss_samples(_sample_counts(checked, mask))
        return self.wav2vec2(
            input_values, attention_mask=attention_mask, mask_time_indices=mask_time_indices,
            mask_feature_indices=mask_feature_indices, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states or self.config.use_weighted_layer_sum,
            spec_augment_rng=spec_augment_rng, training=training,
        )


class Wav2Vec2ForCTC(_HeadModel):
    """Encoder plus a linear layer over the vocabulary, trained with CTC."""

    head = "ctc"

    def __init__(self, config, target_lang=None, **kwargs):
        super().__init__(config, **kwargs)
        self.target_lang = target_lang
        self.wav2vec2 = Wav2Vec2Model(config)
        self.dropout = keras.layers.Dropout(config.final_dropout)
        self.lm_head = self._make_lm_head(config.vocab_size)
        self.built = True

    def _make_lm_head(self, vocab_size):
        config = self.config
        lm_head = _dense(vocab_size, config)
        lm_head.build((None, config.output_hidden_size if config.add_adapter else config.hidden_size))
        return lm_head

    def call(
        self, input_values, attention_mask=None, labels=None, mask_time_indices=None, mask_feature_indices=None,
        output_attentions=False, output_hidden_states=False, spec_augment_rng=None, training=False,
    ):
        if labels is not None:
            labels = tf.convert_to_tensor(labels)
            checked = _check_inputs(self.config, input_values, None)[0]
            max_label = None
            if tf.executing_eagerly() and labels.shape.rank == 2 and tf.size(labels) > 0 and _is_integer(labels):
                max_label = int(tf.reduce_max(labels))
            checks.ctc_labels(self.config, labels.shape, _is_integer(labels), checked.shape[0], max_label)
        outputs = self._body_outputs(
            input_values, attention_mask, labels, mask_time_indices, mask_feature_indices, output_attentions,
            output_hidden_states, spec_augment_rng, training,
        )
        logits = self.lm_head(self.dropout(outputs.last_hidden_state, training=training))  # (B, T, vocab)
        loss = None
        if labels is not None:
            input_values, attention_mask = _check_inputs(self.config, input_values, attention_mask)
            input_lengths = feat_extract_output_lengths(self.config, _sample_counts(input_values, attention_mask))
            loss = ctc_loss(
                logits, labels, input_lengths, blank=self.config.pad_token_id,
                reduction=self.config.ctc_loss_reduction, zero_infinity=self.config.ctc_zero_infinity,
            )
        return HeadOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)

    def load_adapter(self, target_lang, path_or_repo_id=None, **hub_kwargs):
        """Load ``adapter.{target_lang}.safetensors`` (or .bin, .h5, .msgpack) from where the model came
        from, or from ``path_or_repo_id``. A vocabulary of another size resizes lm_head (and the model
        gets a config of its own with the new vocab_size)."""
        pretrained.load_adapter(self, target_lang, path_or_repo_id, **hub_kwargs)

    def _resize_lm_head(self, config):
        self.config = config
        self.wav2vec2.config = config
        self.lm_head = self._make_lm_head(config.vocab_size)


class Wav2Vec2ForSequenceClassification(_HeadModel):
    """Utterance classification: projection, mean over valid frames, linear classifier."""

    head = "sequence_classification"

    def __init__(self, config, **kwargs):
        checks.no_conv_adapter(config, "Wav2Vec2ForSequenceClassification")
        super().__init__(config, **kwargs)
        self.wav2vec2 = Wav2Vec2Model(config)
        self._add_layer_weights()
        self.projector = _dense(config.classifier_proj_size, config)
        self.projector.build((None, config.hidden_size))
        self.classifier = _dense(config.num_labels, config)
        self.classifier.build((None, config.classifier_proj_size))
        self.built = True

    def call(
        self, input_values, attention_mask=None, labels=None, mask_time_indices=None, mask_feature_indices=None,
        output_attentions=False, output_hidden_states=False, spec_augment_rng=None, training=False,
    ):
        outputs = self._body_outputs(
            input_values, attention_mask, labels, mask_time_indices, mask_feature_indices, output_attentions,
            output_hidden_states, spec_augment_rng, training,
        )
        hidden_states = self.projector(self._layer_weighted_states(outputs))  # (B, T, P)
        if attention_mask is None:
            pooled = tf.reduce_mean(hidden_states, axis=1)
        else:
            batch, frames = tf.shape(hidden_states)[0], tf.shape(hidden_states)[1]
            valid = _frame_mask(self.config, tf.reshape(attention_mask, (batch, -1)), frames, self.config.add_adapter)
            valid = tf.expand_dims(tf.cast(valid, hidden_states.dtype), -1)  # (B, T, 1)
            pooled = tf.reduce_sum(hidden_states * valid, axis=1) / tf.reduce_sum(valid, axis=1)
        logits = self.classifier(pooled)  # (B, num_labels)
        loss = None
        if labels is not None:
            labels = tf.convert_to_tensor(labels)
            checks.class_labels(labels.shape, _is_integer(labels), logits.shape[0], "class ids")
            loss = _sparse_cross_entropy(logits, labels)
        return HeadOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)


class Wav2Vec2ForAudioFrameClassification(_HeadModel):
    """Frame-level classification (e.g. diarization): a linear classifier on every frame."""

    head = "audio_frame_classification"

    def __init__(self, config, **kwargs):
        checks.no_conv_adapter(config, "Wav2Vec2ForAudioFrameClassification")
        super().__init__(config, **kwargs)
        self.wav2vec2 = Wav2Vec2Model(config)
        self._add_layer_weights()
        self.classifier = _dense(config.num_labels, config)
        self.classifier.build((None, config.hidden_size))
        self.built = True

    def call(
        self, input_values, attention_mask=None, labels=None, mask_time_indices=None, mask_feature_indices=None,
        output_attentions=False, output_hidden_states=False, spec_augment_rng=None, training=False,
    ):
        outputs = self._body_outputs(
            input_values, attention_mask, labels, mask_time_indices, mask_feature_indices, output_attentions,
            output_hidden_states, spec_augment_rng, training,
        )
        logits = self.classifier(self._layer_weighted_states(outputs))  # (B, T, num_labels)
        loss = None
        if labels is not None:
            # labels are per-frame scores (B, T, num_labels); the target is their argmax, padding included.
            labels = tf.convert_to_tensor(labels)
            checks.frame_labels(labels.shape, logits.shape)
            targets = tf.argmax(tf.reshape(labels, (-1, self.config.num_labels)), axis=-1)
            loss = _sparse_cross_entropy(tf.reshape(logits, (-1, self.config.num_labels)), targets)
        return HeadOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)


class Wav2Vec2ForXVector(_HeadModel):
    """Speaker embeddings: TDNN layers, mean and std over valid frames, two linear layers, AM-softmax loss."""

    head = "xvector"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.wav2vec2 = Wav2Vec2Model(config)
        self._add_layer_weights()
        self.projector = _dense(config.tdnn_dim[0], config)
        self.projector.build((None, config.hidden_size))
        self.tdnn = [TDNNLayer(config, i) for i in range(len(config.tdnn_dim))]
        for i, layer in enumerate(self.tdnn):
            layer.kernel.build((None, config.tdnn_kernel[i] * config.tdnn_dim[max(i - 1, 0)]))
            layer.built = True
        self.feature_extractor = _dense(config.xvector_output_dim, config)
        self.feature_extractor.build((None, 2 * config.tdnn_dim[-1]))
        self.classifier = _dense(config.xvector_output_dim, config)
        self.classifier.build((None, config.xvector_output_dim))
        self.objective = AMSoftmaxLoss(config.xvector_output_dim, config.num_labels)
        self.built = True

    def call(
        self, input_values, attention_mask=None, labels=None, mask_time_indices=None, mask_feature_indices=None,
        output_attentions=False, output_hidden_states=False, spec_augment_rng=None, training=False,
    ):
        outputs = self._body_outputs(
            input_values, attention_mask, labels, mask_time_indices, mask_feature_indices, output_attentions,
            output_hidden_states, spec_augment_rng, training,
        )
        hidden_states = self.projector(self._layer_weighted_states(outputs))
        for layer in self.tdnn:
            hidden_states = layer(hidden_states)  # (B, T', tdnn_dim[-1])
        frames = tf.shape(hidden_states)[1]
        if attention_mask is None:
            valid = tf.ones(tf.shape(hidden_states)[:2], hidden_states.dtype)
        else:
            attention_mask = tf.reshape(attention_mask, (tf.shape(hidden_states)[0], -1))
            sample_counts = tf.reduce_sum(tf.cast(attention_mask, tf.int32), -1)
            lengths = tdnn_output_lengths(self.config, feat_extract_output_lengths(self.config, sample_counts))
            valid = tf.cast(tf.range(frames)[None, :] < lengths[:, None], hidden_states.dtype)
        valid = tf.expand_dims(valid, -1)  # (B, T', 1)
        count = tf.reduce_sum(valid, axis=1)
        mean = tf.reduce_sum(hidden_states * valid, axis=1) / count
        variance = tf.reduce_sum(tf.square(hidden_states - tf.expand_dims(mean, 1)) * valid, axis=1) / (count - 1)  # unbiased
        # A channel the ReLU keeps at 0 has zero variance; sqrt's gradient there is inf, so give it 0 instead.
        positive = variance > 0
        std = tf.where(positive, tf.sqrt(tf.where(positive, variance, tf.ones_like(variance))), tf.zeros_like(variance))
        statistics = tf.concat([mean, std], axis=-1)  # (B, 2 * tdnn_dim[-1])
        embeddings = self.feature_extractor(statistics)
        logits = self.classifier(embeddings)
        loss = None
        if labels is not None:
            labels = tf.convert_to_tensor(labels)
            checks.class_labels(labels.shape, _is_integer(labels), logits.shape[0], "speaker ids")
            loss = self.objective(logits, labels)
        return XVectorOutput(
            loss=loss, logits=logits, embeddings=embeddings, hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class Wav2Vec2ForPreTraining(_HeadModel):
    """Self-supervised pretraining: contrastive loss against quantized targets plus a diversity loss.

    ``mask_time_indices`` (B, T) and ``sampled_negative_indices`` (B, T, num_negatives), indices into
    the flattened B * T frames, come from wav2vec2.spec.masking and wav2vec2.spec.negatives.
    """

    head = "pretraining"

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.wav2vec2 = Wav2Vec2Model(config)
        self.dropout_features = keras.layers.Dropout(config.feat_quantizer_dropout)
        self.quantizer = GumbelVectorQuantizer(config)
        self.quantizer.weight_proj.build((None, config.conv_dim[-1]))
        # Like a freshly reset PyTorch Linear: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
        self.project_hid = self._reset_linear(config.proj_codevector_dim, config.hidden_size)
        self.project_q = self._reset_linear(config.proj_codevector_dim, config.codevector_dim)
        self.built = True

    @staticmethod
    def _reset_linear(units, in_features):
        limit = 1.0 / math.sqrt(in_features)
        dense = keras.layers.Dense(units, kernel_initializer=_uniform(limit), bias_initializer=_uniform(limit))
        dense.build((None, in_features))
        return dense

    def set_gumbel_temperature(self, temperature: float):
        self.quantizer.temperature.assign(temperature)

    def call(
        self, input_values, attention_mask=None, mask_time_indices=None, sampled_negative_indices=None,
        gumbel_noise=None, output_attentions=False, output_hidden_states=False, training=False,
    ):
        if mask_time_indices is not None:
            mask_time_indices = tf.cast(tf.convert_to_tensor(mask_time_indices), tf.bool)
        outputs = self.wav2vec2(
            input_values, attention_mask=attention_mask, mask_time_indices=mask_time_indices, training=training,
            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
        )
        projected_states = self.project_hid(outputs.last_hidden_state)  # (B, T, P)
        extract_features = self.dropout_features(outputs.extract_features, training=training)
        quantized, perplexity = self.quantizer(
            extract_features, mask_time_indices, training=training, gumbel_noise=gumbel_noise
        )
        quantized = self.project_q(quantized)  # (B, T, P)

        loss = contrastive_loss = diversity_loss = None
        if sampled_negative_indices is not None:
            checks.negatives_need_mask(mask_time_indices)
            contrastive_loss = self._contrastive_loss(
                projected_states, quantized, sampled_negative_indices, mask_time_indices
            )
            num_codevectors = self.config.num_codevectors_per_group * self.config.num_codevector_groups
            num_masked = tf.reduce_sum(tf.cast(mask_time_indices, tf.float32))
            diversity_loss = (num_codevectors - perplexity) / num_codevectors * num_masked
            loss = contrastive_loss + self.config.diversity_loss_weight * diversity_loss
        return Wav2Vec2ForPreTrainingOutput(
            loss=loss, projected_states=projected_states, projected_quantized_states=quantized,
            codevector_perplexity=perplexity, hidden_states=outputs.hidden_states, attentions=outputs.attentions,
            contrastive_loss=contrastive_loss, diversity_loss=diversity_loss,
        )

    def _contrastive_loss(self, projected_states, quantized, negative_indices, mask_time_indices):
        """Cross-entropy of picking the true quantized frame among it and its negatives, summed over masked frames."""
        batch, frames, dim = tf.shape(quantized)[0], tf.shape(quantized)[1], tf.shape(quantized)[2]
        negative_indices = tf.cast(tf.convert_to_tensor(negative_indices), tf.int32)
        negatives = tf.gather(tf.reshape(quantized, (-1, dim)), tf.reshape(negative_indices, (-1,)))
        negatives = tf.transpose(tf.reshape(negatives, (batch, frames, -1, dim)), (2, 0, 1, 3))  # (N, B, T, P)
        candidates = tf.concat([quantized[None], negatives], axis=0)  # (N + 1, B, T, P)
        similarity = -keras.losses.cosine_similarity(projected_states[None], candidates, axis=-1)  # (N + 1, B, T)
        logits = tf.cast(similarity, tf.float32) / self.config.contrastive_logits_temperature
        # A negative identical to the positive (a collapsed codebook) must not count against it.
        negative_is_positive = tf.reduce_all(tf.equal(quantized[None], negatives), axis=-1)  # (N, B, T)
        logits = tf.concat([logits[:1], tf.where(negative_is_positive, -np.inf, logits[1:])], axis=0)
        per_frame = tf.reduce_logsumexp(logits, axis=0) - logits[0]  # (B, T)
        return tf.reduce_sum(tf.where(mask_time_indices, per_frame, tf.zeros_like(per_frame)))


def export_ctc_saved_model(model: Wav2Vec2ForCTC, path) -> None:
    """Write a TF SavedModel whose ``serve`` signature maps (waveforms (B, S) float32, attention_mask
    (B, S) int32) to CTC logits (B, T, vocab)."""
    if not isinstance(model, Wav2Vec2ForCTC):
        raise ValueError(f"export_ctc_saved_model needs a Wav2Vec2ForCTC, got {type(model).__name__}")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=lambda input_values, attention_mask: model(input_values, attention_mask=attention_mask, training=False).logits,
        input_signature=[
            keras.InputSpec(shape=(None, None), dtype="float32", name="input_values"),
            keras.InputSpec(shape=(None, None), dtype="int32", name="attention_mask"),
        ],
    )
    archive.write_out(os.fspath(path), verbose=False)

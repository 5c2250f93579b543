"""wav2vec 2.0 as pure flax.linen modules.

Every block takes the one ``Wav2Vec2Config`` and a compute ``dtype`` (parameters stay float32).
Randomness is explicit: dropout draws from the ``"dropout"`` rng stream, LayerDrop from
``"layerdrop"`` and the Gumbel quantizer from ``"gumbel"``, and only when ``deterministic=False``.
SpecAugment masks and pretraining negatives are inputs, computed by ``wav2vec2.spec``. The conv
adapter's LayerDrop changes the output length, so its draws are static: ``adapter_layers_skipped``
makes them on the host and the body takes them as ``adapter_skipped``.

Parameter names mirror the reference PyTorch state dict: a list element ``layers.3`` is the module
``layers_3``; Dense and Conv weights are ``kernel`` ((in, out) and (kernel, in, out)), norm weights
``scale``. The layout table of ``wav2vec2.spec.names`` maps this tree to and from the canonical layout.

Blocks, in the order shared by every backend: ConvLayer, FeatureEncoder, FeatureProjection,
PositionalConvEmbedding, Attention, FeedForward, AttnAdapterLayer, EncoderLayer,
StableEncoderLayer, Encoder, AdapterLayer, Adapter, GumbelVectorQuantizer, TDNNLayer, then the body
(Wav2Vec2Module) and the heads.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, ClassVar, Optional, Tuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from ...config import Wav2Vec2Config
from ...spec import checks
from ...spec.lengths import conv_spans, feat_extract_output_lengths, tdnn_output_lengths

Array = Any


def gelu(x):
    """The exact GELU x * Phi(x) in its erf form, as torch computes it. jax.nn.gelu's erfc form (more
    accurate far in the negative tail, where both are ~0) ran 1.9x (float32) to 3.5x (bf16) slower on
    XLA's CPU backend, and the base model has ~51M GELU outputs per 10 s of audio."""
    return x * (jax.lax.erf(x * math.sqrt(0.5)) + 1) * 0.5


ACTIVATIONS = {
    "gelu": gelu,
    "gelu_python": gelu,
    "gelu_new": partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}

# PyTorch hard-codes eps=1e-5 for the conv-stack norms and the adapter norms; the canonical model is
# the PyTorch one, so these do not read config.layer_norm_eps.
TORCH_NORM_EPS = 1e-5


def wide_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
    """``jax.lax.dot_general`` that sums bf16/fp16 operands in float32 and rounds the result once.
    XLA's CPU backend runs a dot with a bf16 result as a float32 dot between conversions (no faster
    than float32, benchmarks/bench_cpu.py); asked for a float32 result, it runs its bf16 kernels."""
    if preferred_element_type is None and lhs.dtype in (jnp.bfloat16, jnp.float16) and rhs.dtype == lhs.dtype:
        out = jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type=jnp.float32, **kwargs)
        return out.astype(lhs.dtype)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type=preferred_element_type,
                               **kwargs)


Dense = partial(nn.Dense, dot_general=wide_dot_general)  # every linear layer of the Flax backend


def wide_einsum(subscripts: str, *operands):
    """``jnp.einsum`` of bf16/fp16 operands summed in float32 (see ``wide_dot_general``), in their dtype."""
    if operands[0].dtype in (jnp.bfloat16, jnp.float16):
        return jnp.einsum(subscripts, *operands, preferred_element_type=jnp.float32).astype(operands[0].dtype)
    return jnp.einsum(subscripts, *operands)


# ---------------------------------------------------------------------------------------- outputs
@flax.struct.dataclass
class Wav2Vec2BaseModelOutput:
    last_hidden_state: Array = None
    extract_features: Array = None
    hidden_states: Optional[Tuple[Array, ...]] = None
    attentions: Optional[Tuple[Array, ...]] = None


@flax.struct.dataclass
class HeadOutput:
    """CTC, sequence and audio-frame classification: logits and, with labels, a loss."""

    loss: Optional[Array] = None
    logits: Array = None
    hidden_states: Optional[Tuple[Array, ...]] = None
    attentions: Optional[Tuple[Array, ...]] = None


@flax.struct.dataclass
class XVectorOutput:
    loss: Optional[Array] = None
    logits: Array = None
    embeddings: Array = None
    hidden_states: Optional[Tuple[Array, ...]] = None
    attentions: Optional[Tuple[Array, ...]] = None


@flax.struct.dataclass
class Wav2Vec2ForPreTrainingOutput:
    loss: Optional[Array] = None
    projected_states: Array = None
    projected_quantized_states: Array = None
    codevector_perplexity: Array = None
    hidden_states: Optional[Tuple[Array, ...]] = None
    attentions: Optional[Tuple[Array, ...]] = None
    contrastive_loss: Optional[Array] = None
    diversity_loss: Optional[Array] = None


# ------------------------------------------------------------------------------- initialisers
# The reference's _init_weights, as distributions (not bit for bit).
def dense_init(config):
    return nn.initializers.normal(config.initializer_range)


def uniform_init(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # kaiming normal


def conv_bias_init(fan_in: int):
    return uniform_init(math.sqrt(1.0 / fan_in))


def torch_linear_init(fan_in: int):
    """PyTorch's default nn.Linear init (the reference resets the pretraining projections to it)."""
    return uniform_init(math.sqrt(1.0 / fan_in))


def layer_norm(epsilon: float, dtype, name: str) -> nn.LayerNorm:
    # Two-pass variance, as PyTorch computes it: the one-pass form loses digits we test for.
    return nn.LayerNorm(epsilon=epsilon, dtype=dtype, use_fast_variance=False, name=name)


# ----------------------------------------------------------------------------- length helpers
def frame_mask(config, attention_mask: Array, num_frames: int, add_adapter: Optional[bool] = None) -> Array:
    """Valid output frames (batch, num_frames) from a sample-level mask (batch, samples)."""
    lengths = feat_extract_output_lengths(config, attention_mask.astype(jnp.int32).sum(-1), add_adapter)
    return jnp.arange(num_frames)[None, :] < lengths[:, None]


# ---------------------------------------------------------------------------- feature encoder
def strided_windows(x, kernel: int, stride: int):
    """Every frame's window of a "VALID" conv: x (batch, samples, in) -> (batch, frames, kernel * in),
    tap-major (a tap's channels together, the rows of a (kernel, in, out) kernel reshaped), a copy.
    Cut x into rows of `stride` consecutive samples; the window of frame t is then rows t, t + 1, ...
    (the last one cut to the kernel's remaining taps)."""
    return jnp.concatenate([rows for rows, _ in _tap_blocks(x, kernel, stride)], axis=-1)


def _tap_blocks(x, kernel: int, stride: int):
    """[(rows, taps)]: for each block of `stride` taps (the last may be shorter), the (batch, frames,
    taps * in) slice of x's rows of `stride` samples that the block reads, and the block's first tap."""
    (batch, samples, channels), k, s = x.shape, kernel, stride
    frames, blocks = (samples - k) // s + 1, -(-k // s)
    rows = frames + blocks - 1
    if rows * s > samples:  # padding the last blocks never read
        x = jnp.pad(x, ((0, 0), (0, rows * s - samples), (0, 0)))
    x = x[:, :rows * s].reshape(batch, rows, s * channels)
    return [(x[:, j:j + frames, :min(s, k - j * s) * channels], j * s) for j in range(blocks)]


class StridedConv(nn.Module):
    """A 1-D "VALID" conv with nn.Conv's parameters (kernel (kernel, in, out), bias (out,)).

    In bf16/fp16 it runs as matmuls summed in float32, which XLA's CPU backend runs on its bf16
    kernels (a bf16 convolution it runs as a float32 one between conversions): x is cut into rows of
    `stride` consecutive samples, and each block of `stride` taps is one matmul over rows, one row
    per frame. Where the blocks' sums would write more than copying the windows (one input channel),
    the windows are copied and take one matmul (as the torch backend's ``ConvLayer.windows_matmul``)."""

    features: int
    kernel_size: int
    stride: int
    use_bias: bool
    dtype: Any = jnp.float32
    bias_init: Any = nn.initializers.zeros
    float32_output: bool = False  # in bf16/fp16: return the float32 sums, not rounded to the dtype

    @nn.compact
    def __call__(self, x):  # (batch, samples, in) -> (batch, frames, features)
        kernel = self.param("kernel", conv_kernel_init, (self.kernel_size, x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if x.dtype in (jnp.bfloat16, jnp.float16):
            y = self._as_matmuls(x, kernel)  # float32 sums
            y = y if bias is None else y + bias.astype(jnp.float32)
            return y if self.float32_output else y.astype(x.dtype)
        y = jax.lax.conv_general_dilated(x, kernel, (self.stride,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))
        return y if bias is None else y + bias

    def _as_matmuls(self, x, kernel):
        k, s, channels = self.kernel_size, self.stride, x.shape[-1]
        if k * channels <= 2 * (-(-k // s) - 1) * self.features:
            windows = strided_windows(x, k, s)  # (batch, frames, k * channels)
            return jnp.einsum("btk,ko->bto", windows, kernel.reshape(k * channels, self.features),
                              preferred_element_type=jnp.float32)
        return sum(jnp.einsum("btk,ko->bto", rows, kernel[first:first + s].reshape(-1, self.features),
                              preferred_element_type=jnp.float32)
                   for rows, first in _tap_blocks(x, k, s))


class ConvLayer(nn.Module):
    """One conv of the feature encoder: conv, then (per feat_extract_norm) a norm, then activation."""

    config: Wav2Vec2Config
    layer_id: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, folded_norm=None):  # (batch, time, in) -> (batch, time', out)
        """With `folded_norm` (``folded_group_norm``'s weight and bias, of the whole utterances when x
        is a span of them), the conv and its GroupNorm run as one matmul per utterance."""
        config, i = self.config, self.layer_id
        activation = ACTIVATIONS[config.feat_extract_activation]
        if folded_norm is not None:
            weight, bias = folded_norm
            windows = strided_windows(x, config.conv_kernel[i], config.conv_stride[i])
            if x.dtype not in (jnp.bfloat16, jnp.float16):
                return activation(jnp.einsum("btk,bko->bto", windows, weight) + bias[:, None])
            y = jnp.einsum("btk,bko->bto", windows, weight, preferred_element_type=jnp.float32)
            return activation(y + bias[:, None].astype(jnp.float32)).astype(x.dtype)
        in_dim = config.conv_dim[i - 1] if i > 0 else 1
        # with no norm next (in bf16/fp16): the activation of the float32 sums, rounded once
        direct = config.feat_extract_norm != "layer" and i > 0
        x = StridedConv(
            config.conv_dim[i], config.conv_kernel[i], config.conv_stride[i], config.conv_bias, self.dtype,
            bias_init=conv_bias_init(in_dim * config.conv_kernel[i]), float32_output=direct, name="conv",
        )(x)
        if direct:
            return activation(x).astype(self.dtype)
        if config.feat_extract_norm == "layer":
            x = layer_norm(TORCH_NORM_EPS, self.dtype, "layer_norm")(x)
        elif i == 0:
            # One group per channel: each channel is normalised over time (padding included).
            x = nn.GroupNorm(
                num_groups=config.conv_dim[0], epsilon=TORCH_NORM_EPS, dtype=self.dtype,
                use_fast_variance=False, name="layer_norm",
            )(x)
        return activation(x)


def folded_group_norm(config, params, x, chunk_frames: int = 4096):
    """The first conv and its GroupNorm (one group per channel, over time) as one matmul per
    utterance: x (batch, samples, 1) -> the weight (batch, kernel, out) and bias (batch, out) that
    ``ConvLayer`` applies to ``strided_windows(x)``, in x's dtype; `params` are the layer's.

    A channel's output is its kernel column w times the window c, so its mean over frames is
    w . mean(c); its variance is the mean of ((c - mean(c)) . w)^2, summed in float32 chunk by chunk of
    frames without keeping the large output. The norm's scale and shift then fold into a weight and
    bias per utterance; the conv's own bias cancels in the norm."""
    kernel = params["conv"]["kernel"].astype(x.dtype).astype(jnp.float32)  # the weights the conv would use
    kernel = kernel.reshape(-1, kernel.shape[-1])  # (kernel * in, out)
    windows = strided_windows(x.astype(jnp.float32), config.conv_kernel[0], config.conv_stride[0])
    batch, frames, taps = windows.shape
    mean = windows.mean(1)  # (batch, taps)
    centred = windows - mean[:, None]
    chunks = -(-frames // chunk_frames)
    centred = jnp.pad(centred, ((0, 0), (0, chunks * chunk_frames - frames), (0, 0)))  # zero rows add nothing
    centred = jnp.moveaxis(centred.reshape(batch, chunks, chunk_frames, taps), 1, 0)
    variance = jax.lax.map(lambda c: jnp.square(c @ kernel).sum(1), centred).sum(0) / frames  # (batch, out)
    norm = params["layer_norm"]
    scale = norm["scale"].astype(jnp.float32) * jax.lax.rsqrt(variance + TORCH_NORM_EPS)
    shift = norm["bias"].astype(jnp.float32) - (mean @ kernel) * scale
    return (kernel * scale[:, None]).astype(x.dtype), shift.astype(x.dtype)


class FeatureEncoder(nn.Module):
    """Raw waveform (batch, samples) -> conv features (batch, frames, conv_dim[-1]).

    Every layer but a GroupNorm is local in time, so outside rematerialisation and for inputs of a
    known shape (not jax.export's symbolic ones) the stack runs span by span of SPAN_FRAMES output
    frames, each from its own samples, in a loop: the early layers' activations (64 times the size of
    the last one's) then stay in the caches, and the memory is bounded whatever the input's length.
    A GroupNorm's statistics are over the whole utterance: they fold into the first layer's weights
    up front (``folded_group_norm``)."""

    config: Wav2Vec2Config
    dtype: Any = jnp.float32
    remat: bool = False  # rematerialise each conv layer in the backward pass

    # Output frames per span, as the torch backend's (docs/performance.md): 128 (2.6 s)
    SPAN_FRAMES: ClassVar[int] = 128

    @nn.compact
    def __call__(self, input_values):  # (batch, samples) -> (batch, frames, conv_dim[-1])
        x = input_values.astype(self.dtype)[:, :, None]
        symbolic = not all(isinstance(size, int) for size in x.shape)  # jax.export's symbolic shapes
        if self.remat or self.is_initializing() or symbolic:
            layer_class = nn.remat(ConvLayer) if self.remat else ConvLayer
            for i in range(self.config.num_feat_extract_layers):
                x = layer_class(self.config, i, self.dtype, name=f"conv_layers_{i}")(x)
            return x
        return self.by_spans(x, self.variables["params"])

    def by_spans(self, x, params, span_frames: Optional[int] = None):
        """The stack span by span: x (batch, samples, 1) -> (batch, frames, conv_dim[-1]); `params`
        the encoder's; spans of `span_frames` (default SPAN_FRAMES) output frames."""
        config = self.config
        checks.waveform_shape(config, x.shape[:2], True, str(x.dtype))  # long enough
        layers = [ConvLayer(config, i, self.dtype, parent=None) for i in range(config.num_feat_extract_layers)]
        layer_params = [{"params": params[f"conv_layers_{i}"]} for i in range(len(layers))]
        folded = None
        if config.feat_extract_norm == "group":
            folded = folded_group_norm(config, params["conv_layers_0"], x)
        plan = conv_spans(config, x.shape[1], span_frames or self.SPAN_FRAMES)
        x = jnp.pad(x, ((0, 0), (0, max(0, plan.padded_samples - x.shape[1])), (0, 0)))  # the last span's
        chunks = jnp.stack([x[:, plan.start(i):plan.start(i) + plan.span_samples] for i in range(plan.count)])

        def encode(h):  # one span of every utterance: (batch, samples, 1) -> (batch, span, conv_dim[-1])
            h = layers[0].apply(layer_params[0], h, folded)
            for layer, variables in zip(layers[1:], layer_params[1:]):
                h = layer.apply(variables, h)
            return h

        out = jax.lax.map(encode, chunks)  # (spans, batch, span, channels)
        return jnp.moveaxis(out, 0, 1).reshape(x.shape[0], plan.count * plan.span, -1)[:, :plan.frames]


class FeatureProjection(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features, deterministic: bool):
        config = self.config
        normed = layer_norm(config.layer_norm_eps, self.dtype, "layer_norm")(features)
        fan_in = config.conv_dim[-1]
        hidden = Dense(
            config.hidden_size, dtype=self.dtype, kernel_init=uniform_init(math.sqrt(1 / fan_in)),
            bias_init=uniform_init(math.sqrt(1 / fan_in)), name="projection",
        )(normed)  # (batch, frames, hidden)
        hidden = nn.Dropout(config.feat_proj_dropout)(hidden, deterministic)
        # The quantizer needs the normalised, unprojected features.
        return hidden, normed


# --------------------------------------------------------------------------------------- encoder
class WeightNormConv(nn.Module):
    """Grouped conv whose weight is weight_g * weight_v / |weight_v|, the norm taken per kernel tap.

    weight_v (C, C / groups, K) and weight_g (1, 1, K) keep the PyTorch layout.
    """

    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):  # (batch, frames, hidden) -> (batch, frames + 1 - K % 2, hidden)
        channels = self.config.hidden_size
        kernel = self.config.num_conv_pos_embeddings
        groups = self.config.num_conv_pos_embedding_groups
        weight_v = self.param(
            "weight_v", nn.initializers.normal(2 * math.sqrt(1 / (kernel * channels))),
            (channels, channels // groups, kernel),
        )
        weight_g = self.param("weight_g", lambda _: jnp.linalg.norm(weight_v, axis=(0, 1), keepdims=True))
        bias = self.param("bias", nn.initializers.zeros, (channels,))
        weight = weight_g * weight_v / jnp.linalg.norm(weight_v, axis=(0, 1), keepdims=True)
        # one conv per group: XLA's CPU backend runs those 1.7x faster than one grouped conv
        x, weight = x.astype(self.dtype), weight.astype(self.dtype)
        y = jnp.concatenate([
            jax.lax.conv_general_dilated(
                x_group, weight_group, window_strides=(1,), padding=[(kernel // 2, kernel // 2)],
                dimension_numbers=("NWC", "OIW", "NWC"),
            )
            for x_group, weight_group in zip(jnp.split(x, groups, axis=-1), jnp.split(weight, groups, axis=0))
        ], axis=-1)
        return y + bias.astype(self.dtype)


class PositionalConvEmbedding(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):  # (batch, frames, hidden) -> same
        y = WeightNormConv(self.config, self.dtype, name="conv")(x)
        if self.config.num_conv_pos_embeddings % 2 == 0:
            y = y[:, :-1]  # an even kernel with padding K // 2 yields one frame too many
        return ACTIVATIONS[self.config.feat_extract_activation](y)


class Attention(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, output_attentions: bool = False):
        """x: (batch, frames, hidden); key_mask: (batch, 1, 1, frames) bool, True on valid frames."""
        config = self.config
        batch, frames, _ = x.shape
        heads, head_dim = config.num_attention_heads, config.head_dim
        dense = partial(Dense, config.hidden_size, dtype=self.dtype, kernel_init=dense_init(config))

        def split_heads(t):  # (batch, frames, hidden) -> (batch, heads, frames, head_dim)
            return t.reshape(batch, frames, heads, head_dim).transpose(0, 2, 1, 3)

        # heads first: XLA's CPU dots then read contiguous (frames, head_dim) blocks (1.2x faster)
        query = split_heads(dense(name="q_proj")(x)) * head_dim**-0.5
        key = split_heads(dense(name="k_proj")(x))
        value = split_heads(dense(name="v_proj")(x))

        scores = jnp.einsum("bhqd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32)  # (batch, heads, q, k)
        if key_mask is not None:
            scores = jnp.where(key_mask, scores, jnp.finfo(jnp.float32).min)
        if output_attentions:
            weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
            dropped = nn.Dropout(config.attention_dropout)(weights, deterministic)
            out = wide_einsum("bhqk,bhkd->bhqd", dropped, value)
        else:
            # softmax's division after the value product: one pass over the (q, k) scores less (whole
            # model: fp32 669 -> 649 ms per 10 s, bf16 329 -> 324); dropping exp, then dividing by its
            # sum, drops the weights exp / sum
            weights = None
            exp = jnp.exp(scores - jax.lax.stop_gradient(scores.max(-1, keepdims=True)))
            dropped = nn.Dropout(config.attention_dropout)(exp.astype(self.dtype), deterministic)
            out = jnp.einsum("bhqk,bhkd->bhqd", dropped, value, preferred_element_type=jnp.float32)
            out = (out / exp.sum(-1, keepdims=True)).astype(value.dtype)
        out = out.transpose(0, 2, 1, 3).reshape(batch, frames, config.hidden_size)
        out = dense(name="out_proj")(out)
        return out, (weights if output_attentions else None)


class FeedForward(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool):
        config = self.config
        init = dense_init(config)
        x = Dense(config.intermediate_size, dtype=self.dtype, kernel_init=init, name="intermediate_dense")(x)
        x = ACTIVATIONS[config.hidden_act](x)
        x = nn.Dropout(config.activation_dropout)(x, deterministic)
        x = Dense(config.hidden_size, dtype=self.dtype, kernel_init=init, name="output_dense")(x)
        return nn.Dropout(config.hidden_dropout)(x, deterministic)


class AttnAdapterLayer(nn.Module):
    """MMS per-language adapter: a small residual bottleneck after each stable encoder layer."""

    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        config = self.config
        init = dense_init(config)
        x = layer_norm(TORCH_NORM_EPS, self.dtype, "norm")(x)
        x = Dense(config.adapter_attn_dim, dtype=self.dtype, kernel_init=init, name="linear_1")(x)
        x = jax.nn.relu(x)
        return Dense(config.hidden_size, dtype=self.dtype, kernel_init=init, name="linear_2")(x)


class EncoderLayer(nn.Module):
    """Post-norm transformer layer (wav2vec2-base style)."""

    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, output_attentions: bool = False):
        config = self.config
        attended, weights = Attention(config, self.dtype, name="attention")(x, key_mask, deterministic, output_attentions)
        x = x + nn.Dropout(config.hidden_dropout)(attended, deterministic)
        x = layer_norm(config.layer_norm_eps, self.dtype, "layer_norm")(x)
        x = x + FeedForward(config, self.dtype, name="feed_forward")(x, deterministic)
        x = layer_norm(config.layer_norm_eps, self.dtype, "final_layer_norm")(x)
        return x, weights


class StableEncoderLayer(nn.Module):
    """Pre-norm transformer layer (large-lv60, XLS-R, MMS), with the optional MMS adapter."""

    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask, deterministic: bool, output_attentions: bool = False):
        config = self.config
        normed = layer_norm(config.layer_norm_eps, self.dtype, "layer_norm")(x)
        attended, weights = Attention(config, self.dtype, name="attention")(normed, key_mask, deterministic, output_attentions)
        x = x + nn.Dropout(config.hidden_dropout)(attended, deterministic)
        normed = layer_norm(config.layer_norm_eps, self.dtype, "final_layer_norm")(x)
        x = x + FeedForward(config, self.dtype, name="feed_forward")(normed, deterministic)
        if config.adapter_attn_dim is not None:
            x = x + AttnAdapterLayer(config, self.dtype, name="adapter_layer")(x)
        return x, weights


class Encoder(nn.Module):
    """Positional conv, then the transformer layers; post-norm or pre-norm per do_stable_layer_norm.

    LayerDrop (training only) draws one uniform per layer from the "layerdrop" stream. The layer
    still runs and its output is discarded, which keeps the computation static under jit.
    """

    config: Wav2Vec2Config
    dtype: Any = jnp.float32
    remat: bool = False  # rematerialise each layer in the backward pass (saves activation memory)

    @nn.compact
    def __call__(self, x, frames_valid, deterministic: bool, output_hidden_states: bool, output_attentions: bool):
        config = self.config
        key_mask = None
        if frames_valid is not None:
            x = jnp.where(frames_valid[:, :, None], x, 0)  # padding must not leak into the positional conv
            key_mask = frames_valid[:, None, None, :]  # (batch, 1, 1, frames)

        x = x + PositionalConvEmbedding(config, self.dtype, name="pos_conv_embed")(x)
        final_norm = layer_norm(config.layer_norm_eps, self.dtype, "layer_norm")
        if not config.do_stable_layer_norm:
            x = final_norm(x)
        x = nn.Dropout(config.hidden_dropout)(x, deterministic)

        layer_class = StableEncoderLayer if config.do_stable_layer_norm else EncoderLayer
        if self.remat:
            layer_class = nn.remat(layer_class, static_argnums=(3, 4))  # deterministic, output_attentions
        hidden_states, attentions = [], []
        for i in range(config.num_hidden_layers):
            if output_hidden_states:
                hidden_states.append(x)
            y, weights = layer_class(config, self.dtype, name=f"layers_{i}")(x, key_mask, deterministic, output_attentions)
            if not deterministic and config.layerdrop > 0:
                skip = jax.random.uniform(self.make_rng("layerdrop")) < config.layerdrop
                y = jnp.where(skip, x, y)
            x = y
            attentions.append(weights)

        if config.do_stable_layer_norm:
            x = final_norm(x)
        if output_hidden_states:
            hidden_states.append(x)
        return (
            x,
            tuple(hidden_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
        )


# --------------------------------------------------------------------------------- conv adapter
class AdapterLayer(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):  # (batch, frames, C) -> (batch, ceil(frames / stride), C)
        config = self.config
        width = config.output_hidden_size
        x = nn.Conv(
            2 * width, kernel_size=(config.adapter_kernel_size,), strides=(config.adapter_stride,),
            padding=[(1, 1)], dtype=self.dtype, kernel_init=conv_kernel_init,
            bias_init=conv_bias_init(width * config.adapter_kernel_size), name="conv",
        )(x)
        return nn.glu(x, axis=-1)


def rng_streams(key) -> dict:
    """The rng streams of a training call, split from one key: ``{"dropout", "layerdrop", "gumbel"}``."""
    dropout, layerdrop, gumbel = jax.random.split(key, 3)
    return {"dropout": dropout, "layerdrop": layerdrop, "gumbel": gumbel}


def adapter_layers_skipped(config, key) -> Tuple[bool, ...]:
    """The conv adapter's LayerDrop for one training call: layer i is skipped when the i-th uniform
    drawn from ``key`` is below layerdrop, the rule of the other backends. A skipped strided layer
    leaves the sequence longer and jit must know every shape, so the draws are concrete Python bools,
    made outside jit (``key`` must not be traced) and given to the body as the static ``adapter_skipped``."""
    if not config.add_adapter or config.layerdrop <= 0:
        return ()
    if isinstance(key, jax.core.Tracer):
        raise ValueError(
            "the conv adapter's LayerDrop changes the output length, so its draws must be made outside jit: "
            "pass a concrete key (or train with layerdrop=0)"
        )
    draws = jax.device_get(jax.random.uniform(key, (config.num_adapter_layers,)))
    return tuple(bool(u < config.layerdrop) for u in draws)


class Adapter(nn.Module):
    """Strided GLU convs after the encoder (add_adapter), with a projection if the width changes.

    In training with layerdrop > 0, ``skipped`` (static: one bool per layer, from
    adapter_layers_skipped) names the layers LayerDrop skips.
    """

    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool = True, skipped: Optional[Tuple[bool, ...]] = None):
        config = self.config
        if config.output_hidden_size != config.hidden_size:
            x = Dense(config.output_hidden_size, dtype=self.dtype, kernel_init=dense_init(config), name="proj")(x)
            x = layer_norm(TORCH_NORM_EPS, self.dtype, "proj_layer_norm")(x)
        if deterministic or config.layerdrop <= 0:
            skipped = (False,) * config.num_adapter_layers
        elif skipped is None or len(skipped) != config.num_adapter_layers:
            raise ValueError(
                f"training with the conv adapter's LayerDrop needs adapter_skipped, {config.num_adapter_layers} bools "
                f"(modeling.adapter_layers_skipped(config, key)); got {skipped!r}"
            )
        for i in range(config.num_adapter_layers):
            if not skipped[i]:
                x = AdapterLayer(config, self.dtype, name=f"layers_{i}")(x)  # (batch, ceil(frames / stride), C)
        return x


# ------------------------------------------------------------------------------------ quantizer
class GumbelVectorQuantizer(nn.Module):
    """Product quantizer: per group, pick one of num_codevectors_per_group codevectors.

    Training (deterministic=False): straight-through Gumbel-softmax with noise from the "gumbel"
    stream at the given temperature. Evaluation: the argmax codevector.
    """

    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features, mask_time_indices, temperature, deterministic: bool, gumbel_noise=None):
        """features (batch, frames, conv_dim[-1]) -> codevectors (batch, frames, codevector_dim), perplexity."""
        config = self.config
        groups, per_group = config.num_codevector_groups, config.num_codevectors_per_group
        codebook = self.param(
            "codevectors", nn.initializers.uniform(1.0), (1, groups * per_group, config.codevector_dim // groups)
        )
        logits = Dense(
            groups * per_group, dtype=self.dtype, kernel_init=nn.initializers.normal(1.0), name="weight_proj"
        )(features)
        batch, frames, _ = features.shape
        logits = logits.reshape(batch * frames, groups, per_group).astype(jnp.float32)

        if deterministic:
            probs = jax.nn.one_hot(jnp.argmax(logits, axis=-1), per_group, dtype=jnp.float32)
            perplexity = self.perplexity(probs, mask_time_indices)
        else:
            if gumbel_noise is None:
                gumbels = jax.random.gumbel(self.make_rng("gumbel"), logits.shape, jnp.float32)
            else:  # (batch, frames, groups, vars) standard Gumbel samples, as the other backends take them
                gumbels = jnp.reshape(gumbel_noise, logits.shape).astype(jnp.float32)
            soft = jax.nn.softmax((logits + gumbels) / temperature, axis=-1)
            hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), per_group, dtype=jnp.float32)
            probs = hard - jax.lax.stop_gradient(soft) + soft  # straight-through estimator
            perplexity = self.perplexity(jax.nn.softmax(logits, axis=-1), mask_time_indices)

        codebook = codebook.reshape(groups, per_group, -1).astype(self.dtype)
        codevectors = jnp.einsum("ngv,gvd->ngd", probs.astype(self.dtype), codebook)
        return codevectors.reshape(batch, frames, -1), perplexity

    @staticmethod
    def perplexity(probs, mask):
        """Sum over groups of exp(entropy of the mean code distribution over (masked) frames)."""
        if mask is None:
            marginal = probs.mean(axis=0)
        else:
            mask = mask.reshape(-1, 1, 1).astype(probs.dtype)
            marginal = (probs * mask).sum(axis=0) / mask.sum()
        return jnp.exp(-jnp.sum(marginal * jnp.log(marginal + 1e-7), axis=-1)).sum()


# --------------------------------------------------------------------------------------- x-vector
class TDNNLayer(nn.Module):
    """Dilated conv written as a Linear over `kernel` frames stacked side by side (the PyTorch layout)."""

    config: Wav2Vec2Config
    layer_id: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):  # (batch, frames, in) -> (batch, frames - dilation * (kernel - 1), out)
        config, i = self.config, self.layer_id
        kernel, dilation = config.tdnn_kernel[i], config.tdnn_dilation[i]
        out_frames = x.shape[1] - dilation * (kernel - 1)
        # lax slices, not indexing: indexing clamps its bounds, which a symbolic length (jax.export) cannot decide
        windows = [jax.lax.slice_in_dim(x, j * dilation, j * dilation + out_frames, axis=1) for j in range(kernel)]
        stacked = jnp.concatenate(windows, axis=-1)
        y = Dense(config.tdnn_dim[i], dtype=self.dtype, kernel_init=dense_init(config), name="kernel")(stacked)
        return jax.nn.relu(y)


class AMSoftmaxObjective(nn.Module):
    """The x-vector objective: its (xvector_output_dim, num_labels) matrix and the AM-softmax loss."""

    config: Wav2Vec2Config

    @nn.compact
    def __call__(self, logits, labels):
        shape = (self.config.xvector_output_dim, self.config.num_labels)
        weight = self.param("weight", nn.initializers.normal(1.0), shape)
        return None if labels is None else am_softmax_loss(logits, weight, labels.reshape(-1))


# ----------------------------------------------------------------------------------------- losses
def ctc_loss(logits, frame_lengths, labels, blank: int, reduction: str, zero_infinity: bool):
    """PyTorch's F.ctc_loss on (batch, frames, vocab) logits, labels padded with negative values.

    "mean" divides each utterance's loss by its target length (at least 1), then averages; "sum"
    adds; "none" returns one loss per utterance. Infeasible alignments give inf, or 0 with
    zero_infinity. Runs in float32 whatever the compute dtype.
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    frame_paddings = (jnp.arange(logits.shape[1])[None, :] >= frame_lengths[:, None]).astype(jnp.float32)
    # Move the valid labels to the front (PyTorch selects labels >= 0 wherever they are).
    valid = labels >= 0
    order = jnp.argsort(~valid, axis=-1, stable=True)
    valid = jnp.take_along_axis(valid, order, axis=-1)
    labels = jnp.where(valid, jnp.take_along_axis(labels, order, axis=-1), 0)
    losses = optax.ctc_loss(log_probs, frame_paddings, labels, (~valid).astype(jnp.float32), blank_id=blank)

    # optax floors log-probabilities at log_epsilon instead of -inf: flag infeasible targets ourselves.
    # A target needs one frame per label plus one blank between each pair of repeated labels.
    target_lengths = valid.sum(-1)
    repeats = (valid[:, 1:] & (labels[:, 1:] == labels[:, :-1])).sum(-1)
    infeasible = frame_lengths < target_lengths + repeats
    losses = jnp.where(infeasible, 0.0 if zero_infinity else jnp.inf, losses)

    if reduction == "mean":
        return (losses / jnp.maximum(target_lengths, 1)).mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()


def am_softmax_loss(embeddings, weight, labels, scale: float = 30.0, margin: float = 0.4):
    """Additive-margin softmax on cosine logits (the x-vector objective)."""
    weight = weight / jnp.maximum(jnp.linalg.norm(weight, axis=0, keepdims=True), 1e-12)
    embeddings = embeddings.astype(jnp.float32)
    embeddings = embeddings / jnp.maximum(jnp.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    cos_theta = embeddings @ weight  # (batch, num_labels)
    target = jax.nn.one_hot(labels, weight.shape[1], dtype=bool)
    logits = scale * jnp.where(target, cos_theta - margin, cos_theta)
    return cross_entropy(logits, labels)


def contrastive_loss(projected, quantized, negative_indices, mask_time_indices, temperature: float):
    """Sum over masked frames of -log softmax(cos(c_t, [q_t, negatives]) / temperature)[positive].

    projected, quantized: (batch, frames, dim); negative_indices: (batch, frames, num_negatives)
    into the flattened batch * frames. A negative equal to its positive is left out (logit -inf).
    """
    batch, frames, dim = quantized.shape
    projected, quantized = projected.astype(jnp.float32), quantized.astype(jnp.float32)
    negatives = quantized.reshape(-1, dim)[negative_indices.reshape(-1)].reshape(batch, frames, -1, dim)
    candidates = jnp.concatenate([quantized[:, :, None], negatives], axis=2)  # (batch, frames, 1 + K, dim)

    dots = jnp.einsum("btd,btkd->btk", projected, candidates)
    norms = jnp.linalg.norm(projected, axis=-1)[:, :, None] * jnp.linalg.norm(candidates, axis=-1)
    logits = dots / jnp.maximum(norms, 1e-8) / temperature

    negative_is_positive = jnp.all(negatives == quantized[:, :, None], axis=-1)
    logits = logits.at[:, :, 1:].set(jnp.where(negative_is_positive, -jnp.inf, logits[:, :, 1:]))
    nll = -jax.nn.log_softmax(logits, axis=-1)[:, :, 0]
    return jnp.where(mask_time_indices, nll, 0.0).sum()


# ------------------------------------------------------------------------------------------- body
def _stop_gradient(tree):
    return jax.tree_util.tree_map(jax.lax.stop_gradient, tree)


class Wav2Vec2Module(nn.Module):
    """The bare model: conv feature encoder, projection, SpecAugment, transformer, conv adapter.

    freeze_feature_encoder stops gradients at the conv parameters (inputs still get gradients);
    gradient_checkpointing rematerialises each conv and encoder layer in the backward pass;
    adapter_skipped: the conv adapter layers LayerDrop skips in this training call (see
    adapter_layers_skipped).
    """

    config: Wav2Vec2Config
    dtype: Any = jnp.float32
    freeze_feature_encoder: bool = False
    gradient_checkpointing: bool = False
    adapter_skipped: Optional[Tuple[bool, ...]] = None

    @nn.compact
    def __call__(
        self,
        input_values,
        attention_mask=None,
        mask_time_indices=None,
        mask_feature_indices=None,
        deterministic: bool = True,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> Wav2Vec2BaseModelOutput:
        config = self.config
        masked_spec_embed = None
        if config.mask_time_prob > 0 or config.mask_feature_prob > 0:
            masked_spec_embed = self.param("masked_spec_embed", nn.initializers.uniform(1.0), (config.hidden_size,))

        feature_encoder = FeatureEncoder
        if self.freeze_feature_encoder:
            feature_encoder = nn.map_variables(FeatureEncoder, "params", trans_in_fn=_stop_gradient, init=True)
        feature_encoder = feature_encoder(config, self.dtype, remat=self.gradient_checkpointing, name="feature_extractor")
        features = feature_encoder(input_values)

        frames_valid = None
        if attention_mask is not None:
            frames_valid = frame_mask(config, attention_mask, features.shape[1], add_adapter=False)

        hidden, features = FeatureProjection(config, self.dtype, name="feature_projection")(features, deterministic)
        if config.apply_spec_augment:
            if mask_time_indices is not None:
                hidden = jnp.where(mask_time_indices[:, :, None], masked_spec_embed.astype(self.dtype), hidden)
            if mask_feature_indices is not None:
                hidden = jnp.where(mask_feature_indices[:, None, :], 0, hidden)

        hidden, hidden_states, attentions = Encoder(
            config, self.dtype, remat=self.gradient_checkpointing, name="encoder"
        )(hidden, frames_valid, deterministic, output_hidden_states, output_attentions)
        if config.add_adapter:
            hidden = Adapter(config, self.dtype, name="adapter")(hidden, deterministic, self.adapter_skipped)
        return Wav2Vec2BaseModelOutput(
            last_hidden_state=hidden, extract_features=features, hidden_states=hidden_states, attentions=attentions
        )


# ------------------------------------------------------------------------------------------ heads
class _HeadModule(nn.Module):
    """Fields and helpers shared by the heads; the body lives under "wav2vec2"."""

    config: Wav2Vec2Config
    dtype: Any = jnp.float32
    freeze_feature_encoder: bool = False
    freeze_base_model: bool = False
    gradient_checkpointing: bool = False
    adapter_skipped: Optional[Tuple[bool, ...]] = None

    def run_base_model(self, input_values, attention_mask, deterministic, output_hidden_states,
                       output_attentions, mask_time_indices=None, mask_feature_indices=None):
        base_model_class = Wav2Vec2Module
        if self.freeze_base_model:
            base_model_class = nn.map_variables(Wav2Vec2Module, "params", trans_in_fn=_stop_gradient, init=True)
        base_model = base_model_class(
            self.config, self.dtype, self.freeze_feature_encoder, self.gradient_checkpointing, self.adapter_skipped,
            name="wav2vec2",
        )
        return base_model(
            input_values, attention_mask, mask_time_indices, mask_feature_indices, deterministic,
            output_hidden_states, output_attentions,
        )

    def layer_weighted_states(self, outputs):
        """The last hidden state, or a learned softmax-weighted sum of all hidden states."""
        if not self.config.use_weighted_layer_sum:
            return outputs.last_hidden_state
        num_layers = self.config.num_hidden_layers + 1  # transformer layers + their input
        layer_weights = self.param("layer_weights", nn.initializers.constant(1 / num_layers), (num_layers,))
        stacked = jnp.stack(outputs.hidden_states, axis=0)  # (layers, batch, frames, hidden)
        return jnp.einsum("l,lbth->bth", jax.nn.softmax(layer_weights).astype(self.dtype), stacked)


class Wav2Vec2ForCTCModule(_HeadModule):
    @nn.compact
    def __call__(self, input_values, attention_mask=None, labels=None, deterministic: bool = True,
                 output_hidden_states: bool = False, output_attentions: bool = False,
                 mask_time_indices=None, mask_feature_indices=None) -> HeadOutput:
        config = self.config
        outputs = self.run_base_model(input_values, attention_mask, deterministic, output_hidden_states,
                                      output_attentions, mask_time_indices, mask_feature_indices)
        hidden = nn.Dropout(config.final_dropout)(outputs.last_hidden_state, deterministic)
        logits = Dense(config.vocab_size, dtype=self.dtype, kernel_init=dense_init(config), name="lm_head")(hidden)

        loss = None
        if labels is not None:
            if attention_mask is None:
                attention_mask = jnp.ones(input_values.shape, dtype=jnp.int32)
            frame_lengths = feat_extract_output_lengths(config, attention_mask.astype(jnp.int32).sum(-1))
            loss = ctc_loss(logits, frame_lengths, labels, config.pad_token_id, config.ctc_loss_reduction,
                            config.ctc_zero_infinity)
        return HeadOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)


class Wav2Vec2ForSequenceClassificationModule(_HeadModule):
    @nn.compact
    def __call__(self, input_values, attention_mask=None, labels=None, deterministic: bool = True,
                 output_hidden_states: bool = False, output_attentions: bool = False,
                 mask_time_indices=None, mask_feature_indices=None) -> HeadOutput:
        config = self.config
        outputs = self.run_base_model(input_values, attention_mask, deterministic,
                                      output_hidden_states or config.use_weighted_layer_sum, output_attentions,
                                      mask_time_indices, mask_feature_indices)
        hidden = self.layer_weighted_states(outputs)
        init = dense_init(config)
        hidden = Dense(config.classifier_proj_size, dtype=self.dtype, kernel_init=init, name="projector")(hidden)
        if attention_mask is None:
            pooled = hidden.mean(axis=1)
        else:  # mean over the valid frames only
            valid = frame_mask(config, attention_mask, hidden.shape[1])[:, :, None]
            pooled = jnp.where(valid, hidden, 0).sum(axis=1) / valid.sum(axis=1)
        logits = Dense(config.num_labels, dtype=self.dtype, kernel_init=init, name="classifier")(pooled)
        loss = None if labels is None else cross_entropy(logits, labels.reshape(-1))
        return HeadOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)


class Wav2Vec2ForAudioFrameClassificationModule(_HeadModule):
    @nn.compact
    def __call__(self, input_values, attention_mask=None, labels=None, deterministic: bool = True,
                 output_hidden_states: bool = False, output_attentions: bool = False,
                 mask_time_indices=None, mask_feature_indices=None) -> HeadOutput:
        config = self.config
        outputs = self.run_base_model(input_values, attention_mask, deterministic,
                                      output_hidden_states or config.use_weighted_layer_sum, output_attentions,
                                      mask_time_indices, mask_feature_indices)
        hidden = self.layer_weighted_states(outputs)
        logits = Dense(config.num_labels, dtype=self.dtype, kernel_init=dense_init(config), name="classifier")(hidden)
        loss = None
        if labels is not None:
            # labels: (batch, frames, num_labels) scores; the target is their argmax (as the reference).
            targets = jnp.argmax(labels.reshape(-1, config.num_labels), axis=-1)
            loss = cross_entropy(logits.reshape(-1, config.num_labels), targets)
        return HeadOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)


class Wav2Vec2ForXVectorModule(_HeadModule):
    @nn.compact
    def __call__(self, input_values, attention_mask=None, labels=None, deterministic: bool = True,
                 output_hidden_states: bool = False, output_attentions: bool = False,
                 mask_time_indices=None, mask_feature_indices=None) -> XVectorOutput:
        config = self.config
        outputs = self.run_base_model(input_values, attention_mask, deterministic,
                                      output_hidden_states or config.use_weighted_layer_sum, output_attentions,
                                      mask_time_indices, mask_feature_indices)
        hidden = self.layer_weighted_states(outputs)
        init = dense_init(config)
        hidden = Dense(config.tdnn_dim[0], dtype=self.dtype, kernel_init=init, name="projector")(hidden)
        for i in range(len(config.tdnn_dim)):
            hidden = TDNNLayer(config, i, self.dtype, name=f"tdnn_{i}")(hidden)

        # Statistics pooling over the valid frames: mean and unbiased standard deviation.
        hidden = hidden.astype(jnp.float32)
        if attention_mask is None:
            lengths = jnp.full((hidden.shape[0],), hidden.shape[1])
        else:
            # As the reference (and the other backends): each TDNN layer shortens the count by
            # kernel - 1 whatever its dilation; a count past the frames there are is clipped.
            lengths = feat_extract_output_lengths(config, attention_mask.astype(jnp.int32).sum(-1))
            lengths = jnp.minimum(tdnn_output_lengths(config, lengths), hidden.shape[1])
        valid = (jnp.arange(hidden.shape[1])[None, :] < lengths[:, None])[:, :, None]
        mean = jnp.where(valid, hidden, 0).sum(1) / lengths[:, None]
        variance = jnp.where(valid, (hidden - mean[:, None]) ** 2, 0).sum(1) / (lengths[:, None] - 1)
        statistics = jnp.concatenate([mean, jnp.sqrt(variance)], axis=-1).astype(self.dtype)

        embeddings = Dense(config.xvector_output_dim, dtype=self.dtype, kernel_init=init, name="feature_extractor")(statistics)
        logits = Dense(config.xvector_output_dim, dtype=self.dtype, kernel_init=init, name="classifier")(embeddings)
        loss = AMSoftmaxObjective(config, name="objective")(logits, labels)
        return XVectorOutput(loss=loss, logits=logits, embeddings=embeddings, hidden_states=outputs.hidden_states,
                             attentions=outputs.attentions)


class Wav2Vec2ForPreTrainingModule(_HeadModule):
    @nn.compact
    def __call__(self, input_values, attention_mask=None, mask_time_indices=None, sampled_negative_indices=None,
                 gumbel_temperature=2.0, deterministic: bool = True, output_hidden_states: bool = False,
                 output_attentions: bool = False, mask_feature_indices=None,
                 gumbel_noise=None) -> Wav2Vec2ForPreTrainingOutput:
        config = self.config
        outputs = self.run_base_model(input_values, attention_mask, deterministic, output_hidden_states,
                                      output_attentions, mask_time_indices, mask_feature_indices)
        projected = Dense(
            config.proj_codevector_dim, dtype=self.dtype, kernel_init=torch_linear_init(config.hidden_size),
            bias_init=torch_linear_init(config.hidden_size), name="project_hid",
        )(outputs.last_hidden_state)

        features = nn.Dropout(config.feat_quantizer_dropout)(outputs.extract_features, deterministic)
        quantized, perplexity = GumbelVectorQuantizer(config, self.dtype, name="quantizer")(
            features, mask_time_indices, gumbel_temperature, deterministic, gumbel_noise
        )
        quantized = Dense(
            config.proj_codevector_dim, dtype=self.dtype, kernel_init=torch_linear_init(config.codevector_dim),
            bias_init=torch_linear_init(config.codevector_dim), name="project_q",
        )(quantized)

        loss = contrastive = diversity = None
        if sampled_negative_indices is not None:
            contrastive = contrastive_loss(projected, quantized, sampled_negative_indices, mask_time_indices,
                                           config.contrastive_logits_temperature)
            num_codevectors = config.num_codevectors_per_group * config.num_codevector_groups
            diversity = (num_codevectors - perplexity) / num_codevectors * mask_time_indices.sum()
            loss = contrastive + config.diversity_loss_weight * diversity
        return Wav2Vec2ForPreTrainingOutput(
            loss=loss, projected_states=projected, projected_quantized_states=quantized,
            codevector_perplexity=perplexity, hidden_states=outputs.hidden_states, attentions=outputs.attentions,
            contrastive_loss=contrastive, diversity_loss=diversity,
        )

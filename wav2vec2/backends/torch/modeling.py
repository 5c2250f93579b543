"""wav2vec 2.0 in PyTorch: the blocks, the bare model and its five heads, in one file.

Module and parameter names follow the reference PyTorch state dict, so ``canonical_state_dict`` is the
module's own ``state_dict`` with one rename: the weight-normalised positional conv is stored by
``torch.nn.utils.parametrizations.weight_norm`` as ``parametrizations.weight.original0/1`` and
written canonically as ``weight_g`` / ``weight_v``.

Randomness that the other backends must be able to reproduce (SpecAugment masks, pretraining masks,
negatives) comes from ``wav2vec2.spec``; only dropout, LayerDrop and, when no noise is passed, the
Gumbel noise of the quantizer use torch's own generator. SpecAugment masks neither passed nor given a
Generator are drawn by the spec layer with one seeded from torch's generator (``masking.seeded_generator``).

LayerDrop and DistributedDataParallel: a skipped layer still adds 0 * (one entry of each of its
parameters) to the hidden states, so every parameter gets a (zero) gradient on every step and DDP
runs with ``find_unused_parameters=False``; ranks need not agree on which layers they skip.
``masked_spec_embed`` is likewise applied with ``torch.where``, in the graph even when no frame is masked.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import weakref
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm
from torch.utils.checkpoint import checkpoint

from ...config import Wav2Vec2Config
from ... import pretrained
from ...spec import checks, masking
from ...spec.lengths import conv_spans, feat_extract_output_lengths, tdnn_output_lengths
from ...spec.masking import spec_augment_masks

logger = logging.getLogger(__name__)

# state_dict spelling of the positional conv weight norm -> canonical spelling
_WEIGHT_NORM_NAMES = {
    "conv.parametrizations.weight.original0": "conv.weight_g",
    "conv.parametrizations.weight.original1": "conv.weight_v",
}

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_python": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


# ----------------------------------------------------------------------------------------- matmuls
def uses_onednn_matmul(x: torch.Tensor) -> bool:
    """CPU inference runs its float32 and bf16 matmuls through oneDNN's own op, which applies an
    activation or a sum as it writes its output, saving a pass over it. In float32 that also replaces
    torch's ``F.linear``, which calls MKL's sgemm: under half of oneDNN's speed on this model's shapes
    on the AMD CPU measured, within 5% of it on the Intel one (``benchmarks/bench_gemm.py``). bf16 only
    where oneDNN has bf16 kernels (elsewhere ``F.linear`` has its own fallback). oneDNN's op has no
    autograd formula, and compilers and exporters trace the plain op, so everything else keeps ``F.linear``."""
    return (
        (x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and _has_onednn_kernels(x.dtype)))
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and torch.backends.mkldnn.is_available()
    )


@functools.lru_cache(maxsize=None)  # a property of the CPU, asked on every matmul
def _has_onednn_kernels(dtype: torch.dtype) -> bool:
    """Whether oneDNN runs `dtype` (bf16 or fp16) natively on this CPU, rather than emulated."""
    if dtype == torch.bfloat16:
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return dtype == torch.float16 and torch.ops.mkldnn._is_mkldnn_fp16_supported()


# activations oneDNN's matmul applies as it writes its output, by config name: (post-op, algorithm)
_ONEDNN_ACTIVATIONS = {
    "gelu": ("gelu", "none"), "gelu_python": ("gelu", "none"), "gelu_new": ("gelu", "tanh"),
    "gelu_pytorch_tanh": ("gelu", "tanh"), "relu": ("relu", ""), "silu": ("swish", ""),
    "swish": ("swish", ""), "tanh": ("tanh", ""),
}


def dense(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
          activation: Optional[str] = None, add: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``activation(F.linear(x, weight, bias) + add)``: x (..., in) @ weight (out, in).T + bias -> (..., out);
    activation a name in ACTIVATIONS or None; add None or a tensor of the output's shape. oneDNN
    applies the activation, or the sum, in the same pass as the matmul."""
    if uses_onednn_matmul(x) and weight.dtype == x.dtype:
        weight = weight.contiguous()  # a strided weight sends oneDNN to a reference kernel, 100x slower
        if add is not None:
            out = torch.ops.mkldnn._linear_pointwise.binary(x, add, weight, bias, "add")
            return out if activation is None else ACTIVATIONS[activation](out)
        post_op, algorithm = _ONEDNN_ACTIVATIONS.get(activation, ("none", ""))
        out = torch.ops.mkldnn._linear_pointwise(x, weight, bias, post_op, [], algorithm)
        return out if activation is None or post_op != "none" else ACTIVATIONS[activation](out)
    out = F.linear(x, weight, bias)
    if add is not None:
        out = out.add_(add)
    return out if activation is None else ACTIVATIONS[activation](out)


def linear(layer: nn.Module, x: torch.Tensor, activation: Optional[str] = None) -> torch.Tensor:
    """``activation(layer(x))`` for an ``nn.Linear``, through ``dense`` (its weight ``prepacks``). A
    quantized, parametrized or otherwise replaced layer, and one with forward hooks, runs itself."""
    if type(layer) is nn.Linear and not (layer._forward_hooks or layer._forward_pre_hooks):
        weight = layer.weight
        if prepacks(weight.shape, x):  # kept while the weight is unchanged
            weight = derived(layer, "prepacked_weight", (weight,), lambda: prepack(layer.weight))
        return dense(x, weight, layer.bias, activation)
    x = layer(x)
    return x if activation is None else ACTIVATIONS[activation](x)


# Inference-only tensors derived from parameters (stacked, reshaped, normalised weights), by module.
_DERIVED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def derived(owner: nn.Module, name: str, sources: Tuple[torch.Tensor, ...], compute):
    """``compute()`` (tensors made from `sources`, without autograd), computed once and reused while each
    source is the same tensor with the same storage, dtype, device and version counter: every in-place
    write (an optimizer step, load_state_dict, copy_) bumps the version and ``.to()`` moves the storage,
    so a stale value is never used. Kept beside `owner` (not in its state), for as long as it lives."""
    key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
    entries = _DERIVED.setdefault(owner, {})
    entry = entries.get(name)
    if entry is None or entry[1] != key or any(ref() is not t for ref, t in zip(entry[0], sources)):
        with torch.no_grad():
            entry = entries[name] = (tuple(weakref.ref(t) for t in sources), key, compute())
    return entry[2]


def prepacks(weight_shape: Tuple[int, int], x: torch.Tensor) -> bool:
    """Whether ``dense(x, weight)`` takes the (out, in) weight reordered into oneDNN's blocked layout
    up front: bf16 through oneDNN, with at least 3 times as many outputs as inputs. oneDNN otherwise
    reorders the weight in every call; for the q/k/v projection (2304 x 768) and the feed-forward's
    first linear (3072 x 768) up front was 1.26x and 1.23x faster, for narrower weights (768 x 768,
    768 x 3072, the conv stack's 512 x 1024) 1.1-1.8x slower, in float32 3-6% faster (not worth a
    second copy of every weight). Sapphire Rapids, 499 frames: benchmarks/bench_gemm.py --shape."""
    out_features, in_features = weight_shape
    return x.dtype == torch.bfloat16 and out_features >= 3 * in_features and uses_onednn_matmul(x)


def prepack(weight: torch.Tensor) -> torch.Tensor:
    """An (out, in) weight in oneDNN's blocked layout: an opaque tensor only oneDNN's matmul reads."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, None)


# ----------------------------------------------------------------------------------------- outputs
@dataclass
class Wav2Vec2BaseModelOutput:
    last_hidden_state: torch.Tensor = None
    extract_features: torch.Tensor = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[Optional[torch.Tensor], ...]] = None


@dataclass
class HeadOutput:
    """CTC, sequence and audio-frame classification: logits and, with labels, a loss."""

    loss: Optional[torch.Tensor] = None
    logits: torch.Tensor = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[Optional[torch.Tensor], ...]] = None


@dataclass
class XVectorOutput:
    loss: Optional[torch.Tensor] = None
    logits: torch.Tensor = None
    embeddings: torch.Tensor = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[Optional[torch.Tensor], ...]] = None


@dataclass
class Wav2Vec2ForPreTrainingOutput:
    loss: Optional[torch.Tensor] = None
    projected_states: torch.Tensor = None
    projected_quantized_states: torch.Tensor = None
    codevector_perplexity: torch.Tensor = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[Optional[torch.Tensor], ...]] = None
    contrastive_loss: Optional[torch.Tensor] = None
    diversity_loss: Optional[torch.Tensor] = None


# ------------------------------------------------------------------------------------ length helpers
def frame_mask(config, attention_mask: torch.Tensor, num_frames: int, add_adapter=None) -> torch.Tensor:
    """Bool (batch, num_frames), True on frames computed from valid samples of (batch, samples)."""
    lengths = feat_extract_output_lengths(config, attention_mask.sum(-1), add_adapter)
    return torch.arange(num_frames, device=attention_mask.device)[None, :] < lengths[:, None]


# ------------------------------------------------------------------------------------ feature encoder
class ConvLayer(nn.Module):
    """Conv1d -> optional norm -> activation. Norm: LayerNorm over channels ("layer", every layer) or
    GroupNorm with one group per channel ("group", layer 0 only): it normalises each channel over time."""

    def __init__(self, config: Wav2Vec2Config, layer_id: int):
        super().__init__()
        in_channels = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
        out_channels = config.conv_dim[layer_id]
        self.conv = nn.Conv1d(
            in_channels, out_channels, config.conv_kernel[layer_id], stride=config.conv_stride[layer_id],
            bias=config.conv_bias,
        )
        if config.feat_extract_norm == "layer":
            self.layer_norm = nn.LayerNorm(out_channels)  # eps 1e-5 as the reference hard-codes
        elif layer_id == 0:
            self.layer_norm = nn.GroupNorm(out_channels, out_channels)
        else:
            self.layer_norm = None
        self.activation = config.feat_extract_activation  # a name in ACTIVATIONS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # (batch, out_channels, frames)
        if isinstance(self.layer_norm, nn.LayerNorm):
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        elif self.layer_norm is not None:
            x = self.layer_norm(x)
        return ACTIVATIONS[self.activation](x)

    def forward_channels_last(self, x: torch.Tensor, folded_norm=None) -> torch.Tensor:
        """The same layer as matmuls over the conv's windows (im2col): x (batch, samples, in_channels)
        -> (batch, frames, out_channels). The LayerNorm then needs no transposes, and the GroupNorm folds
        into the matmul: with `folded_norm`, ``folded_group_norm``'s weights of the whole utterances
        (when x is a span of them), else those of x."""
        if isinstance(self.layer_norm, nn.GroupNorm):
            weight, bias = self.folded_group_norm(x) if folded_norm is None else folded_norm
            windows = self.windows(x)
            out = [dense(*args, self.activation) for args in zip(windows, weight, bias)]  # per utterance
            return out[0][None] if len(out) == 1 else torch.stack(out)
        if self.layer_norm is None:
            return self.windows_matmul(x, self.activation)
        return ACTIVATIONS[self.activation](self.layer_norm(self.windows_matmul(x)))

    def tap_major_weight(self) -> torch.Tensor:
        """The conv weight (out, in, kernel) as (out, kernel * in): columns tap by tap, each tap's
        channels together, the order of a window of (samples, channels) activations."""
        return self.conv.weight.transpose(1, 2).reshape(self.conv.out_channels, -1)

    def copies_windows(self, channels: int) -> bool:
        """Whether ``windows_matmul`` copies the windows (see there) rather than reading blocks of taps."""
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        return kernel * channels <= 2 * (-(-kernel // stride) - 1) * self.conv.out_channels

    def weight_blocks(self) -> Tuple[torch.Tensor, ...]:
        """The tap-major weight, or for reading blocks of taps its columns of each block of `stride`
        taps, contiguous, computed once (``derived``)."""
        kernel, stride, channels = self.conv.kernel_size[0], self.conv.stride[0], self.conv.in_channels

        def blocks():
            weight = self.tap_major_weight()
            if self.copies_windows(channels):
                return (weight.contiguous(),)
            return tuple(weight[:, first * channels:(first + stride) * channels].contiguous()
                         for first in range(0, kernel, stride))

        return derived(self, "weight_blocks", (self.conv.weight,), blocks)

    def windows(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, samples, in) -> every frame's window (batch, frames, kernel * in), tap-major (a copy)."""
        batch = x.shape[0]
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        windows = x.unfold(1, kernel, stride).transpose(2, 3)  # (batch, frames, kernel, in): a view
        return windows.reshape(batch, windows.shape[1], -1)

    def windows_matmul(self, x: torch.Tensor, activation: Optional[str] = None) -> torch.Tensor:
        """activation(the conv of x (batch, samples, in)) -> (batch, frames, out), as matmuls.

        Copying the windows writes kernel/stride times the input; instead, each block of `stride`
        consecutive taps reads rows of stride * in consecutive values, one row per frame: a strided
        view of x, no copy. A kernel longer than its stride takes a block per `stride` taps, each
        summed into the output as the block's matmul writes it, so the copy stays where it writes less
        than those sums (the first layer, with one input channel)."""
        batch, samples, channels = x.shape
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        weights, bias = self.weight_blocks(), self.conv.bias
        if self.copies_windows(channels):
            return dense(self.windows(x), weights[0], bias, activation)
        if batch > 1:  # the rows of several utterances are no one strided matrix: oneDNN would copy them
            return torch.stack([self.windows_matmul(u[None], activation)[0] for u in x])
        x = x.contiguous()
        frames = (samples - kernel) // stride + 1
        out = None
        for block in reversed(range(len(weights))):  # taps first .. first + taps - 1 of every window
            first = block * stride
            taps = min(stride, kernel - first)
            rows = x.as_strided(
                (batch, frames, taps * channels), (x.stride(0), stride * channels, 1),
                x.storage_offset() + first * channels,
            )
            if taps < stride:
                rows = rows.contiguous()  # rows with gaps between them: oneDNN runs a packed copy faster
            out = dense(rows, weights[block], bias if block == 0 else None,
                        activation if len(weights) == 1 else None, add=out)
        return out if activation is None or len(weights) == 1 else ACTIVATIONS[activation](out)

    def folded_group_norm(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The conv and its GroupNorm (one group per channel, over time) as one matmul per utterance:
        x (batch, samples, in) -> its weight (batch, out, kernel * in) and bias (batch, out), for
        ``windows(x)`` in x's dtype.

        A channel's output is its weight row w times the window c, so its mean over frames is w . mean(c)
        and its variance w Cov(c) w^T: the statistics come from the windows' (kernel * in) mean and
        covariance (float64, without computing the large output), and the norm's scale and shift fold
        into a per-utterance weight and bias. The conv's own bias cancels in the norm."""
        windows = self.windows(x)  # (batch, frames, K)
        frames = windows.shape[1]
        norm = self.layer_norm
        weight = self.tap_major_weight().double()  # (out, K)
        columns = windows.double()
        mean = columns.mean(1)  # (batch, K)
        centred = columns - mean[:, None]
        covariance = centred.transpose(1, 2) @ centred / frames  # (batch, K, K)
        variance = torch.einsum("ok,bkl,ol->bo", weight, covariance, weight)  # (batch, out)
        scale = norm.weight.double() * torch.rsqrt(variance + norm.eps)  # (batch, out)
        shift = norm.bias.double() - (mean @ weight.T) * scale
        return (weight * scale[:, :, None]).to(x.dtype).contiguous(), shift.to(x.dtype)


class FeatureEncoder(nn.Module):
    """Raw waveform (batch, samples) -> conv features (batch, conv_dim[-1], frames)."""

    # Output frames per span of the im2col path (forward_channels_last), chosen by measurement in the
    # whole model (docs/performance.md): 128 frames (2.6 s) is the fastest in float32 and in bf16, where
    # whole 10 s utterances were 1.1x (float32) and 1.6x (bf16) slower, their large first activations
    # freshly mapped memory each call.
    SPAN_FRAMES = 128

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.config = config
        self.conv_layers = nn.ModuleList(ConvLayer(config, i) for i in range(config.num_feat_extract_layers))
        self.gradient_checkpointing = False

    @staticmethod
    def uses_im2col(input_values: torch.Tensor) -> bool:
        """CPU inference runs each conv as matmuls over its windows, activations kept (batch, time,
        channels), where that form is the faster one (measured per layer, benchmarks/bench_conv_layers.py):
        in float32, where oneDNN's matmul runs the first conv (one input channel, kernel 10) about 2x
        faster than its convolution does; and in bf16/fp16 on a CPU with AMX (2.7x faster than oneDNN's
        convolutions there) or with no native kernels for the dtype (where convolutions fall to a
        reference kernel 10x slower). Only with AVX-512 bf16/fp16 instructions but no AMX are oneDNN's
        convolutions the faster form. With autograd on, on a GPU and under a compiler the convolutions stay."""
        if (
            input_values.device.type != "cpu"
            or torch.is_grad_enabled()
            or torch.compiler.is_compiling()
            or torch.jit.is_tracing()
        ):
            return False
        if input_values.dtype == torch.float32:
            return uses_onednn_matmul(input_values)
        return torch.cpu._is_amx_tile_supported() or not _has_onednn_kernels(input_values.dtype)

    def forward_channels_last(self, input_values: torch.Tensor, span_frames: Optional[int] = None) -> torch.Tensor:
        """The im2col path: waveform (batch, samples) -> features (batch, frames, conv_dim[-1]).

        Every layer but a GroupNorm is local in time, so the stack runs utterance by utterance and span
        by span of `span_frames` output frames (default SPAN_FRAMES), each from its own
        samples: the early layers' activations, whole 64 times the size of the last one's, then stay in
        the caches, and the memory is bounded whatever the input's length. A GroupNorm's statistics
        are over the whole utterance: they fold into the first layer's weights up front."""
        config = self.config
        checks.waveform_shape(config, tuple(input_values.shape), True, str(input_values.dtype))  # long enough
        x = input_values[:, :, None]  # (batch, samples, 1)
        first = self.conv_layers[0]
        folded = first.folded_group_norm(x) if isinstance(first.layer_norm, nn.GroupNorm) else None
        plan = conv_spans(config, x.shape[1], span_frames or self.SPAN_FRAMES)
        frames = plan.frames
        out = None
        for utterance in range(x.shape[0]):  # one at a time: each layer's input is one (frames, channels) matrix
            for index in range(plan.count):
                start, stop = index * plan.span, min(frames, (index + 1) * plan.span)
                first_sample = plan.start(index)  # the last span reads no padding: its own samples only
                h = x[utterance:utterance + 1, first_sample:first_sample + (stop - start - 1) * plan.hop + plan.receptive]
                h = first.forward_channels_last(h, None if folded is None else (
                    folded[0][utterance:utterance + 1], folded[1][utterance:utterance + 1]))
                for layer in self.conv_layers[1:]:
                    h = layer.forward_channels_last(h)
                if out is None and stop == frames and x.shape[0] == 1:
                    return h
                if out is None:
                    out = h.new_empty(x.shape[0], frames, h.shape[-1])
                out[utterance, start:stop] = h[0]
        return out

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        if self.uses_im2col(input_values):
            return self.forward_channels_last(input_values).transpose(1, 2)  # (batch, conv_dim[-1], frames)
        x = input_values[:, None]  # (batch, 1, samples)
        for layer in self.conv_layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return x


class FeatureProjection(nn.Module):
    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)
        self.dropout = nn.Dropout(config.feat_proj_dropout)

    def reset_parameters(self):
        bound = 1 / math.sqrt(self.projection.in_features)
        nn.init.uniform_(self.projection.weight, -bound, bound)
        nn.init.uniform_(self.projection.bias, -bound, bound)

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """features (batch, frames, conv_dim[-1]) -> (hidden (batch, frames, hidden), normalised features)."""
        normed = self.layer_norm(features)
        return self.dropout(linear(self.projection, normed)), normed


# ------------------------------------------------------------------------------------ transformer
class PositionalConvEmbedding(nn.Module):
    """Grouped, weight-normalised conv over time; its output is added to the hidden states."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        kernel = config.num_conv_pos_embeddings
        self.conv = nn.Conv1d(
            config.hidden_size, config.hidden_size, kernel, padding=kernel // 2,
            groups=config.num_conv_pos_embedding_groups,
        )
        # dim=2: one norm per kernel tap, taken over (out, in/groups): weight_g has shape (1, 1, K)
        self.conv = weight_norm(self.conv, name="weight", dim=2)
        self.trim_last_frame = kernel % 2 == 0  # symmetric K//2 padding of an even kernel adds one frame
        self.activation = ACTIVATIONS[config.feat_extract_activation]

    def reset_parameters(self):
        kernel, in_channels = self.conv.kernel_size[0], self.conv.in_channels
        weight_g, weight_v = self.conv.parametrizations.weight.original0, self.conv.parametrizations.weight.original1
        with torch.no_grad():
            weight_v.normal_(0.0, 2 * math.sqrt(1 / (kernel * in_channels)))
            weight_g.copy_(torch.linalg.vector_norm(weight_v, dim=(0, 1), keepdim=True))
            self.conv.bias.zero_()

    def normalised_weight(self) -> torch.Tensor:
        """The weight-normed kernel g * v / |v| as a 2-D conv's (out, in / groups, 1, kernel), in
        channels-last memory, computed once and reused while g and v are unchanged.

        Only without autograd (with it, the parametrization's graph is needed); see ``derived``.
        """
        weight = self.conv.parametrizations.weight
        return derived(self, "normalised_weight", (weight.original0, weight.original1), lambda: (
            self.conv.weight[:, :, None].contiguous(memory_format=torch.channels_last)))

    def runs_in_float32(self, hidden_states: torch.Tensor) -> bool:
        """Whether this bf16/fp16 conv runs in float32: torch's CPU grouped convolution in bf16 returns
        wrong numbers (relative error ~1, torch 2.13 on an AMX CPU) with fewer than 16 channels per
        group and an even kernel, as small models have (base and large have 48 and 64)."""
        return (
            hidden_states.dtype in (torch.bfloat16, torch.float16)
            and hidden_states.device.type == "cpu"
            and self.conv.in_channels // self.conv.groups < 16
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        in_float32 = self.runs_in_float32(hidden_states)
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing():
            x = hidden_states.transpose(1, 2)  # (batch, hidden, frames)
            if in_float32:
                x = F.conv1d(x.float(), self.conv.weight.float(), self.conv.bias.float(),
                             padding=self.conv.padding, groups=self.conv.groups).to(dtype)
            else:
                x = self.conv(x)  # (batch, hidden, frames [+1])
        else:
            # As a 2-D conv on (batch, hidden, 1, frames) in channels-last memory, which is the
            # (batch, frames, hidden) input as it lies: oneDNN runs this grouped conv 2x faster so
            # than on conv1d's (batch, hidden, frames), and no transposed copy is made.
            weight, bias = self.normalised_weight(), self.conv.bias
            x = hidden_states.transpose(1, 2)[:, :, None]
            if in_float32:
                x, weight, bias = x.float(), weight.float(), bias.float()
            x = F.conv2d(x, weight, bias, padding=(0, self.conv.padding[0]), groups=self.conv.groups)[:, :, 0].to(dtype)
        if self.trim_last_frame:
            x = x[:, :, :-1]
        return self.activation(x).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def fused_qkv_parameters(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """q, k and v weights stacked (3 * hidden, hidden), ``prepack``ed where ``prepacks`` for x, and
        their biases, for one matmul.

        One matmul instead of three runs fewer parallel regions (each linear also copies its bias
        into its output first). Stacked once, while the weights are unchanged (``derived``).
        """
        projections = (self.q_proj, self.k_proj, self.v_proj)
        sources = tuple(t for p in projections for t in (p.weight, p.bias))
        packed = prepacks((3 * self.q_proj.out_features, self.q_proj.in_features), x)

        def stack():
            weight = torch.cat([p.weight for p in projections])
            return prepack(weight) if packed else weight, torch.cat([p.bias for p in projections])

        return derived(self, "fused_qkv_prepacked" if packed else "fused_qkv", sources, stack)

    def forward(
        self, x: torch.Tensor, attention_bias: Optional[torch.Tensor] = None, output_attentions: bool = False
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x (batch, frames, hidden); attention_bias (batch, 1, 1, frames), 0 or -inf-like per key."""
        batch, frames, hidden = x.shape

        plain = all(type(p) is nn.Linear for p in (self.q_proj, self.k_proj, self.v_proj))
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or not plain:
            # Separate projections: autograd reaches each parameter, the compiler fuses by itself, and
            # a quantized (or otherwise replaced) Linear has no float .weight to stack.
            q, k, v = linear(self.q_proj, x), linear(self.k_proj, x), linear(self.v_proj, x)
        else:
            q, k, v = dense(x, *self.fused_qkv_parameters(x)).chunk(3, dim=-1)

        def split_heads(t):  # (batch, frames, hidden) -> (batch, heads, frames, head_dim)
            return t.reshape(batch, frames, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = split_heads(q), split_heads(k), split_heads(v)
        dropout = self.dropout if self.training else 0.0
        if output_attentions:
            # SDPA does not return the weights, so this path spells the softmax out.
            scores = (q @ k.transpose(-1, -2)) * self.head_dim**-0.5  # (batch, heads, frames, frames)
            if attention_bias is not None:
                scores = scores + attention_bias
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, p=dropout, training=self.training) @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_bias, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(batch, frames, hidden)
        return linear(self.out_proj, out), weights


class FeedForward(nn.Module):
    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_dropout = nn.Dropout(config.activation_dropout)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout)
        self.activation = config.hidden_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.intermediate_dropout(linear(self.intermediate_dense, x, self.activation))
        return self.output_dropout(linear(self.output_dense, x))


class AttnAdapterLayer(nn.Module):
    """MMS per-language adapter: a small bottleneck added after each pre-norm encoder layer."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size)
        self.linear_1 = nn.Linear(config.hidden_size, config.adapter_attn_dim)
        self.linear_2 = nn.Linear(config.adapter_attn_dim, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.linear_2, F.relu(linear(self.linear_1, self.norm(x))))


class EncoderLayer(nn.Module):
    """Post-norm layer (wav2vec2-base): x = LN(x + attn(x)); x = LN'(x + ff(x))."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.attention = Attention(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x, attention_bias=None, output_attentions=False):
        attended, weights = self.attention(x, attention_bias, output_attentions)
        x = self.layer_norm(x + self.dropout(attended))
        x = self.final_layer_norm(x + self.feed_forward(x))
        return x, weights


class StableEncoderLayer(nn.Module):
    """Pre-norm layer (large-lv60, XLS-R, MMS): x = x + attn(LN(x)); x = x + ff(LN'(x)) [+ adapter(x)]."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.attention = Attention(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.adapter_layer = AttnAdapterLayer(config) if config.adapter_attn_dim is not None else None

    def forward(self, x, attention_bias=None, output_attentions=False):
        attended, weights = self.attention(self.layer_norm(x), attention_bias, output_attentions)
        x = x + self.dropout(attended)
        x = x + self.feed_forward(self.final_layer_norm(x))
        if self.adapter_layer is not None:
            x = x + self.adapter_layer(x)
        return x, weights


def _zero_gradient_anchor(module: nn.Module) -> torch.Tensor:
    """0 * (one entry of every trainable parameter): keeps a skipped layer in the autograd graph.

    DistributedDataParallel with find_unused_parameters=False expects a gradient for every
    parameter on every step; a LayerDrop-skipped layer then still gets one (zeros), without running.
    """
    touched = [p.view(-1)[0] for p in module.parameters() if p.requires_grad]
    return torch.stack(touched).sum() * 0.0 if touched else None


class Encoder(nn.Module):
    """Positional conv + transformer layers. Post-norm (base) normalises before the first layer,
    pre-norm ("stable") after the last one."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.stable = config.do_stable_layer_norm
        self.layerdrop = config.layerdrop
        self.pos_conv_embed = PositionalConvEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        layer_class = StableEncoderLayer if self.stable else EncoderLayer
        self.layers = nn.ModuleList(layer_class(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def forward(self, x, frame_mask=None, output_attentions=False, output_hidden_states=False):
        """x (batch, frames, hidden); frame_mask bool (batch, frames) or None.

        Returns (last hidden state, hidden states or None, attentions or None).
        """
        attention_bias = None
        if frame_mask is not None:
            x = x * frame_mask[..., None].to(x.dtype)  # padded frames must not leak through the conv
            # Additive bias on the keys: 0 where valid, the dtype's most negative value on padding.
            attention_bias = (~frame_mask[:, None, None, :]).to(x.dtype) * torch.finfo(x.dtype).min

        x = x + self.pos_conv_embed(x)
        if not self.stable:
            x = self.layer_norm(x)
        x = self.dropout(x)

        all_hidden, all_attentions = [], []
        for layer in self.layers:
            all_hidden.append(x)
            if self.training and self.layerdrop > 0 and torch.rand(()) < self.layerdrop:
                touch = _zero_gradient_anchor(layer)
                x = x if touch is None else x + touch
                all_attentions.append(None)
                continue
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, weights = checkpoint(layer, x, attention_bias, output_attentions, use_reentrant=False)
            else:
                x, weights = layer(x, attention_bias, output_attentions)
            all_attentions.append(weights)

        if self.stable:
            x = self.layer_norm(x)
        all_hidden.append(x)
        return (
            x,
            tuple(all_hidden) if output_hidden_states else None,
            tuple(all_attentions) if output_attentions else None,
        )


class AdapterLayer(nn.Module):
    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        size = config.output_hidden_size
        self.conv = nn.Conv1d(size, 2 * size, config.adapter_kernel_size, stride=config.adapter_stride, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(self.conv(x), dim=1)  # (batch, size, frames / stride)


class Adapter(nn.Module):
    """Conv adapter after the encoder: strided GLU convs shorten the sequence (optionally after a
    projection to output_hidden_size)."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        if config.output_hidden_size != config.hidden_size:
            self.proj = nn.Linear(config.hidden_size, config.output_hidden_size)
            self.proj_layer_norm = nn.LayerNorm(config.output_hidden_size)
        else:
            self.proj = self.proj_layer_norm = None
        self.layers = nn.ModuleList(AdapterLayer(config) for _ in range(config.num_adapter_layers))
        self.layerdrop = config.layerdrop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is not None:
            x = self.proj_layer_norm(linear(self.proj, x))
        x = x.transpose(1, 2)  # (batch, size, frames)
        for layer in self.layers:
            if self.training and self.layerdrop > 0 and torch.rand(()) < self.layerdrop:
                touch = _zero_gradient_anchor(layer)
                x = x if touch is None else x + touch
            else:
                x = layer(x)
        return x.transpose(1, 2)


# ------------------------------------------------------------------------------------ quantizer
class GumbelVectorQuantizer(nn.Module):
    """Product quantizer: num_codevector_groups codebooks of num_codevectors_per_group entries each."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.num_groups = config.num_codevector_groups
        self.num_vars = config.num_codevectors_per_group
        self.codevectors = nn.Parameter(
            torch.empty(1, self.num_groups * self.num_vars, config.codevector_dim // self.num_groups)
        )
        self.weight_proj = nn.Linear(config.conv_dim[-1], self.num_groups * self.num_vars)
        self.temperature = 2.0  # decayed during pretraining with set_gumbel_temperature

    def reset_parameters(self):
        nn.init.normal_(self.weight_proj.weight, 0.0, 1.0)
        nn.init.zeros_(self.weight_proj.bias)
        nn.init.uniform_(self.codevectors)

    @staticmethod
    def perplexity(probs: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """probs (batch * frames, groups, vars); mask bool (batch, frames) selects the frames counted."""
        if mask is None:
            marginal = probs.mean(dim=0)
        else:
            counted = mask.reshape(-1, 1, 1)
            marginal = torch.where(counted, probs, torch.zeros_like(probs)).sum(dim=0) / mask.sum()
        return torch.exp(-torch.sum(marginal * torch.log(marginal + 1e-7), dim=-1)).sum()

    def forward(self, features, mask_time_indices=None, gumbel_noise=None):
        """features (batch, frames, conv_dim[-1]) -> (codevectors (batch, frames, codevector_dim), perplexity).

        In training, codevectors are picked by hard Gumbel-softmax with straight-through gradients;
        ``gumbel_noise`` (batch, frames, groups, vars) of standard Gumbel samples makes it reproducible.
        In eval, by argmax.
        """
        batch, frames, _ = features.shape
        logits = linear(self.weight_proj, features).view(batch * frames, self.num_groups, self.num_vars)
        if self.training:
            logits32 = logits.float()
            if gumbel_noise is None:
                gumbel_noise = -torch.empty_like(logits32).exponential_().log()
            gumbel_noise = gumbel_noise.reshape(logits32.shape).to(logits32)
            soft = ((logits32 + gumbel_noise) / self.temperature).softmax(dim=-1)
            hard = F.one_hot(soft.argmax(dim=-1), self.num_vars).to(soft)
            probs = (hard - soft.detach() + soft).type_as(logits)  # straight-through estimator
            perplexity = self.perplexity(logits32.softmax(dim=-1), mask_time_indices)
        else:
            probs = F.one_hot(logits.argmax(dim=-1), self.num_vars).to(logits)
            perplexity = self.perplexity(probs, mask_time_indices)
        # (batch * frames, groups * vars, 1) * (1, groups * vars, dim / groups), summed within each group
        per_entry = probs.view(batch * frames, -1, 1) * self.codevectors
        codevectors = per_entry.view(batch * frames, self.num_groups, self.num_vars, -1).sum(dim=-2)
        return codevectors.view(batch, frames, -1), perplexity


# ------------------------------------------------------------------------------------ x-vector blocks
class TDNNLayer(nn.Module):
    """Dilated conv over time, stored as a Linear on the (kernel * in_dim) unfolded window."""

    def __init__(self, config: Wav2Vec2Config, layer_id: int):
        super().__init__()
        self.in_dim = config.tdnn_dim[layer_id - 1] if layer_id > 0 else config.tdnn_dim[0]
        self.out_dim = config.tdnn_dim[layer_id]
        self.kernel_size = config.tdnn_kernel[layer_id]
        self.dilation = config.tdnn_dilation[layer_id]
        self.kernel = nn.Linear(self.in_dim * self.kernel_size, self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Linear weight (out, kernel * in) laid out tap-major -> conv weight (out, in, kernel)
        weight = self.kernel.weight.view(self.out_dim, self.kernel_size, self.in_dim).transpose(1, 2)
        x = F.conv1d(x.transpose(1, 2), weight, self.kernel.bias, dilation=self.dilation)
        return F.relu(x.transpose(1, 2))  # (batch, frames - dilation * (kernel - 1), out_dim)


class AMSoftmaxLoss(nn.Module):
    """Additive-margin softmax: cross-entropy on scale * (cos - margin for the true class)."""

    def __init__(self, input_dim: int, num_labels: int, scale: float = 30.0, margin: float = 0.4):
        super().__init__()
        self.scale, self.margin, self.num_labels = scale, margin, num_labels
        self.weight = nn.Parameter(torch.randn(input_dim, num_labels))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.flatten()
        # The loss runs in float32 whatever the model's dtype (embeddings arrive as float32).
        weight = self.weight.to(embeddings.dtype)
        cosine = F.normalize(embeddings, dim=1) @ F.normalize(weight, dim=0)  # (batch, num_labels)
        is_target = F.one_hot(labels, self.num_labels).bool()
        logits = self.scale * torch.where(is_target, cosine - self.margin, cosine)
        return F.cross_entropy(logits, labels)


# ------------------------------------------------------------------------------------ initialisation
def init_weights(root: nn.Module, config: Wav2Vec2Config) -> None:
    """Random initialisation with the reference's distributions (not its exact values)."""
    for module in root.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv1d) and not parametrize.is_parametrized(module):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                bound = math.sqrt(module.groups / (module.in_channels * module.kernel_size[0]))
                nn.init.uniform_(module.bias, -bound, bound)
    # Blocks with their own scheme go after the generic pass, which would overwrite them.
    for module in root.modules():
        if isinstance(module, (PositionalConvEmbedding, FeatureProjection, GumbelVectorQuantizer)):
            module.reset_parameters()


# ------------------------------------------------------------------------------------ input checks
def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name}: cannot convert a {type(value).__name__} to a tensor ({e})") from None


# ------------------------------------------------------------------------------------ shared base
def _static(shape) -> tuple:
    """A shape for wav2vec2.spec.checks: symbolic sizes (torch.export, torch.compile) become None, so
    the checks skip them instead of specialising the graph to one size."""
    return tuple(d if type(d) is int else None for d in shape)


class Wav2Vec2PreTrainedModel(nn.Module):
    """Weight I/O, dtype/device plumbing and input checks shared by the bare model and every head."""

    head = "model"  # the head name of wav2vec2.spec.names.canonical_shapes

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        if not isinstance(config, Wav2Vec2Config):
            raise ValueError(f"config must be a wav2vec2.Wav2Vec2Config, got {type(config).__name__}")
        self.config = config
        self.name_or_path = None  # where from_pretrained found the weights; load_adapter looks there
        self.hub_kwargs = {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def body(self) -> "Wav2Vec2Model":
        return self if isinstance(self, Wav2Vec2Model) else self.wav2vec2

    # ---------------------------------------------------------------- training switches
    def freeze_feature_encoder(self) -> None:
        """Stop gradients to the conv feature encoder (the usual setting for fine-tuning)."""
        for p in self.body.feature_extractor.parameters():
            p.requires_grad_(False)

    def gradient_checkpointing_enable(self) -> None:
        """Recompute conv layers and encoder layers in the backward pass instead of storing activations."""
        self.body.feature_extractor.gradient_checkpointing = True
        self.body.encoder.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.body.feature_extractor.gradient_checkpointing = False
        self.body.encoder.gradient_checkpointing = False

    # ---------------------------------------------------------------- input checks
    def _prepare_inputs(self, input_values, attention_mask):
        """Checked inputs: waveform (batch, samples) in the model's dtype/device, mask or None."""
        x = _as_tensor(input_values, "input_values")
        checks.waveform_shape(self.config, _static(x.shape), x.is_floating_point(), str(x.dtype))
        if x.ndim == 1:
            x = x[None]
        x = x.to(device=self.device, dtype=self.dtype)
        if attention_mask is not None:
            attention_mask = _as_tensor(attention_mask, "attention_mask").to(self.device)
            checks.attention_mask_shape(_static(attention_mask.shape), _static(x.shape))
            attention_mask = attention_mask.reshape(x.shape).long()
        return x, attention_mask

    def _frame_input(self, value, name: str, shape, dtype) -> torch.Tensor:
        value = _as_tensor(value, name).to(self.device)
        checks.frame_input(name, _static(value.shape), _static(shape))
        return value.to(dtype)

    def _output_lengths(self, input_values, attention_mask, add_adapter=None) -> torch.Tensor:
        """Valid output frames per utterance (batch,), from the mask's sample counts (or the full length)."""
        input_values, attention_mask = self._prepare_inputs(input_values, attention_mask)
        if attention_mask is None:
            samples = torch.full(input_values.shape[:1], input_values.shape[1], device=self.device)
        else:
            samples = attention_mask.sum(-1)
        return feat_extract_output_lengths(self.config, samples, add_adapter)

    def _loss_samples(self, input_values, attention_mask) -> None:
        """With labels: every utterance must have a valid sample (checks.samples_for_loss)."""
        if attention_mask is not None:
            _, attention_mask = self._prepare_inputs(input_values, attention_mask)
            checks.samples_for_loss(attention_mask.sum(-1).cpu().numpy())

    def _class_labels(self, labels, batch: int, what: str) -> torch.Tensor:
        """Integer labels (batch,) on the model's device."""
        labels = _as_tensor(labels, "labels").to(self.device)
        checks.class_labels(_static(labels.shape), not labels.is_floating_point() and labels.dtype != torch.bool, batch, what)
        return labels.long()

    # ---------------------------------------------------------------- canonical weights
    def canonical_state_dict(self) -> Dict[str, np.ndarray]:
        """Weights under the reference PyTorch names and layouts, as float32/float16/bfloat16->float32 NumPy."""
        state = {}
        for name, tensor in self.state_dict().items():
            for torch_name, canonical_name in _WEIGHT_NORM_NAMES.items():
                if name.endswith(torch_name):
                    name = name[: -len(torch_name)] + canonical_name
            tensor = tensor.detach().cpu()
            if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16
                tensor = tensor.float()
            state[name] = tensor.numpy().copy()
        return state

    def load_canonical_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        """Load a complete canonical dict (exactly this model's keys and shapes), keeping dtype/device."""
        own = self.state_dict()
        to_torch_name = {}
        for name in own:
            canonical = name
            for torch_name, canonical_name in _WEIGHT_NORM_NAMES.items():
                if name.endswith(torch_name):
                    canonical = name[: -len(torch_name)] + canonical_name
            to_torch_name[canonical] = name
        missing = sorted(set(to_torch_name) - set(state))
        unknown = sorted(set(state) - set(to_torch_name))
        if missing or unknown:
            raise ValueError(
                f"{type(self).__name__}.load_canonical_state_dict: missing keys {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unknown keys {unknown[:5]}{'...' if len(unknown) > 5 else ''}"
            )
        converted = {}
        for canonical, torch_name in to_torch_name.items():
            value = np.asarray(state[canonical])
            target = own[torch_name]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"{canonical}: expected shape {tuple(target.shape)}, got {tuple(value.shape)}"
                )
            if value.dtype.name == "bfloat16":  # ml_dtypes' bfloat16, which torch.from_numpy cannot take
                value = value.astype(np.float32)  # exact: every bfloat16 is a float32
            converted[torch_name] = torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype)
        self.load_state_dict(converted, strict=True)

    # ---------------------------------------------------------------- files (wav2vec2.pretrained)
    @classmethod
    def from_pretrained(cls, path_or_repo_id, target_lang: Optional[str] = None, config=None, **hub_kwargs):
        """Load config.json and weights (any format wav2vec2.io reads) from a directory or hub repo.

        Head weights the checkpoint lacks are initialised randomly (logged as a warning); weights of
        other heads are dropped. With ``target_lang``, the MMS adapter of that language is loaded too.
        The model is returned in eval mode.
        """
        return pretrained.from_pretrained(cls, path_or_repo_id, target_lang, config, hub_kwargs).eval()

    def save_pretrained(self, directory, format: Optional[str] = None, max_shard_size=None, *,
                        safe_serialization: bool = True) -> None:
        """Write config.json and the weights: model.safetensors (pytorch_model.bin without
        ``safe_serialization``), or any ``format`` wav2vec2.io writes. The directory is left with
        these weights only (see wav2vec2.pretrained)."""
        format = format or ("safetensors" if safe_serialization else "pytorch")
        pretrained.save_pretrained(self, directory, format, max_shard_size)


# ------------------------------------------------------------------------------------ the bare model
class Wav2Vec2Model(Wav2Vec2PreTrainedModel):
    head = "model"

    def __init__(self, config: Wav2Vec2Config):
        super().__init__(config)
        self.feature_extractor = FeatureEncoder(config)
        self.feature_projection = FeatureProjection(config)
        if config.mask_time_prob > 0 or config.mask_feature_prob > 0:
            self.masked_spec_embed = nn.Parameter(torch.empty(config.hidden_size).uniform_())
        else:
            self.masked_spec_embed = None
        self.encoder = Encoder(config)
        self.adapter = Adapter(config) if config.add_adapter else None
        init_weights(self, config)

    def _spec_augment(self, hidden, frames_valid, mask_time_indices, mask_feature_indices, rng):
        """Replace masked frames by masked_spec_embed, zero masked channels. hidden (batch, frames, hidden).

        Masks not given are drawn in training (wav2vec2.spec.masking); a given feature mask applies
        in training only, a given time mask always (as the reference)."""
        if not self.config.apply_spec_augment:
            return hidden
        draw_time = mask_time_indices is None and self.config.mask_time_prob > 0
        draw_features = mask_feature_indices is None and self.config.mask_feature_prob > 0
        if not self.training:
            mask_feature_indices = None
        elif draw_time or draw_features:
            batch, frames, _ = hidden.shape
            valid = None if frames_valid is None else frames_valid.cpu().numpy()
            if rng is None:  # seeded from torch's generator: torch.manual_seed reproduces it, as dropout
                rng = masking.seeded_generator(torch.randint(2**62, (2,)).numpy())
            drawn_time, drawn_features = spec_augment_masks(
                self.config, batch, frames, rng=rng, frame_attention_mask=valid
            )
            if mask_time_indices is None and drawn_time is not None:
                mask_time_indices = torch.from_numpy(drawn_time).to(hidden.device)
            if mask_feature_indices is None and drawn_features is not None:
                mask_feature_indices = drawn_features
        if mask_time_indices is not None:
            checks.masked_spec_embed(self.config)
            # torch.where (not in-place indexing) keeps masked_spec_embed in the graph even when no
            # frame is masked, so DDP sees a gradient for it on every step.
            embed = self.masked_spec_embed.to(hidden.dtype)
            hidden = torch.where(mask_time_indices[..., None], embed, hidden)
        if mask_feature_indices is not None and self.config.mask_feature_prob > 0:
            channels = _as_tensor(mask_feature_indices, "mask_feature_indices").to(hidden.device, torch.bool)
            checks.frame_input("mask_feature_indices", _static(channels.shape), (_static(hidden.shape)[0], _static(hidden.shape)[2]))
            hidden = hidden.masked_fill(channels[:, None, :], 0.0)
        return hidden

    def forward(
        self,
        input_values,
        attention_mask=None,
        mask_time_indices=None,
        mask_feature_indices=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        spec_augment_rng: Optional[np.random.Generator] = None,
    ) -> Wav2Vec2BaseModelOutput:
        """input_values (batch, samples) float; attention_mask (batch, samples) 1 on real samples;
        mask_time_indices bool (batch, frames): frames to replace by masked_spec_embed;
        mask_feature_indices bool (batch, hidden): channels zeroed in training. Masks not given are
        drawn in training with the NumPy Generator ``spec_augment_rng`` (by default one seeded from
        torch's generator: wav2vec2.spec.masking.seeded_generator)."""
        input_values, attention_mask = self._prepare_inputs(input_values, attention_mask)
        features = self.feature_extractor(input_values).transpose(1, 2)  # (batch, frames, conv_dim[-1])
        batch, frames, _ = features.shape

        valid = None if attention_mask is None else frame_mask(self.config, attention_mask, frames, add_adapter=False)
        if mask_time_indices is not None:
            mask_time_indices = self._frame_input(mask_time_indices, "mask_time_indices", (batch, frames), torch.bool)

        hidden, extract_features = self.feature_projection(features)
        hidden = self._spec_augment(hidden, valid, mask_time_indices, mask_feature_indices, spec_augment_rng)
        hidden, all_hidden, attentions = self.encoder(hidden, valid, output_attentions, output_hidden_states)
        if self.adapter is not None:
            hidden = self.adapter(hidden)  # (batch, frames after the adapter, output_hidden_size)
        return Wav2Vec2BaseModelOutput(
            last_hidden_state=hidden, extract_features=extract_features, hidden_states=all_hidden, attentions=attentions
        )


def _weighted_layer_sum(layer_weights: torch.Tensor, hidden_states) -> torch.Tensor:
    stacked = torch.stack(hidden_states, dim=1)  # (batch, layers + 1, frames, hidden)
    weights = layer_weights.softmax(dim=-1).view(-1, 1, 1)
    return (stacked * weights).sum(dim=1)


# ------------------------------------------------------------------------------------ heads
class _HeadModel(Wav2Vec2PreTrainedModel):
    """A task head over ``self.wav2vec2`` (the body's weights carry the ``wav2vec2.`` prefix)."""

    def freeze_base_model(self) -> None:
        """Train the head only."""
        for p in self.wav2vec2.parameters():
            p.requires_grad_(False)

    def _add_layer_weights(self, config: Wav2Vec2Config) -> None:
        num_layers = config.num_hidden_layers + 1  # the encoder input and every layer output
        if config.use_weighted_layer_sum:
            self.layer_weights = nn.Parameter(torch.ones(num_layers) / num_layers)

    def _body_states(self, input_values, attention_mask, mask_time_indices, mask_feature_indices,
                     output_attentions, output_hidden_states, spec_augment_rng):
        """The body's outputs and the head's input: the last hidden state, or with
        use_weighted_layer_sum the softmax-weighted sum of all hidden states (then returned too)."""
        out = self.wav2vec2(
            input_values, attention_mask, mask_time_indices, mask_feature_indices, output_attentions,
            output_hidden_states or self.config.use_weighted_layer_sum, spec_augment_rng,
        )
        hidden = (
            _weighted_layer_sum(self.layer_weights, out.hidden_states)
            if self.config.use_weighted_layer_sum
            else out.last_hidden_state
        )
        return hidden, out


class Wav2Vec2ForCTC(_HeadModel):
    head = "ctc"

    def __init__(self, config: Wav2Vec2Config, target_lang: Optional[str] = None):
        super().__init__(config)
        self.wav2vec2 = Wav2Vec2Model(config)
        self.dropout = nn.Dropout(config.final_dropout)
        head_input_size = config.output_hidden_size if config.add_adapter else config.hidden_size
        self.lm_head = nn.Linear(head_input_size, config.vocab_size)
        self.target_lang = target_lang
        init_weights(self.lm_head, config)

    def forward(
        self,
        input_values,
        attention_mask=None,
        labels=None,
        mask_time_indices=None,
        mask_feature_indices=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        spec_augment_rng: Optional[np.random.Generator] = None,
    ) -> HeadOutput:
        """labels (batch, max_target_len) token ids, padded with -100 (any negative value)."""
        if labels is not None:
            self._loss_samples(input_values, attention_mask)
        out = self.wav2vec2(
            input_values, attention_mask, mask_time_indices, mask_feature_indices, output_attentions,
            output_hidden_states, spec_augment_rng,
        )
        logits = linear(self.lm_head, self.dropout(out.last_hidden_state))  # (batch, frames, vocab)
        loss = None
        if labels is not None:
            loss = self.ctc_loss(logits, labels, self._output_lengths(input_values, attention_mask))
        return HeadOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)

    def ctc_loss(self, logits, labels, input_lengths) -> torch.Tensor:
        """CTC as torch's F.ctc_loss with config.ctc_loss_reduction; log-softmax and loss in float32.

        logits (batch, frames, vocab); labels (batch, target_length) padded with negatives;
        input_lengths (batch,) valid frames.
        """
        labels = _as_tensor(labels, "labels").to(logits.device)
        is_integer = not labels.is_floating_point() and labels.dtype != torch.bool
        max_label = int(labels.max()) if labels.numel() and is_integer and labels.ndim == 2 else None
        checks.ctc_labels(self.config, _static(labels.shape), is_integer, _static(logits.shape)[0], max_label)
        labels = labels.long()
        is_target = labels >= 0
        targets = labels[is_target]  # (total target tokens,)
        log_probs = logits.float().log_softmax(dim=-1).transpose(0, 1)  # (frames, batch, vocab)
        with torch.backends.cudnn.flags(enabled=False):  # cuDNN's CTC has other length limits
            return F.ctc_loss(
                log_probs, targets, input_lengths, is_target.sum(-1), blank=self.config.pad_token_id,
                reduction=self.config.ctc_loss_reduction, zero_infinity=self.config.ctc_zero_infinity,
            )

    # ---------------------------------------------------------------- MMS adapters (wav2vec2.pretrained)
    def load_adapter(self, target_lang: str, path_or_repo_id=None, **hub_kwargs) -> None:
        """Load ``adapter.{target_lang}.safetensors`` (or .bin, .h5, .msgpack) from where the model came
        from, or from ``path_or_repo_id``. A vocabulary of another size resizes lm_head (and the model
        gets a config of its own with the new vocab_size)."""
        pretrained.load_adapter(self, target_lang, path_or_repo_id, **hub_kwargs)

    def _resize_lm_head(self, config: Wav2Vec2Config) -> None:
        self.lm_head = nn.Linear(self.lm_head.in_features, config.vocab_size, device=self.device, dtype=self.dtype)
        self.config = config
        self.wav2vec2.config = config


class Wav2Vec2ForSequenceClassification(_HeadModel):
    head = "sequence_classification"

    def __init__(self, config: Wav2Vec2Config):
        super().__init__(config)
        checks.no_conv_adapter(config, type(self).__name__)
        self.wav2vec2 = Wav2Vec2Model(config)
        self._add_layer_weights(config)
        self.projector = nn.Linear(config.hidden_size, config.classifier_proj_size)
        self.classifier = nn.Linear(config.classifier_proj_size, config.num_labels)
        init_weights(self.projector, config)
        init_weights(self.classifier, config)

    def forward(
        self,
        input_values,
        attention_mask=None,
        labels=None,
        mask_time_indices=None,
        mask_feature_indices=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        spec_augment_rng: Optional[np.random.Generator] = None,
    ):
        """labels (batch,) class ids. Mean pooling over valid frames."""
        if labels is not None:
            self._loss_samples(input_values, attention_mask)
        hidden, out = self._body_states(
            input_values, attention_mask, mask_time_indices, mask_feature_indices, output_attentions,
            output_hidden_states, spec_augment_rng,
        )
        hidden = linear(self.projector, hidden)  # (batch, frames, classifier_proj_size)
        if attention_mask is None:
            pooled = hidden.mean(dim=1)
        else:
            lengths = self._output_lengths(input_values, attention_mask)
            valid = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
            valid = valid[..., None].to(hidden.dtype)  # (batch, frames, 1)
            pooled = (hidden * valid).sum(dim=1) / valid.sum(dim=1)
        logits = linear(self.classifier, pooled)  # (batch, num_labels)
        loss = None
        if labels is not None:
            labels = self._class_labels(labels, logits.shape[0], "class ids")
            loss = F.cross_entropy(logits.float(), labels)
        return HeadOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)


class Wav2Vec2ForAudioFrameClassification(_HeadModel):
    head = "audio_frame_classification"

    def __init__(self, config: Wav2Vec2Config):
        super().__init__(config)
        checks.no_conv_adapter(config, type(self).__name__)
        self.wav2vec2 = Wav2Vec2Model(config)
        self._add_layer_weights(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_weights(self.classifier, config)

    def forward(
        self,
        input_values,
        attention_mask=None,
        labels=None,
        mask_time_indices=None,
        mask_feature_indices=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        spec_augment_rng: Optional[np.random.Generator] = None,
    ):
        """labels (batch, frames, num_labels) one-hot (or scores: the argmax is the target), as the reference."""
        if labels is not None:
            self._loss_samples(input_values, attention_mask)
        hidden, out = self._body_states(
            input_values, attention_mask, mask_time_indices, mask_feature_indices, output_attentions,
            output_hidden_states, spec_augment_rng,
        )
        logits = linear(self.classifier, hidden)  # (batch, frames, num_labels)
        loss = None
        if labels is not None:
            labels = _as_tensor(labels, "labels").to(logits.device)
            checks.frame_labels(_static(labels.shape), _static(logits.shape))
            num_labels = self.config.num_labels
            targets = labels.reshape(-1, num_labels).argmax(dim=1)
            loss = F.cross_entropy(logits.float().reshape(-1, num_labels), targets)
        return HeadOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)


class Wav2Vec2ForXVector(_HeadModel):
    head = "xvector"

    def __init__(self, config: Wav2Vec2Config):
        super().__init__(config)
        self.wav2vec2 = Wav2Vec2Model(config)
        self._add_layer_weights(config)
        self.projector = nn.Linear(config.hidden_size, config.tdnn_dim[0])
        self.tdnn = nn.ModuleList(TDNNLayer(config, i) for i in range(len(config.tdnn_dim)))
        self.feature_extractor = nn.Linear(config.tdnn_dim[-1] * 2, config.xvector_output_dim)
        self.classifier = nn.Linear(config.xvector_output_dim, config.xvector_output_dim)
        self.objective = AMSoftmaxLoss(config.xvector_output_dim, config.num_labels)
        for module in (self.projector, self.tdnn, self.feature_extractor, self.classifier):
            init_weights(module, config)

    def forward(
        self,
        input_values,
        attention_mask=None,
        labels=None,
        mask_time_indices=None,
        mask_feature_indices=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        spec_augment_rng: Optional[np.random.Generator] = None,
    ):
        """labels (batch,) speaker ids. Statistics pooling (mean, std) over valid TDNN frames."""
        if labels is not None:
            self._loss_samples(input_values, attention_mask)
        hidden, out = self._body_states(
            input_values, attention_mask, mask_time_indices, mask_feature_indices, output_attentions,
            output_hidden_states, spec_augment_rng,
        )
        hidden = linear(self.projector, hidden)
        for layer in self.tdnn:
            hidden = layer(hidden)  # (batch, tdnn frames, tdnn_dim[i])
        if attention_mask is None:
            mean, std = hidden.mean(dim=1), hidden.std(dim=1)
        else:
            lengths = tdnn_output_lengths(self.config, self._output_lengths(input_values, attention_mask))
            valid = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None])[..., None]
            # the reference's lengths ignore dilation and may exceed the frames there are: slice semantics
            count = valid.sum(dim=1).to(hidden.dtype)
            mean = hidden.masked_fill(~valid, 0.0).sum(dim=1) / count
            # unbiased, like torch.std
            std = ((hidden - mean[:, None]).masked_fill(~valid, 0.0).pow(2).sum(dim=1) / (count - 1)).sqrt()
        embeddings = linear(self.feature_extractor, torch.cat([mean, std], dim=-1))  # (batch, xvector_output_dim)
        logits = linear(self.classifier, embeddings)
        loss = None
        if labels is not None:
            loss = self.objective(logits.float(), self._class_labels(labels, logits.shape[0], "speaker ids"))
        return XVectorOutput(
            loss=loss, logits=logits, embeddings=embeddings, hidden_states=out.hidden_states, attentions=out.attentions
        )


class Wav2Vec2ForPreTraining(_HeadModel):
    head = "pretraining"

    def __init__(self, config: Wav2Vec2Config):
        super().__init__(config)
        self.wav2vec2 = Wav2Vec2Model(config)
        self.dropout_features = nn.Dropout(config.feat_quantizer_dropout)
        self.quantizer = GumbelVectorQuantizer(config)
        self.project_hid = nn.Linear(config.hidden_size, config.proj_codevector_dim)
        self.project_q = nn.Linear(config.codevector_dim, config.proj_codevector_dim)
        init_weights(self.quantizer, config)
        # The two projections keep torch's default Linear init, as in the reference.

    def set_gumbel_temperature(self, temperature: float) -> None:
        self.quantizer.temperature = float(temperature)

    def forward(
        self,
        input_values,
        attention_mask=None,
        mask_time_indices=None,
        sampled_negative_indices=None,
        gumbel_noise=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> Wav2Vec2ForPreTrainingOutput:
        """mask_time_indices bool (batch, frames) from wav2vec2.spec.masking.pretraining_mask;
        sampled_negative_indices (batch, frames, num_negatives) from wav2vec2.spec.negatives, indices
        into the flattened (batch * frames) axis; gumbel_noise (batch, frames, groups, vars), optional."""
        out = self.wav2vec2(
            input_values, attention_mask, mask_time_indices,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        projected = linear(self.project_hid, out.last_hidden_state)  # (batch, frames, proj_codevector_dim)
        features = self.dropout_features(out.extract_features)
        batch, frames, _ = features.shape
        if mask_time_indices is not None:
            mask_time_indices = self._frame_input(mask_time_indices, "mask_time_indices", (batch, frames), torch.bool)
        if gumbel_noise is not None:
            shape = (batch, frames, self.quantizer.num_groups, self.quantizer.num_vars)
            gumbel_noise = self._frame_input(gumbel_noise, "gumbel_noise", shape, torch.float32)
        quantized, perplexity = self.quantizer(features, mask_time_indices, gumbel_noise)
        quantized = linear(self.project_q, quantized.to(self.project_q.weight.dtype))  # (batch, frames, proj_codevector_dim)

        loss = contrastive_loss = diversity_loss = None
        if sampled_negative_indices is not None:
            checks.negatives_need_mask(mask_time_indices)
            negatives_shape = (batch, frames, self.config.num_negatives)
            negative_indices = self._frame_input(
                sampled_negative_indices, "sampled_negative_indices", negatives_shape, torch.long
            )
            contrastive_loss = self.contrastive_loss(projected, quantized, negative_indices, mask_time_indices)
            num_codevectors = self.quantizer.num_groups * self.quantizer.num_vars
            diversity_loss = (num_codevectors - perplexity) / num_codevectors * mask_time_indices.sum()
            loss = contrastive_loss + self.config.diversity_loss_weight * diversity_loss
        return Wav2Vec2ForPreTrainingOutput(
            loss=loss, projected_states=projected, projected_quantized_states=quantized,
            codevector_perplexity=perplexity, hidden_states=out.hidden_states, attentions=out.attentions,
            contrastive_loss=contrastive_loss, diversity_loss=diversity_loss,
        )

    def contrastive_loss(self, projected, quantized, negative_indices, mask_time_indices) -> torch.Tensor:
        """Summed cross-entropy of picking the true quantized frame among itself and its negatives,
        by cosine similarity / temperature, over masked frames."""
        batch, frames, dim = quantized.shape
        negatives = quantized.reshape(-1, dim)[negative_indices.reshape(-1)]
        negatives = negatives.view(batch, frames, -1, dim).permute(2, 0, 1, 3)  # (negatives, batch, frames, dim)
        candidates = torch.cat([quantized[None], negatives], dim=0)  # (1 + negatives, batch, frames, dim)
        logits = torch.cosine_similarity(projected.float(), candidates.float(), dim=-1)
        logits = logits.type_as(candidates) / self.config.contrastive_logits_temperature
        # A negative identical to the positive (a low-usage codebook) would be a contradictory target.
        negative_is_positive = (quantized[None] == negatives).all(dim=-1)
        logits = torch.cat([logits[:1], logits[1:].masked_fill(negative_is_positive, float("-inf"))])
        logits = logits.permute(2, 1, 0).reshape(-1, logits.shape[0])  # (frames * batch, 1 + negatives)
        target = torch.where(mask_time_indices, 0, -100).transpose(0, 1).reshape(-1)  # class 0 = the positive
        return F.cross_entropy(logits.float(), target, reduction="sum")

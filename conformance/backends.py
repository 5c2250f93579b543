"""One small adapter per framework: build a head from canonical weights, run the case's inputs, and
return every stage's output, the loss and the loss's gradient w.r.t. the waveform as NumPy arrays.

Heads without a loss (the bare model) are scored with a probe loss, mean(last_hidden_state ** 2), so
their backward pass is compared too: the gradient w.r.t. the waveform (``grad.input_values``) and
w.r.t. every weight, under its canonical name and layout (``grad.<name>``). Everything runs in inference mode (no dropout); SpecAugment and
pretraining masks come from the case's inputs, identical in every backend.
"""
from __future__ import annotations

import importlib.util
import inspect

import numpy as np

from wav2vec2.spec.names import HEAD_CLASSES, from_flax_tree, normalize_key, relayout


OUTPUT_STAGES = (
    "extract_features", "last_hidden_state", "logits", "embeddings", "projected_states",
    "projected_quantized_states", "codevector_perplexity", "contrastive_loss", "diversity_loss",
)


def collect_stages(out, to_numpy) -> dict:
    """The outputs worth comparing, in forward order, as float64 NumPy arrays."""
    stages = {}
    if getattr(out, "extract_features", None) is not None:
        stages["extract_features"] = to_numpy(out.extract_features)
    for i, h in enumerate(getattr(out, "hidden_states", None) or ()):
        stages[f"hidden_states.{i}"] = to_numpy(h)
    for name in OUTPUT_STAGES[1:]:
        value = getattr(out, name, None)
        if value is not None:
            stages[name] = to_numpy(value)
    return stages


class Backend:
    """What the runner needs of a framework."""

    name = ""
    module = ""  # the framework's import name

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec(cls.module) is not None

    def devices(self) -> list:
        return ["cpu"]

    def dtypes(self, device: str) -> list:
        return ["float32", "bfloat16"]

    def run(self, case, state, inputs, device, dtype) -> dict:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------- torch
class TorchBackend(Backend):
    name = "torch"
    module = "torch"

    def devices(self):
        import torch

        return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]

    def build(self, case, state):
        from wav2vec2.backends import torch as backend

        model = getattr(backend, HEAD_CLASSES[case.head])(case.config)
        model.load_canonical_state_dict(state)
        return model

    def run(self, case, state, inputs, device, dtype):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        model = self.build(case, state).to(device=device, dtype=torch_dtype).eval()
        x = torch.tensor(inputs["input_values"], device=device, dtype=torch_dtype, requires_grad=True)
        kwargs = {k: torch.as_tensor(v, device=device) for k, v in inputs.items() if k != "input_values"}
        if "labels" in kwargs and kwargs["labels"].is_floating_point():
            kwargs["labels"] = kwargs["labels"].to(torch_dtype)
        out = model(x, output_hidden_states=True, **kwargs)
        loss = out.loss if getattr(out, "loss", None) is not None else out.last_hidden_state.float().pow(2).mean()
        loss.backward()

        def to_numpy(t):
            return t.detach().float().cpu().numpy().astype(np.float64)

        stages = collect_stages(out, to_numpy)
        stages["loss"] = to_numpy(loss)
        stages["grad.input_values"] = to_numpy(x.grad)
        for name, parameter in model.named_parameters():  # a weight the loss never reached has no grad
            grad = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
            stages[f"grad.{normalize_key(name)}"] = to_numpy(grad)
        return stages


class ReferenceBackend(TorchBackend):
    """transformers 4.57.6's PyTorch classes, when installed: the oracle the backends are held to."""

    name = "reference"
    module = "transformers"

    @classmethod
    def available(cls):
        return Backend.available.__func__(cls) and importlib.util.find_spec("torch") is not None

    def build(self, case, state):
        import torch
        import transformers

        config = transformers.Wav2Vec2Config(**case.config.to_dict())
        model = getattr(transformers, HEAD_CLASSES[case.head])(config)
        renamed = {}
        for key, value in state.items():  # PyTorch-2 spelling of the positional conv weight norm
            key = key.replace("conv.weight_g", "conv.parametrizations.weight.original0")
            key = key.replace("conv.weight_v", "conv.parametrizations.weight.original1")
            renamed[key] = torch.from_numpy(np.array(value))
        own = model.state_dict()
        if "conv.parametrizations.weight.original0" not in " ".join(own):
            renamed = {k.replace("parametrizations.weight.original0", "weight_g")
                       .replace("parametrizations.weight.original1", "weight_v"): v for k, v in renamed.items()}
        model.load_state_dict(renamed, strict=True)
        return model


# ------------------------------------------------------------------------------------ tensorflow
class TensorFlowBackend(Backend):
    name = "tensorflow"
    module = "tensorflow"

    def devices(self):
        from wav2vec2.backends import import_tensorflow

        tf = import_tensorflow()
        gpus = [f"gpu:{i}" for i in range(len(tf.config.list_physical_devices("GPU")))]
        tpus = [f"tpu:{i}" for i in range(len(tf.config.list_logical_devices("TPU")))]
        return ["cpu"] + gpus + tpus

    def run(self, case, state, inputs, device, dtype):
        import keras
        import tensorflow as tf

        from wav2vec2.backends import tensorflow as backend

        tf.config.experimental.enable_tensor_float_32_execution(False)
        # Keras runs bf16 as a dtype policy: bf16 compute, float32 variables, losses in float32.
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
        try:
            with tf.device(device):
                model = getattr(backend, HEAD_CLASSES[case.head])(case.config)
                model.load_canonical_state_dict(state)
                x = tf.constant(inputs["input_values"])
                kwargs = {k: tf.constant(v) for k, v in inputs.items() if k != "input_values"}
                weights = model.canonical_variables()  # canonical name -> (variable, axes reversed)
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    out = model(x, training=False, output_hidden_states=True, **kwargs)
                    loss = out.loss if getattr(out, "loss", None) is not None else tf.reduce_mean(
                        tf.cast(out.last_hidden_state, tf.float32) ** 2)
                grad, *weight_grads = tape.gradient(loss, [x, *(variable for variable, _ in weights.values())])
        finally:
            keras.config.set_dtype_policy(previous)

        def to_numpy(t):
            return np.asarray(tf.cast(t, tf.float32)).astype(np.float64)

        stages = collect_stages(out, to_numpy)
        stages["loss"] = to_numpy(loss)
        stages["grad.input_values"] = to_numpy(grad)
        for (name, (variable, reversed_axes)), weight_grad in zip(weights.items(), weight_grads):
            value = to_numpy(weight_grad) if weight_grad is not None else np.zeros(variable.shape)
            stages[f"grad.{name}"] = relayout(value, reversed_axes)
        return stages


# ------------------------------------------------------------------------------------------ flax
class FlaxBackend(Backend):
    name = "flax"
    module = "flax"

    def devices(self):
        import jax

        accelerators = [d for d in jax.devices() if d.platform != "cpu"]  # the default backend's devices
        return ["cpu"] + [f"{d.platform}:{i}" for i, d in enumerate(accelerators)]

    def run(self, case, state, inputs, device, dtype):
        import jax
        import jax.numpy as jnp

        from wav2vec2.backends import flax as backend

        jax_dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
        platform, _, index = device.partition(":")
        target = jax.devices(platform)[int(index or 0)]
        with jax.default_matmul_precision("highest"), jax.default_device(target):
            model = getattr(backend, HEAD_CLASSES[case.head])(case.config, dtype=jax_dtype)
            model.load_canonical_state_dict(state)
            kwargs = {k: jnp.asarray(v) for k, v in inputs.items() if k != "input_values"}

            # Differentiate the pure linen module (model.module) w.r.t. the waveform.
            accepted = inspect.signature(model.module.__call__).parameters
            kwargs = {k: v for k, v in kwargs.items() if k in accepted}

            def loss_and_stages(params, x):
                out = model.module.apply({"params": params}, x, deterministic=True,
                                         output_hidden_states=True, **kwargs)
                loss = out.loss if getattr(out, "loss", None) is not None else jnp.mean(
                    out.last_hidden_state.astype(jnp.float32) ** 2)
                return loss, collect_stages(out, lambda t: t.astype(jnp.float32))

            x = jnp.asarray(inputs["input_values"], dtype=jax_dtype)
            (loss, stages), (weight_grads, grad) = jax.value_and_grad(loss_and_stages, argnums=(0, 1), has_aux=True)(
                model.params, x)

        def to_numpy(t):
            return np.asarray(jnp.asarray(t, jnp.float32)).astype(np.float64)

        stages = {k: to_numpy(v) for k, v in stages.items()}
        stages["loss"] = to_numpy(loss)
        stages["grad.input_values"] = to_numpy(grad)
        for name, value in from_flax_tree(weight_grads).items():  # layout changes are linear: they map grads too
            stages[f"grad.{name}"] = value.astype(np.float64)
        return stages


ALL_BACKENDS = (ReferenceBackend, TorchBackend, TensorFlowBackend, FlaxBackend)

"""JAX/Flax backend: importing it imports JAX and Flax.

Each public class holds a pure linen module (``.module``) and its float32 parameter pytree
(``.params``); see ``models.py``. The linen blocks are in ``modeling.py``.

    model = Wav2Vec2ForCTC.from_pretrained("facebook/wav2vec2-base-960h")   # any checkpoint format
    logits = model(audio, attention_mask).logits                           # jit-compiled on first call

    # The public classes also work inside transforms, as written:
    jax.jit(lambda x: model(x).logits)(audio)
    jax.grad(lambda p: model(audio, labels=labels, params=p).loss)(model.params)
    jax.vmap(lambda one: model(one).logits[0])(audio)                    # one waveform per call

    # Functional use (jax.jit / jax.grad / sharding on the parameters):
    out = model.module.apply({"params": model.params}, audio, attention_mask, labels,
                             deterministic=False, rngs={"dropout": k1, "layerdrop": k2})
    loss = out.loss

Random streams: "dropout", "layerdrop" and (pretraining) "gumbel", used only when
deterministic=False. SpecAugment masks and negatives are inputs (wav2vec2.spec.masking/negatives).
"""
from .modeling import (
    HeadOutput,
    Wav2Vec2BaseModelOutput,
    Wav2Vec2ForPreTrainingOutput,
    XVectorOutput,
)
from .models import (
    Wav2Vec2ForAudioFrameClassification,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2ForXVector,
    Wav2Vec2Model,
    Wav2Vec2PreTrainedModel,
)

__all__ = [
    "Wav2Vec2Model",
    "Wav2Vec2ForCTC",
    "Wav2Vec2ForSequenceClassification",
    "Wav2Vec2ForAudioFrameClassification",
    "Wav2Vec2ForXVector",
    "Wav2Vec2ForPreTraining",
    "Wav2Vec2PreTrainedModel",
    "Wav2Vec2BaseModelOutput",
    "HeadOutput",
    "XVectorOutput",
    "Wav2Vec2ForPreTrainingOutput",
]

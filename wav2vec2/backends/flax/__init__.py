"""JAX/Flax backend: importing it imports JAX and Flax.

Each public class holds a pure linen module (``.module``) and its float32 parameter pytree
(``.params``); see ``models.py``. The linen blocks are in ``modeling.py``.
"""
from .modeling import (
    CausalLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
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
    "CausalLMOutput",
    "SequenceClassifierOutput",
    "TokenClassifierOutput",
    "XVectorOutput",
    "Wav2Vec2ForPreTrainingOutput",
]

"""wav2vec 2.0 in PyTorch. Importing this module imports torch."""
from .modeling import (
    HeadOutput,
    Wav2Vec2BaseModelOutput,
    Wav2Vec2ForAudioFrameClassification,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2ForPreTrainingOutput,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2ForXVector,
    Wav2Vec2Model,
    Wav2Vec2PreTrainedModel,
    XVectorOutput,
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

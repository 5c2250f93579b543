"""wav2vec 2.0 in Keras 3 on the TensorFlow backend. Importing this module imports TensorFlow and Keras."""
from .modeling import (
    Wav2Vec2ForAudioFrameClassification,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2ForXVector,
    Wav2Vec2Model,
    ctc_loss,
    export_ctc_saved_model,
)

__all__ = [
    "Wav2Vec2Model",
    "Wav2Vec2ForCTC",
    "Wav2Vec2ForSequenceClassification",
    "Wav2Vec2ForAudioFrameClassification",
    "Wav2Vec2ForXVector",
    "Wav2Vec2ForPreTraining",
    "ctc_loss",
    "export_ctc_saved_model",
]

"""wav2vec 2.0 in Keras 3 on the TensorFlow backend. Importing this module imports TensorFlow and Keras.

    model = Wav2Vec2ForCTC.from_pretrained("path/or/repo")          # any weight format wav2vec2.io reads
    logits = model(waveforms, attention_mask=mask).logits          # (batch, frames, vocab)
    loss = model(waveforms, attention_mask=mask, labels=labels, training=True).loss
    model.compile(optimizer="adam"); model.fit({"input_values": x, "attention_mask": m}, labels)
    model.save_pretrained("out")                                     # config.json + tf_model.h5
    export_ctc_saved_model(model, "exported")                        # SavedModel, signature "serve"

Models are plain Keras models: ``tf.function(jit_compile=True)`` compiles forward and backward of every
head on CPU. In training, SpecAugment masks come from wav2vec2.spec.masking (pass ``mask_time_indices``
to compile with XLA; otherwise they are drawn with the NumPy Generator ``spec_augment_rng``, by default
one seeded from the model's Keras seed generator). ``gradient_checkpointing_enable()`` recomputes the conv
and encoder layers in the backward pass, with the dropout and LayerDrop draws they ran with.
"""
from .. import import_tensorflow

import_tensorflow()  # before Keras: the notes TensorFlow's native libraries print on loading, filtered

from .modeling import (  # noqa: E402
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
    "Wav2Vec2PreTrainedModel",
    "Wav2Vec2BaseModelOutput",
    "HeadOutput",
    "XVectorOutput",
    "Wav2Vec2ForPreTrainingOutput",
    "ctc_loss",
    "export_ctc_saved_model",
]

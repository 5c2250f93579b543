"""From a whole input's logits to its record: greedy CTC (``spec.ctc``) or a KenLM beam search."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..spec import ctc as ctc_spec


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class Decoder:
    """Turns (frames, vocab) logits into ``{"file", "text", "words": [{"word", "start", "end"}]}``.

    lm_processor: None for greedy CTC, else a Wav2Vec2ProcessorWithLM whose beam search runs with
    ``beam_options`` on the log-probabilities (pyctcdecode prunes tokens by log-probability).
    """

    def __init__(self, ctc, lm_processor=None, beam_options: Optional[dict] = None):
        self.ctc = ctc
        self.lm_processor = lm_processor
        self.beam_options = dict(beam_options or {})

    @classmethod
    def from_options(
        cls, ctc, lm: Optional[str] = None, beam_width: Optional[int] = None, alpha: Optional[float] = None,
        beta: Optional[float] = None, hotwords: Optional[Sequence[str]] = None, hotword_weight: Optional[float] = None,
    ) -> "Decoder":
        """Greedy without ``lm``; with a KenLM file (.arpa or binary), beam search tuned by the rest."""
        if lm is None:
            return cls(ctc)
        from ..processing_with_lm import Wav2Vec2ProcessorWithLM

        processor = Wav2Vec2ProcessorWithLM.from_kenlm(ctc.feature_extractor, ctc.tokenizer, lm, alpha=alpha, beta=beta)
        options = dict(beam_width=beam_width, hotwords=hotwords, hotword_weight=hotword_weight)
        return cls(ctc, processor, {k: v for k, v in options.items() if v is not None})

    def text_and_offsets(self, logits: np.ndarray):
        """Text and word offsets (in frames) of one input's (frames, vocab) logits."""
        if self.lm_processor is None:
            out = self.ctc.tokenizer.decode(ctc_spec.greedy_ids(logits), output_word_offsets=True)
        else:
            out = self.lm_processor.decode(log_softmax(logits), output_word_offsets=True, **self.beam_options)
        return out.text, out.word_offsets

    def record(self, name: str, logits: np.ndarray, num_samples: int) -> dict:
        text, offsets = self.text_and_offsets(logits)
        seconds_per_frame = self.ctc.seconds_per_frame
        duration = num_samples / self.ctc.sampling_rate  # the last frame's end may reach past the audio

        def seconds(offset):
            return round(min(offset * seconds_per_frame, duration), 6)

        words = [{"word": w["word"], "start": seconds(w["start_offset"]), "end": seconds(w["end_offset"])} for w in offsets]
        return {"file": name, "text": text, "words": words}

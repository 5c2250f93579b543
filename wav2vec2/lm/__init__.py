"""Beam-search decoding of CTC logits with a KenLM language model (the reference decoder's semantics)."""
from .alphabet import build_alphabet
from .decoder import Beam, BeamSearchDecoder, log_probabilities
from .language_model import Hotwords, LanguageModel

__all__ = ["Beam", "BeamSearchDecoder", "Hotwords", "LanguageModel", "build_alphabet", "log_probabilities"]

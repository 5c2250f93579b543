"""Beam-search decoding of CTC logits with a KenLM language model, with the reference decoder's
(pyctcdecode's) semantics and files: the same logits and LM give the same beams."""
from .alphabet import build_alphabet
from .decoder import Beam, BeamSearchDecoder, log_probabilities
from .files import load_decoder, save_decoder
from .language_model import Hotwords, LanguageModel

__all__ = [
    "Beam", "BeamSearchDecoder", "Hotwords", "LanguageModel", "build_alphabet", "load_decoder",
    "log_probabilities", "save_decoder",
]

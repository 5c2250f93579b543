"""Wav2Vec2ProcessorWithLM: a Wav2Vec2Processor whose decoding is a beam search with a KenLM model.

The beam search is pyctcdecode's (``BeamSearchDecoderCTC``), as in the reference, and the files are
the reference's: next to the processor's own, ``alphabet.json`` and a ``language_model/`` directory
holding ``attrs.json``, the KenLM model and ``unigrams.txt``. Directories written by either library
load in the other. Framework-free: logits come in as NumPy arrays (or anything ``np.asarray`` reads).

Batches decode in the calling process unless a ``multiprocessing`` pool is passed
(``batch_decode(logits, pool=pool)``) or ``num_processes`` asks for one; that pool is then made
once, kept by the processor and reused (``close()`` ends it), never made anew per call.
"""
from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np

from .feature_extraction import Wav2Vec2FeatureExtractor
from .processing import Wav2Vec2Processor
from .tokenization import Wav2Vec2CTCTokenizer

# The padding marker of batch_decode's input: frames whose every logit is this are not decoded.
PADDING_LOGIT = -100.0


@dataclass
class Wav2Vec2DecoderWithLMOutput:
    """Beam search results. For ``batch_decode`` each field is a list over the batch, and with
    ``n_best > 1`` each entry is itself a list of the best hypotheses, best first.

    ``logit_score``: the acoustic log-score of a hypothesis; ``lm_score``: its total score with the
    language model. ``word_offsets``: ``[{"word", "start_offset", "end_offset"}]`` in frames.
    """

    text: Union[str, List]
    logit_score: Union[float, List, None] = None
    lm_score: Union[float, List, None] = None
    word_offsets: Optional[list] = None

    def __getitem__(self, key):
        return getattr(self, key)


def decoder_labels(tokenizer: Wav2Vec2CTCTokenizer, lowercase: bool = False) -> List[str]:
    """The tokenizer's vocabulary ordered by id: the label list a CTC beam search decoder is built on."""
    vocab = tokenizer.get_vocab()
    labels = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    if len(labels) != max(vocab.values()) + 1:
        raise ValueError("the tokenizer's ids are not contiguous from 0; the decoder needs one label per logit")
    return [label.lower() for label in labels] if lowercase else labels


def missing_alphabet_tokens(decoder, tokenizer: Wav2Vec2CTCTokenizer) -> set:
    """Tokens of the tokenizer that the decoder's alphabet lacks (after pyctcdecode's renaming of
    the blank to "", the word delimiter to " " and the unknown token to "⁇")."""
    from pyctcdecode.alphabet import BLANK_TOKEN_PTN, UNK_TOKEN, UNK_TOKEN_PTN

    def as_label(token):
        if BLANK_TOKEN_PTN.match(token):
            return ""
        if token == tokenizer.word_delimiter_token:
            return " "
        if UNK_TOKEN_PTN.match(token):
            return UNK_TOKEN
        return token

    return {as_label(token) for token in tokenizer.get_vocab()} - set(decoder._alphabet.labels)


def _check_decoder(decoder, tokenizer) -> None:
    missing = missing_alphabet_tokens(decoder, tokenizer)
    if missing:
        raise ValueError(
            f"the tokens {sorted(missing)} are in the tokenizer's vocabulary but not in the decoder's alphabet; "
            f"build the decoder from decoder_labels(tokenizer)"
        )


class Wav2Vec2ProcessorWithLM(Wav2Vec2Processor):
    """Feature extractor + tokenizer + beam search decoder (pyctcdecode ``BeamSearchDecoderCTC``)."""

    def __init__(self, feature_extractor: Wav2Vec2FeatureExtractor, tokenizer: Wav2Vec2CTCTokenizer, decoder):
        super().__init__(feature_extractor, tokenizer)
        _check_decoder(decoder, tokenizer)
        self.decoder = decoder
        self._pool = None
        self._pool_size = 0

    # -------------------------------------------------------------------- building and files
    @classmethod
    def from_kenlm(
        cls,
        feature_extractor: Wav2Vec2FeatureExtractor,
        tokenizer: Wav2Vec2CTCTokenizer,
        kenlm_model_path,
        unigrams: Optional[Sequence[str]] = None,
        alpha: Optional[float] = None,
        beta: Optional[float] = None,
        lowercase_labels: bool = False,
    ) -> "Wav2Vec2ProcessorWithLM":
        """Build the decoder from a KenLM model file (.arpa or binary) and the tokenizer's vocabulary.

        unigrams: the LM's words (read from an .arpa file when not given). lowercase_labels: use
        lowercase labels, for a lowercase LM and an uppercase vocabulary.
        """
        from pyctcdecode import build_ctcdecoder

        path = os.fspath(kenlm_model_path)
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such KenLM model file")
        labels = decoder_labels(tokenizer, lowercase_labels)
        weights = {k: float(v) for k, v in dict(alpha=alpha, beta=beta).items() if v is not None}
        try:
            decoder = build_ctcdecoder(labels, kenlm_model_path=path, unigrams=unigrams, **weights)
        except (OSError, RuntimeError) as e:  # kenlm reports a bad file as OSError / RuntimeError
            raise ValueError(f"{path}: cannot load the KenLM model ({e})") from None
        return cls(feature_extractor, tokenizer, decoder)

    @classmethod
    def from_pretrained(cls, path_or_repo_id, **kwargs) -> "Wav2Vec2ProcessorWithLM":
        """Load the processor files and ``alphabet.json`` + ``language_model/`` from a directory or hub repo.

        alpha, beta, unk_score_offset and score_boundary, when given, override the saved LM attributes.
        """
        from pyctcdecode import BeamSearchDecoderCTC

        lm_overrides = {k: kwargs.pop(k) for k in ("alpha", "beta", "unk_score_offset", "score_boundary") if k in kwargs}
        unigram_encoding = kwargs.pop("unigram_encoding", "utf-8")
        processor = Wav2Vec2Processor.from_pretrained(path_or_repo_id, **kwargs)
        directory = os.fspath(path_or_repo_id)
        if not os.path.isdir(directory):
            directory = _download_decoder_files(directory, {k: v for k, v in kwargs.items() if k in _SNAPSHOT_KWARGS})
        try:
            decoder = BeamSearchDecoderCTC.load_from_dir(directory, unigram_encoding)
        except ValueError as e:
            raise ValueError(f"{path_or_repo_id}: no language model decoder files ({e})") from None
        language_model = decoder.model_container[decoder._model_key]
        for name, value in lm_overrides.items():
            setattr(language_model, name, value)
        return cls(processor.feature_extractor, processor.tokenizer, decoder)

    def save_pretrained(self, save_directory) -> List[str]:
        """Write the processor's files, then ``alphabet.json`` and ``language_model/``."""
        written = super().save_pretrained(save_directory)
        self.decoder.save_to_dir(os.fspath(save_directory))
        return written

    @property
    def language_model(self):
        """The decoder's LanguageModel (its alpha, beta, unk_score_offset, score_boundary, ...)."""
        return self.decoder.model_container[self.decoder._model_key]

    # -------------------------------------------------------------------- pools
    def _pool_for(self, num_processes: Optional[int]):
        """The kept pool of ``num_processes`` workers, made on first use (None: decode in-process)."""
        if not num_processes or num_processes < 2:
            return None
        if multiprocessing.get_start_method() != "fork":
            # pyctcdecode's workers find the language model by inheriting it: only fork works.
            return None
        if self._pool is None or self._pool_size != num_processes:
            self.close()
            self._pool = multiprocessing.get_context("fork").Pool(num_processes)
            self._pool_size = num_processes
        return self._pool

    def close(self) -> None:
        """End the pool this processor made for ``num_processes`` (a user's pool is theirs to close)."""
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool, self._pool_size = None, 0

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to clean up
            pass

    # -------------------------------------------------------------------- decoding
    def _set_lm_weights(self, alpha, beta, unk_score_offset, lm_score_boundary) -> None:
        """Change the LM weights that are given; like the reference, the change stays for later calls.

        A pool's workers hold a copy of the language model made when the pool started, so the
        kept pool is ended when a weight changes (a user's pool must be made after the change).
        """
        weights = dict(alpha=alpha, beta=beta, unk_score_offset=unk_score_offset)
        weights = {k: float(v) for k, v in weights.items() if v is not None}
        if lm_score_boundary is not None:
            weights["lm_score_boundary"] = bool(lm_score_boundary)
        if not weights:
            return
        before = self._lm_weights()
        self.decoder.reset_params(**weights)
        if self._lm_weights() != before:
            self.close()

    def _lm_weights(self):
        lm = self.decoder.model_container.get(self.decoder._model_key)
        return None if lm is None else tuple(getattr(lm, k, None) for k in ("alpha", "beta", "unk_score_offset", "score_boundary"))

    @staticmethod
    def _search_options(beam_width, beam_prune_logp, token_min_logp, hotwords, hotword_weight) -> dict:
        from pyctcdecode.constants import (
            DEFAULT_BEAM_WIDTH, DEFAULT_HOTWORD_WEIGHT, DEFAULT_MIN_TOKEN_LOGP, DEFAULT_PRUNE_LOGP,
        )

        return dict(
            beam_width=DEFAULT_BEAM_WIDTH if beam_width is None else int(beam_width),
            beam_prune_logp=DEFAULT_PRUNE_LOGP if beam_prune_logp is None else float(beam_prune_logp),
            token_min_logp=DEFAULT_MIN_TOKEN_LOGP if token_min_logp is None else float(token_min_logp),
            hotwords=list(hotwords) if hotwords is not None else None,
            hotword_weight=DEFAULT_HOTWORD_WEIGHT if hotword_weight is None else float(hotword_weight),
        )

    def batch_decode(
        self,
        logits,
        pool=None,
        num_processes: Optional[int] = None,
        beam_width: Optional[int] = None,
        beam_prune_logp: Optional[float] = None,
        token_min_logp: Optional[float] = None,
        hotwords: Optional[Sequence[str]] = None,
        hotword_weight: Optional[float] = None,
        alpha: Optional[float] = None,
        beta: Optional[float] = None,
        unk_score_offset: Optional[float] = None,
        lm_score_boundary: Optional[bool] = None,
        output_word_offsets: bool = False,
        n_best: int = 1,
    ) -> Wav2Vec2DecoderWithLMOutput:
        """Beam-search a batch of logits (batch, frames, vocab) or a list of (frames, vocab) arrays.

        Frames whose logits are all -100 (the padding marker) are skipped. ``pool``: a user's
        fork-context ``multiprocessing.Pool`` made after this processor; else ``num_processes``
        > 1 uses a pool kept by the processor; else the batch decodes in this process.
        Unset options take pyctcdecode's defaults; alpha, beta, unk_score_offset and
        lm_score_boundary change the language model's weights for this and later calls.
        """
        if n_best < 1:
            raise ValueError(f"n_best must be at least 1, got {n_best}")
        utterances = [self._as_logits(row, f"logits[{i}]") for i, row in enumerate(logits)]
        # (frames, vocab) each, padding frames removed.
        utterances = [u[~(u == PADDING_LOGIT).all(axis=-1)] for u in utterances]
        self._set_lm_weights(alpha, beta, unk_score_offset, lm_score_boundary)
        options = self._search_options(beam_width, beam_prune_logp, token_min_logp, hotwords, hotword_weight)
        pool = pool if pool is not None else self._pool_for(num_processes)
        # Each result: the beams of one utterance, best first, as (text, word frames, logit score, lm score).
        results = self.decoder.decode_beams_batch(pool=pool, logits_list=utterances, **options)
        hypotheses = [[_hypothesis(text, frames, logit, lm) for text, frames, logit, lm in beams] for beams in results]
        return _collect(hypotheses, n_best, output_word_offsets, batched=True)

    def decode(
        self,
        logits,
        beam_width: Optional[int] = None,
        beam_prune_logp: Optional[float] = None,
        token_min_logp: Optional[float] = None,
        hotwords: Optional[Sequence[str]] = None,
        hotword_weight: Optional[float] = None,
        alpha: Optional[float] = None,
        beta: Optional[float] = None,
        unk_score_offset: Optional[float] = None,
        lm_score_boundary: Optional[bool] = None,
        output_word_offsets: bool = False,
        n_best: int = 1,
    ) -> Wav2Vec2DecoderWithLMOutput:
        """Beam-search one utterance's logits (frames, vocab); options as in ``batch_decode``."""
        if n_best < 1:
            raise ValueError(f"n_best must be at least 1, got {n_best}")
        logits = self._as_logits(logits, "logits")
        self._set_lm_weights(alpha, beta, unk_score_offset, lm_score_boundary)
        options = self._search_options(beam_width, beam_prune_logp, token_min_logp, hotwords, hotword_weight)
        # Beams best first, as (text, LM state, word frames, logit score, lm score).
        beams = self.decoder.decode_beams(logits, **options)
        hypotheses = [_hypothesis(text, frames, logit, lm) for text, _, frames, logit, lm in beams]
        return _collect([hypotheses], n_best, output_word_offsets, batched=False)

    def _as_logits(self, logits, name: str) -> np.ndarray:
        array = np.asarray(logits, dtype=np.float32)
        labels = len(self.decoder._idx2vocab)
        if array.ndim != 2 or array.shape[-1] != labels:
            raise ValueError(f"{name} must have shape (frames, {labels}) for this decoder, got {array.shape}")
        return array


def _hypothesis(text, word_frames, logit_score, lm_score) -> dict:
    words = [{"word": word, "start_offset": start, "end_offset": end} for word, (start, end) in word_frames]
    return {"text": text, "word_offsets": words, "logit_score": logit_score, "lm_score": lm_score}


def _collect(hypotheses: List[List[dict]], n_best: int, output_word_offsets: bool, batched: bool):
    """Arrange per-utterance hypothesis lists into one output: fields per utterance, lists when n_best > 1."""

    def field(name):
        per_utterance = [[h[name] for h in hyps[:n_best]] for hyps in hypotheses]
        per_utterance = [values[0] for values in per_utterance] if n_best == 1 else per_utterance
        return per_utterance if batched else per_utterance[0]

    return Wav2Vec2DecoderWithLMOutput(
        text=field("text"),
        logit_score=field("logit_score"),
        lm_score=field("lm_score"),
        word_offsets=field("word_offsets") if output_word_offsets else None,
    )


_SNAPSHOT_KWARGS = ("revision", "cache_dir", "local_files_only", "token")


def _download_decoder_files(repo_id: str, hub_kwargs: dict) -> str:
    """Fetch ``alphabet.json`` and ``language_model/*`` of a hub repo; returns the local snapshot."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, allow_patterns=["alphabet.json", "language_model/*"], **hub_kwargs)
    except Exception as e:  # offline, unknown repo, ...: say what was being fetched
        raise ValueError(f"{repo_id}: cannot fetch the language model files ({e})") from None


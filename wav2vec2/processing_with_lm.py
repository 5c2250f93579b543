"""Wav2Vec2ProcessorWithLM: a Wav2Vec2Processor whose decoding is a beam search with a KenLM model.

The beam search is ``wav2vec2.lm``'s, with the semantics of the reference's (pyctcdecode's
``BeamSearchDecoderCTC``): the same logits and language model give the same texts, word offsets
and scores. The files are the reference's: next to the processor's own, ``alphabet.json`` and a
``language_model/`` directory holding ``attrs.json``, ``unigrams.txt`` and the KenLM model.
Directories written by either library load in the other. Framework-free: logits come in as NumPy
arrays (or anything ``np.asarray`` reads).

``batch_decode`` decodes the batch in the calling process, all utterances together, unless a pool
is passed (a fork-context ``multiprocessing`` pool, a thread pool or a ``concurrent.futures``
executor) or ``num_processes`` asks for one; that pool is then made once, kept by the processor and
reused (``close()`` ends it), never made anew per call.
"""
from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np

from .feature_extraction import Wav2Vec2FeatureExtractor
from .lm import BeamSearchDecoder, LanguageModel, build_alphabet, load_decoder, save_decoder
from .lm import decoder as lm_decoder
from .lm.alphabet import alphabet_label
from .processing import Wav2Vec2Processor
from .tokenization import Wav2Vec2CTCTokenizer

# The padding marker of batch_decode's input: frames holding it are not decoded (as in the reference).
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


def missing_alphabet_tokens(decoder: BeamSearchDecoder, tokenizer: Wav2Vec2CTCTokenizer) -> set:
    """Tokens of the tokenizer that the decoder's alphabet lacks (after the alphabet's renaming of
    the blank to "", the word delimiter to " " and the unknown token to "⁇")."""
    labels = {alphabet_label(token, tokenizer.word_delimiter_token) for token in tokenizer.get_vocab()}
    return labels - set(decoder.labels)


def _check_decoder(decoder, tokenizer) -> None:
    if not isinstance(decoder, BeamSearchDecoder):
        raise ValueError(
            f"decoder must be a wav2vec2.lm.BeamSearchDecoder, got {type(decoder).__name__}; "
            f"build one with Wav2Vec2ProcessorWithLM.from_kenlm"
        )
    missing = missing_alphabet_tokens(decoder, tokenizer)
    if missing:
        raise ValueError(
            f"the tokens {sorted(missing)} are in the tokenizer's vocabulary but not in the decoder's alphabet; "
            f"build the decoder from decoder_labels(tokenizer)"
        )


class Wav2Vec2ProcessorWithLM(Wav2Vec2Processor):
    """Feature extractor + tokenizer + beam search decoder (``wav2vec2.lm.BeamSearchDecoder``)."""

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
        unk_score_offset: Optional[float] = None,
        lm_score_boundary: Optional[bool] = None,
        lowercase_labels: bool = False,
    ) -> "Wav2Vec2ProcessorWithLM":
        """Build the decoder from a KenLM model file (.arpa or binary) and the tokenizer's vocabulary.

        unigrams: the LM's words (read from an .arpa file when not given; a binary file without
        them scores every word in progress as unknown). lowercase_labels: use lowercase labels, for
        a lowercase LM and an uppercase vocabulary. Unset weights take the reference's defaults.
        """
        labels = build_alphabet(decoder_labels(tokenizer, lowercase_labels))
        language_model = LanguageModel.from_file(kenlm_model_path, unigrams)
        language_model.set_attributes(alpha=alpha, beta=beta, unk_score_offset=unk_score_offset,
                                      score_boundary=lm_score_boundary)
        return cls(feature_extractor, tokenizer, BeamSearchDecoder(labels, language_model))

    @classmethod
    def from_pretrained(cls, path_or_repo_id, **kwargs) -> "Wav2Vec2ProcessorWithLM":
        """Load the processor files and ``alphabet.json`` + ``language_model/`` from a directory or hub repo.

        alpha, beta, unk_score_offset and score_boundary, when given, override the saved LM
        attributes; unigram_encoding is that of ``unigrams.txt`` (utf-8).
        """
        lm_overrides = {k: kwargs.pop(k) for k in LanguageModel.ATTRIBUTES if k in kwargs}
        unigram_encoding = kwargs.pop("unigram_encoding", "utf-8")
        processor = Wav2Vec2Processor.from_pretrained(path_or_repo_id, **kwargs)
        directory = os.fspath(path_or_repo_id)
        if not os.path.isdir(directory):
            directory = _download_decoder_files(directory, {k: v for k, v in kwargs.items() if k in _SNAPSHOT_KWARGS})
        try:
            decoder = load_decoder(directory, unigram_encoding)
        except ValueError as e:
            raise ValueError(f"{path_or_repo_id}: no language model decoder files ({e})") from None
        decoder.language_model.set_attributes(**lm_overrides)
        return cls(processor.feature_extractor, processor.tokenizer, decoder)

    def save_pretrained(self, save_directory) -> List[str]:
        """Write the processor's files, then ``alphabet.json`` and ``language_model/``."""
        written = super().save_pretrained(save_directory)
        return written + save_decoder(self.decoder, save_directory)

    @property
    def language_model(self) -> LanguageModel:
        """The decoder's LanguageModel (its alpha, beta, unk_score_offset, score_boundary, ...)."""
        return self.decoder.language_model

    # -------------------------------------------------------------------- pools
    def _pool_for(self, num_processes: Optional[int]):
        """The kept pool of ``num_processes`` workers, made on first use (None: decode in-process)."""
        if not num_processes or num_processes < 2:
            return None
        if multiprocessing.get_start_method() != "fork":
            # Workers find the language model by inheriting it: only forked ones can.
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
        """Change the LM weights that are given; like the reference, the change stays for later calls."""
        self.language_model.set_attributes(
            alpha=alpha, beta=beta, unk_score_offset=unk_score_offset, score_boundary=lm_score_boundary,
        )

    @staticmethod
    def _search_options(beam_width, beam_prune_logp, token_min_logp, prune_history, hotwords, hotword_weight) -> dict:
        defaults = dict(
            beam_width=lm_decoder.DEFAULT_BEAM_WIDTH, beam_prune_logp=lm_decoder.DEFAULT_BEAM_PRUNE_LOGP,
            token_min_logp=lm_decoder.DEFAULT_TOKEN_MIN_LOGP, prune_history=lm_decoder.DEFAULT_PRUNE_HISTORY,
            hotword_weight=lm_decoder.DEFAULT_HOTWORD_WEIGHT,
        )
        given = dict(beam_width=beam_width, beam_prune_logp=beam_prune_logp, token_min_logp=token_min_logp,
                     prune_history=prune_history, hotword_weight=hotword_weight)
        options = {k: defaults[k] if v is None else v for k, v in given.items()}
        options["hotwords"] = hotwords
        return options

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
        prune_history: Optional[bool] = None,
    ) -> Wav2Vec2DecoderWithLMOutput:
        """Beam-search a batch of logits (batch, frames, vocab) or a list of (frames, vocab) arrays.

        Frames holding the padding marker -100 are skipped. ``pool``: a user's pool (a fork-context
        ``multiprocessing.Pool`` made after this processor, a thread pool or a
        ``concurrent.futures`` executor); else ``num_processes`` > 1 uses a pool kept by the
        processor; else the batch decodes in this process. Unset options take the reference's
        defaults (beam_width 100, beam_prune_logp -10, token_min_logp -5, hotword_weight 10,
        prune_history False); alpha, beta, unk_score_offset and lm_score_boundary change the
        language model's weights for this and later calls.
        """
        if n_best < 1:
            raise ValueError(f"n_best must be at least 1, got {n_best}")
        utterances = [self._as_logits(row, f"logits[{i}]") for i, row in enumerate(logits)]
        utterances = [u[(u != PADDING_LOGIT).all(axis=-1)] for u in utterances]
        self._set_lm_weights(alpha, beta, unk_score_offset, lm_score_boundary)
        options = self._search_options(beam_width, beam_prune_logp, token_min_logp, prune_history, hotwords, hotword_weight)
        pool = pool if pool is not None else self._pool_for(num_processes)
        results = self.decoder.decode_beams_batch(utterances, pool=pool, **options)
        return _collect([[_hypothesis(beam) for beam in beams] for beams in results], n_best, output_word_offsets, True)

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
        prune_history: Optional[bool] = None,
    ) -> Wav2Vec2DecoderWithLMOutput:
        """Beam-search one utterance's logits (frames, vocab); options as in ``batch_decode``."""
        if n_best < 1:
            raise ValueError(f"n_best must be at least 1, got {n_best}")
        logits = self._as_logits(logits, "logits")
        self._set_lm_weights(alpha, beta, unk_score_offset, lm_score_boundary)
        options = self._search_options(beam_width, beam_prune_logp, token_min_logp, prune_history, hotwords, hotword_weight)
        beams = self.decoder.decode_beams(logits, **options)
        return _collect([[_hypothesis(beam) for beam in beams]], n_best, output_word_offsets, batched=False)

    def _as_logits(self, logits, name: str) -> np.ndarray:
        array = np.asarray(logits)  # the dtype decides the score arithmetic, as in the reference
        labels = len(self.decoder.labels)
        if array.ndim != 2 or array.shape[-1] != labels:
            raise ValueError(f"{name} must have shape (frames, {labels}) for this decoder, got {array.shape}")
        return array


def _hypothesis(beam) -> dict:
    words = [{"word": word, "start_offset": start, "end_offset": end} for word, (start, end) in beam.word_frames]
    return {"text": beam.text, "word_offsets": words, "logit_score": beam.logit_score, "lm_score": beam.lm_score}


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

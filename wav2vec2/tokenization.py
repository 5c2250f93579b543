"""Wav2Vec2CTCTokenizer: characters <-> ids for a CTC head, and greedy CTC decoding with offsets.

The vocabulary is a character set (``vocab.json``): one id per letter, the word delimiter ``|``
standing for a space, and ``<pad>``, which doubles as the CTC blank. Reads and writes the
reference's files (``vocab.json``, ``tokenizer_config.json``, ``special_tokens_map.json``,
``added_tokens.json``), so a directory saved by either library loads in the other.

Encoding follows the reference exactly, quirks included, so that training labels match: tokens
longer than one character (``<unk>``, ``<s>``, multi-letter graphemes) are matched whole, and those
that come from ``vocab.json`` swallow the whitespace on both sides of them.

Decoding differs from the reference in one place: with ``skip_special_tokens=True`` the blank is
kept until repeats are merged, so "LL" in "HELLO" survives (the reference drops the blank first and
decodes "HELO"). Offsets are always frames of the original sequence.
"""
from __future__ import annotations

import json
import numbers
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

import numpy as np

from .feature_extraction import (
    _HUB_KWARGS,
    BatchFeature,
    _batched_inputs,
    _framework_of,
    pad_sequences,
    target_length,
    to_numpy,
)
from .spec import ctc

VOCAB_NAME = "vocab.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_NAME = "special_tokens_map.json"
ADDED_TOKENS_NAME = "added_tokens.json"

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")
# What the reference writes for "no maximum length" (int(1e30)).
NO_MAX_LENGTH = int(1e30)

# Spaces the reference removes before punctuation and English contractions when asked to
# (clean_up_tokenization_spaces=True), applied in this order.
_CLEANUPS = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
    (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)


@dataclass
class AtomicToken:
    """A token matched whole when encoding; the JSON form is one ``added_tokens_decoder`` entry."""

    content: str
    lstrip: bool = False  # swallow the whitespace before it
    rstrip: bool = False  # swallow the whitespace after it
    special: bool = False
    normalized: bool = False
    single_word: bool = False

    def to_json(self) -> Dict[str, Any]:
        return dict(
            content=self.content, lstrip=self.lstrip, normalized=self.normalized,
            rstrip=self.rstrip, single_word=self.single_word, special=self.special,
        )


@dataclass
class Wav2Vec2CTCTokenizerOutput:
    """Decoded text with, when asked for, per-character and per-word frame offsets.

    ``char_offsets``: ``[{"char", "start_offset", "end_offset"}]``; ``word_offsets``:
    ``[{"word", "start_offset", "end_offset"}]``. For ``batch_decode`` each field is a list over
    the batch. Fields read as attributes or keys (``out.text``, ``out["text"]``).
    """

    text: Union[str, List[str]]
    char_offsets: Optional[list] = None
    word_offsets: Optional[list] = None

    def __getitem__(self, key):
        return getattr(self, key)

    def keys(self):
        return [k for k in ("text", "char_offsets", "word_offsets") if getattr(self, k) is not None]


def _token_text(value) -> Optional[str]:
    """A special token as written in JSON: a string, or a dict with its ``content``."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def _is_nested(vocab: dict) -> bool:
    return bool(vocab) and all(isinstance(v, dict) for v in vocab.values())


class Wav2Vec2CTCTokenizer:
    """Character tokenizer for CTC fine-tuned wav2vec 2.0 checkpoints.

    ``vocab`` is ``{token: id}`` or, for multilingual (MMS) checkpoints, ``{lang: {token: id}}``
    with ``target_lang`` choosing the language. ``do_lower_case`` means: upper-case the text before
    encoding (the vocabularies are upper case) and lower-case the decoded text.
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab: Union[dict, str, os.PathLike],
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        pad_token: str = "<pad>",
        word_delimiter_token: str = "|",
        replace_word_delimiter_char: str = " ",
        do_lower_case: bool = False,
        target_lang: Optional[str] = None,
        clean_up_tokenization_spaces: bool = False,
        added_tokens_decoder: Optional[Dict[Any, Any]] = None,
        **extra,
    ):
        if not isinstance(vocab, dict):
            from .io.hub import read_json_object

            vocab = read_json_object(vocab, "vocabulary")
        self.vocab = vocab
        self.bos_token, self.eos_token = _token_text(bos_token), _token_text(eos_token)
        self.unk_token, self.pad_token = _token_text(unk_token), _token_text(pad_token)
        self.word_delimiter_token = word_delimiter_token
        self.replace_word_delimiter_char = replace_word_delimiter_char
        self.do_lower_case = bool(do_lower_case)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.additional_special_tokens = [_token_text(t) for t in extra.pop("additional_special_tokens", None) or []]
        self.processor_class = extra.pop("processor_class", None)
        for derived in ("tokenizer_class", "vocab_file", "name_or_path"):
            extra.pop(derived, None)
        self.extra = extra  # other tokenizer_config.json keys, written back unchanged

        self.target_lang = None
        self._saved_added = _parse_added_tokens(added_tokens_decoder or {})
        self._select_vocabulary(target_lang)

    # -------------------------------------------------------------------- vocabulary
    def _select_vocabulary(self, target_lang: Optional[str]) -> None:
        """Build the token tables for the whole vocab, or for one language of a nested one."""
        if _is_nested(self.vocab):
            if target_lang is None:
                raise ValueError(
                    f"this vocabulary has one table per language; pass target_lang= one of "
                    f"{', '.join(sorted(self.vocab))}"
                )
            if target_lang not in self.vocab:
                raise ValueError(
                    f"target_lang {target_lang!r} is not in the vocabulary; "
                    f"choose one of {', '.join(sorted(self.vocab))}"
                )
            encoder = self.vocab[target_lang]
        elif target_lang is not None:
            raise ValueError(
                f"target_lang={target_lang!r} needs a multilingual vocabulary ({{lang: {{token: id}}}}); "
                f"this one has a single table, so leave target_lang unset"
            )
        else:
            encoder = self.vocab
        for token, index in encoder.items():
            if not isinstance(index, numbers.Integral) or isinstance(index, bool):
                raise ValueError(f"vocabulary entry {token!r} must map to an integer id, got {index!r}")
        self.target_lang = target_lang
        self.encoder: Dict[str, int] = {token: int(index) for token, index in encoder.items()}

        # Tokens matched whole: those of the vocab that need it, then what a saved tokenizer_config
        # lists, then special tokens the vocab lacks (new ids).
        self.atomic: Dict[int, AtomicToken] = self._vocab_atomic_tokens()
        self.atomic.update(self._saved_added)
        self._rebuild_tables()
        missing = [token for token in self.all_special_tokens if self._lookup(token) is None]
        if missing:
            self.add_tokens(missing, special_tokens=True)

    def _vocab_atomic_tokens(self) -> Dict[int, AtomicToken]:
        """Every multi-character vocab entry is matched whole and swallows the whitespace around it."""
        return {
            index: AtomicToken(token, lstrip=True, rstrip=True) for token, index in self.encoder.items() if len(token) > 1
        }

    def _rebuild_tables(self) -> None:
        self.decoder: Dict[int, str] = {index: token for token, index in self.encoder.items()}
        self.decoder.update({index: t.content for index, t in self.atomic.items()})
        self.added_encoder = {t.content: index for index, t in self.atomic.items()}
        contents = sorted(self.added_encoder, key=len, reverse=True)  # longest first: leftmost-longest match
        self._atomic_pattern = re.compile("(" + "|".join(map(re.escape, contents)) + ")") if contents else None
        specials = sorted(self.all_special_tokens, key=len, reverse=True)
        self._special_pattern = re.compile("(" + "|".join(map(re.escape, specials)) + ")") if specials else None

    def _lookup(self, token: str) -> Optional[int]:
        """The id of a token, or None when the vocabulary does not have it."""
        return self.added_encoder.get(token, self.encoder.get(token))

    def _token(self, index: int) -> str:
        """The token of an id; ids outside the vocabulary read as the unk token."""
        return self.decoder.get(index, self.unk_token or "")

    def _canonical_id(self, index: int) -> int:
        """The id the token of ``index`` encodes to (unknown ids -> the unk id)."""
        canonical = self._lookup(self._token(index))
        return index if canonical is None else canonical

    def set_target_lang(self, target_lang: str) -> None:
        """Switch a multilingual vocabulary to another language's table."""
        if not _is_nested(self.vocab):
            raise ValueError("this vocabulary is not multilingual (it has no per-language tables)")
        self._saved_added = {}  # ids saved for one language mean nothing in another
        self._select_vocabulary(target_lang)

    def add_tokens(self, tokens: List[str], special_tokens: bool = False) -> int:
        """Add tokens (matched whole when encoding) with new ids; returns how many were new."""
        added = 0
        for token in tokens:
            if self._lookup(token) is None:
                new_id = max([*self.encoder.values(), *self.atomic, -1]) + 1
                self.atomic[new_id] = AtomicToken(token, special=special_tokens)
                self._rebuild_tables()
                added += 1
        return added

    @property
    def all_special_tokens(self) -> List[str]:
        tokens = [self.bos_token, self.eos_token, self.unk_token, self.pad_token, *self.additional_special_tokens]
        return [t for i, t in enumerate(tokens) if t is not None and t not in tokens[:i]]

    @property
    def all_special_ids(self) -> List[int]:
        return [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (without tokens added on top of it)."""
        return len(self.encoder)

    def __len__(self) -> int:
        return len(self.get_vocab())

    def get_vocab(self) -> Dict[str, int]:
        return {**self.encoder, **self.added_encoder}

    def _special_id(self, token: Optional[str]) -> Optional[int]:
        return None if token is None else self._lookup(token)

    @property
    def pad_token_id(self) -> Optional[int]:
        return self._special_id(self.pad_token)

    @property
    def unk_token_id(self) -> Optional[int]:
        return self._special_id(self.unk_token)

    @property
    def bos_token_id(self) -> Optional[int]:
        return self._special_id(self.bos_token)

    @property
    def eos_token_id(self) -> Optional[int]:
        return self._special_id(self.eos_token)

    @property
    def word_delimiter_token_id(self) -> Optional[int]:
        return self._special_id(self.word_delimiter_token)

    def convert_tokens_to_ids(self, tokens):
        """A token or a list of tokens to ids; unknown tokens become the unk id."""
        if isinstance(tokens, str):
            index = self._lookup(tokens)
            return index if index is not None else self.unk_token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        """An id or a sequence of ids to tokens; ids outside the vocabulary become the unk token."""
        if isinstance(ids, numbers.Integral):
            return self._token(int(ids))
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._token(i) for i in _as_id_list(ids) if i not in skip]

    # -------------------------------------------------------------------- encoding
    def tokenize(self, text: str) -> List[str]:
        """Text -> tokens: atomic tokens whole, spaces as the word delimiter, other characters one by one."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        if self.do_lower_case and self._special_pattern is not None:
            # Lower-case all but the special tokens, as the reference does before matching tokens.
            text = "".join(p if i % 2 else p.lower() for i, p in enumerate(self._special_pattern.split(text)))
        elif self.do_lower_case:
            text = text.lower()
        pieces = self._atomic_pattern.split(text) if self._atomic_pattern is not None else [text]
        # split() alternates text, token, text, ...: odd positions are atomic tokens.
        for i in range(1, len(pieces), 2):
            atomic = self.atomic[self.added_encoder[pieces[i]]]
            if atomic.lstrip:
                pieces[i - 1] = pieces[i - 1].rstrip()
            if atomic.rstrip:
                pieces[i + 1] = pieces[i + 1].lstrip()
        tokens = []
        for i, piece in enumerate(pieces):
            if i % 2:
                tokens.append(piece)
            else:
                if self.do_lower_case:
                    piece = piece.upper()
                if self.word_delimiter_token is not None:  # without one, a space is a character like any other
                    piece = piece.replace(" ", self.word_delimiter_token)
                tokens.extend(piece)
        return tokens

    def encode(self, text: str) -> List[int]:
        return self.convert_tokens_to_ids(self.tokenize(text))

    def __call__(
        self,
        text: Union[str, List[str]],
        padding=False,
        max_length: Optional[int] = None,
        truncation: bool = False,
        pad_to_multiple_of: Optional[int] = None,
        return_attention_mask: Optional[bool] = None,
        return_tensors: Optional[str] = None,
    ) -> BatchFeature:
        """Encode one text or a batch: ``input_ids`` and (by default) ``attention_mask``."""
        batched = isinstance(text, (list, tuple))
        if batched and not all(isinstance(t, str) for t in text):
            raise ValueError("text must be a string or a list of strings")
        ids = [self.encode(t) for t in text] if batched else [self.encode(text)]
        cut, pad_to = target_length([len(x) for x in ids], padding, max_length, truncation, pad_to_multiple_of)
        if cut is not None:
            ids = [x[:cut] for x in ids]
        batch = self._padded_ids(ids, pad_to, return_attention_mask)
        if return_tensors is not None:
            return batch.convert_to_tensors(return_tensors)  # tensors always have a batch axis
        return batch if batched else BatchFeature({k: v[0] for k, v in batch.items()})

    def _padded_ids(self, ids: List[List[int]], pad_to: Optional[int], return_attention_mask) -> BatchFeature:
        if pad_to is not None and self.pad_token_id is None:
            raise ValueError("cannot pad: this tokenizer has no pad_token")
        padded = pad_sequences([np.asarray(x, dtype=np.int64) for x in ids], pad_to, self.pad_token_id)
        batch = BatchFeature(input_ids=[x.tolist() for x in padded])
        if return_attention_mask is None or return_attention_mask:
            masks = pad_sequences([np.ones(len(x), dtype=np.int64) for x in ids], pad_to, 0)
            batch["attention_mask"] = [m.tolist() for m in masks]
        return batch

    def pad(
        self,
        encoded_inputs,
        padding=True,
        max_length: Optional[int] = None,
        pad_to_multiple_of: Optional[int] = None,
        return_attention_mask: Optional[bool] = None,
        return_tensors: Optional[str] = None,
    ) -> BatchFeature:
        """Pad encoded ``input_ids`` (a dict of batches or a list of per-example dicts) with the pad id."""
        encoded_inputs = _batched_inputs(encoded_inputs, "input_ids")
        ids = encoded_inputs["input_ids"]
        if return_tensors is None and len(ids):
            return_tensors = _framework_of(ids[0])
        ids = [_as_id_list(x) for x in ids]
        _, pad_to = target_length([len(x) for x in ids], padding, max_length, False, pad_to_multiple_of)
        return self._padded_ids(ids, pad_to, return_attention_mask).convert_to_tensors(return_tensors)

    # -------------------------------------------------------------------- decoding
    def decode(
        self,
        token_ids,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: Optional[bool] = None,
        output_char_offsets: bool = False,
        output_word_offsets: bool = False,
        group_tokens: bool = True,
        spaces_between_special_tokens: bool = False,
    ) -> Union[str, Wav2Vec2CTCTokenizerOutput]:
        """CTC-decode one id sequence: merge repeats, drop the blank (pad), join the characters.

        ``group_tokens=False`` decodes label sequences, which have no repeats to merge.
        ``spaces_between_special_tokens`` puts a space between every two tokens (as the reference
        does, despite the name: all tokens, not only special ones). With offsets asked for, returns a
        ``Wav2Vec2CTCTokenizerOutput`` instead of the text.
        """
        segments = self._segments(token_ids, skip_special_tokens, group_tokens)
        chars = [self._token(i) for i in segments.ids.tolist()]
        chars = [self.replace_word_delimiter_char if c == self.word_delimiter_token else c for c in chars]
        text = (" " if spaces_between_special_tokens else "").join(chars).strip()
        if self.do_lower_case:
            text = text.lower()
        text = self._clean_up(text, clean_up_tokenization_spaces)
        if not (output_char_offsets or output_word_offsets):
            return text

        word_offsets = None
        if output_word_offsets:
            is_delimiter = [c == self.replace_word_delimiter_char for c in chars]
            word_offsets = [
                {"word": "".join(chars[first:last]), "start_offset": start, "end_offset": end}
                for first, last, start, end in ctc.word_offsets(segments, is_delimiter)
            ]
        return Wav2Vec2CTCTokenizerOutput(
            text=text, char_offsets=_char_offsets(chars, segments) if output_char_offsets else None,
            word_offsets=word_offsets,
        )

    def _segments(self, token_ids, skip_special_tokens: bool, group_tokens: bool) -> ctc.Segments:
        """The emitted tokens of one id sequence, with the frames each spans."""
        ids = np.asarray(_as_id_list(token_ids), dtype=np.int64)
        # Every id that reads as the same token must merge with it: an id outside the vocabulary
        # reads as unk, so map each id to the canonical id of its token first.
        canonical = np.asarray([self._canonical_id(i) for i in ids.tolist()], dtype=np.int64)
        ignore = [i for i in self.all_special_ids if i != self.pad_token_id] if skip_special_tokens else []
        return ctc.collapse(canonical, self.pad_token_id, ignore_ids=ignore, group=group_tokens)

    def _clean_up(self, text: str, clean_up_tokenization_spaces: Optional[bool]) -> str:
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:
            for before, after in _CLEANUPS:
                text = text.replace(before, after)
        return text

    def batch_decode(
        self,
        sequences,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: Optional[bool] = None,
        output_char_offsets: bool = False,
        output_word_offsets: bool = False,
        group_tokens: bool = True,
        spaces_between_special_tokens: bool = False,
    ) -> Union[List[str], Wav2Vec2CTCTokenizerOutput]:
        """``decode`` each sequence of a batch; with offsets, one output whose fields are lists."""
        return _batched(self.decode, sequences, dict(
            skip_special_tokens=skip_special_tokens,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            output_char_offsets=output_char_offsets,
            output_word_offsets=output_word_offsets,
            group_tokens=group_tokens,
            spaces_between_special_tokens=spaces_between_special_tokens,
        ))

    # -------------------------------------------------------------------- files
    def _config_dict(self) -> Dict[str, Any]:
        config = {"model_max_length": NO_MAX_LENGTH, "extra_special_tokens": {}, **self.extra}
        config.update(
            added_tokens_decoder={str(i): self.atomic[i].to_json() for i in sorted(self.atomic)},
            bos_token=self.bos_token,
            clean_up_tokenization_spaces=self.clean_up_tokenization_spaces,
            do_lower_case=self.do_lower_case,
            eos_token=self.eos_token,
            pad_token=self.pad_token,
            replace_word_delimiter_char=self.replace_word_delimiter_char,
            target_lang=self.target_lang,
            tokenizer_class=type(self).__name__,
            unk_token=self.unk_token,
            word_delimiter_token=self.word_delimiter_token,
        )
        if self.additional_special_tokens:
            config["additional_special_tokens"] = list(self.additional_special_tokens)
        if self.processor_class is not None:
            config["processor_class"] = self.processor_class
        return config

    def save_pretrained(self, save_directory) -> List[str]:
        """Write vocab.json, tokenizer_config.json, special_tokens_map.json (and added_tokens.json)."""
        os.makedirs(save_directory, exist_ok=True)
        special_map = {name: getattr(self, name) for name in SPECIAL_TOKEN_NAMES if getattr(self, name) is not None}
        if self.additional_special_tokens:
            special_map["additional_special_tokens"] = list(self.additional_special_tokens)
        files = {
            TOKENIZER_CONFIG_NAME: self._config_dict(),
            SPECIAL_TOKENS_MAP_NAME: special_map,
            VOCAB_NAME: self.vocab,
        }
        # Tokens whose ids the vocabulary does not have, in the older file the reference also reads.
        base_ids = set(self.encoder.values())
        beyond_vocab = {t.content: i for i, t in self.atomic.items() if i not in base_ids}
        if beyond_vocab:
            files[ADDED_TOKENS_NAME] = beyond_vocab
        paths = []
        for name, data in files.items():
            path = os.path.join(save_directory, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
            paths.append(path)
        return paths

    @classmethod
    def from_pretrained(cls, path_or_repo_id, **kwargs) -> "Wav2Vec2CTCTokenizer":
        """Load from a directory or hub repo id holding ``vocab.json`` (and the optional config files).

        A ``tokenizer_config.json`` naming ``Wav2Vec2PhonemeCTCTokenizer`` gives one of those.

        Hub options (revision, cache_dir, local_files_only, token, subfolder) go to
        ``wav2vec2.io.hub.resolve_file``; any other keyword (``target_lang=``, ``unk_token=``, ...)
        overrides a saved setting.
        """
        from .io.hub import read_json_object, resolve_file

        hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}

        def optional(name):
            path = resolve_file(path_or_repo_id, name, required=False, **hub_kwargs)
            return read_json_object(path, name) if path is not None else {}

        vocab_path = resolve_file(path_or_repo_id, VOCAB_NAME, **hub_kwargs)
        settings = optional(TOKENIZER_CONFIG_NAME)
        # Older checkpoints keep special tokens only in special_tokens_map.json.
        for name, value in optional(SPECIAL_TOKENS_MAP_NAME).items():
            settings.setdefault(name, value)
        added = {str(i): {"content": t} for t, i in optional(ADDED_TOKENS_NAME).items()}
        settings["added_tokens_decoder"] = {**added, **settings.get("added_tokens_decoder", {})}
        settings.update(kwargs)
        if cls is Wav2Vec2CTCTokenizer and settings.get("tokenizer_class") == Wav2Vec2PhonemeCTCTokenizer.__name__:
            cls = Wav2Vec2PhonemeCTCTokenizer  # a phoneme checkpoint: its tokens are joined with spaces
        try:
            return cls(vocab_path, **settings)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path_or_repo_id}: {e}") from None


class Wav2Vec2PhonemeCTCTokenizer(Wav2Vec2CTCTokenizer):
    """Phoneme tokenizer for CTC checkpoints fine-tuned on phonemes (e.g. wav2vec2-lv-60-espeak-cv-ft).

    Tokens are phonemes, written with spaces between them (``"h ə l oʊ"``); decoding joins them the
    same way. ``word_delimiter_token`` (None by default) is a token between words, dropped when
    decoding unless ``filter_word_delimiter_token=False``. With ``do_phonemize`` (the default), text
    is turned into phonemes with the ``phonemizer`` package (not a dependency; it needs espeak-ng),
    which is imported only when text is encoded: decoding, and encoding text that is already phonemes
    (``do_phonemize=False``), need nothing.
    """

    def __init__(
        self,
        vocab: Union[dict, str, os.PathLike],
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        pad_token: str = "<pad>",
        phone_delimiter_token: str = " ",
        word_delimiter_token: Optional[str] = None,
        do_phonemize: bool = True,
        phonemizer_lang: str = "en-us",
        phonemizer_backend: str = "espeak",
        **kwargs,
    ):
        self.phone_delimiter_token = phone_delimiter_token
        self.do_phonemize = bool(do_phonemize)
        self.phonemizer_lang = phonemizer_lang
        self.phonemizer_backend = phonemizer_backend
        self._phonemizers: Dict[str, Any] = {}
        for unused in ("do_lower_case", "replace_word_delimiter_char"):  # a character tokenizer's settings
            kwargs.pop(unused, None)
        super().__init__(vocab, bos_token, eos_token, unk_token, pad_token, word_delimiter_token, **kwargs)

    def _vocab_atomic_tokens(self) -> Dict[int, AtomicToken]:
        """Only the special tokens are matched whole (phonemes are split at spaces), and they strip nothing."""
        specials = [self.bos_token, self.eos_token, self.unk_token, self.pad_token, *self.additional_special_tokens]
        return {
            self.encoder[token]: AtomicToken(token, special=True, normalized=True)
            for token in specials
            if token in self.encoder
        }

    def tokenize(self, text: str) -> List[str]:
        """Phonemes of ``text`` (phonemized first with ``do_phonemize``), split at spaces; special tokens whole."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        pieces = self._atomic_pattern.split(text) if self._atomic_pattern is not None else [text]
        tokens = []
        for i, piece in enumerate(pieces):  # odd positions are atomic tokens
            if i % 2:
                tokens.append(piece)
                continue
            piece = piece.strip()
            if self.do_phonemize and piece:
                piece = self.phonemize(piece.lower())
            tokens.extend(p for p in piece.split(" ") if p.strip())
        return tokens

    def phonemize(self, text: str, phonemizer_lang: Optional[str] = None) -> str:
        """``text`` as phonemes separated by ``phone_delimiter_token`` (and words by the word delimiter)."""
        lang = phonemizer_lang or self.phonemizer_lang
        try:
            from phonemizer.backend import BACKENDS
            from phonemizer.separator import Separator
        except ImportError:
            raise ImportError(
                "encoding text with do_phonemize=True needs the phonemizer package (pip install phonemizer; "
                "it uses espeak-ng); or pass do_phonemize=False and text that is already phonemes separated "
                "by spaces"
            ) from None
        if lang not in self._phonemizers:
            self._phonemizers[lang] = BACKENDS[self.phonemizer_backend](lang, language_switch="remove-flags")
        word = self.word_delimiter_token + " " if self.word_delimiter_token is not None else ""
        separator = Separator(phone=self.phone_delimiter_token, word=word, syllable="")
        return self._phonemizers[lang].phonemize([text], separator=separator)[0].strip()

    def decode(
        self,
        token_ids,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: Optional[bool] = None,
        output_char_offsets: bool = False,
        group_tokens: bool = True,
        filter_word_delimiter_token: bool = True,
    ) -> Union[str, Wav2Vec2CTCTokenizerOutput]:
        """CTC-decode one id sequence into phonemes separated by spaces (the word delimiter dropped
        unless ``filter_word_delimiter_token=False``); with ``output_char_offsets``, an output with
        one offset per phoneme."""
        segments = self._segments(token_ids, skip_special_tokens, group_tokens)
        if filter_word_delimiter_token and self.word_delimiter_token_id is not None:
            keep = segments.ids != self.word_delimiter_token_id
            segments = ctc.Segments(segments.ids[keep], segments.starts[keep], segments.ends[keep])
        phonemes = [self._token(i) for i in segments.ids.tolist()]
        text = self._clean_up(" ".join(phonemes).strip(), clean_up_tokenization_spaces)
        if not output_char_offsets:
            return text
        return Wav2Vec2CTCTokenizerOutput(text=text, char_offsets=_char_offsets(phonemes, segments))

    def batch_decode(
        self,
        sequences,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: Optional[bool] = None,
        output_char_offsets: bool = False,
        group_tokens: bool = True,
        filter_word_delimiter_token: bool = True,
    ) -> Union[List[str], Wav2Vec2CTCTokenizerOutput]:
        """``decode`` each sequence of a batch; with offsets, one output whose fields are lists."""
        return _batched(self.decode, sequences, dict(
            skip_special_tokens=skip_special_tokens,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            output_char_offsets=output_char_offsets,
            group_tokens=group_tokens,
            filter_word_delimiter_token=filter_word_delimiter_token,
        ))

    def _config_dict(self) -> Dict[str, Any]:
        config = super()._config_dict()
        for unused in ("do_lower_case", "replace_word_delimiter_char"):
            config.pop(unused)
        config.update(
            do_phonemize=self.do_phonemize,
            phone_delimiter_token=self.phone_delimiter_token,
            phonemizer_backend=self.phonemizer_backend,
            phonemizer_lang=self.phonemizer_lang,
        )
        return config


def _parse_added_tokens(entries: Dict[Any, Any]) -> Dict[int, AtomicToken]:
    """``added_tokens_decoder`` from tokenizer_config.json: {"id": {content, lstrip, ...}}."""
    fields = AtomicToken.__dataclass_fields__
    parsed = {}
    for index, entry in entries.items():
        if not isinstance(entry, dict):
            entry = {"content": _token_text(entry)}
        if not isinstance(entry.get("content"), str):
            raise ValueError(f"added_tokens_decoder[{index!r}] has no 'content' string")
        parsed[int(index)] = AtomicToken(**{k: v for k, v in entry.items() if k in fields})
    return parsed


def _as_id_list(ids) -> List[int]:
    """Ids from a list, a NumPy array or a framework tensor, as a list of Python ints."""
    if isinstance(ids, numbers.Integral):
        return [int(ids)]
    array = to_numpy(ids)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise ValueError(
            f"expected a 1-D sequence of integer token ids, got shape {array.shape} and dtype {array.dtype}"
        )
    return array.astype(np.int64).tolist()


def _char_offsets(chars: List[str], segments: ctc.Segments) -> List[Dict[str, Any]]:
    return [
        {"char": c, "start_offset": int(start), "end_offset": int(end)}
        for c, start, end in zip(chars, segments.starts, segments.ends)
    ]


def _batched(decode, sequences, options: Dict[str, Any]) -> Union[List[str], Wav2Vec2CTCTokenizerOutput]:
    """``decode(sequence, **options)`` for each sequence; outputs with offsets become one of lists."""
    if _framework_of(sequences) is not None or isinstance(sequences, np.ndarray):
        sequences = to_numpy(sequences)
    decoded = [decode(seq, **options) for seq in sequences]
    if not (options.get("output_char_offsets") or options.get("output_word_offsets")):
        return decoded
    return Wav2Vec2CTCTokenizerOutput(
        text=[d.text for d in decoded],
        char_offsets=[d.char_offsets for d in decoded] if options.get("output_char_offsets") else None,
        word_offsets=[d.word_offsets for d in decoded] if options.get("output_word_offsets") else None,
    )

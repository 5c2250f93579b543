"""Text normalisation, CTC vocabularies and classification labels.

``normalize_text`` is what a CTC model is trained on and scored against:
1. Unicode NFKC (full-width letters, ligatures and the like become plain letters);
2. curly apostrophes (’ ‘ ʼ) become ``'``;
3. upper case (``str.upper``), as in the English wav2vec 2.0 vocabularies;
4. hyphens, dashes and slashes become spaces ("well-known" -> "WELL KNOWN");
5. every other character that is not a letter, a digit, an apostrophe or whitespace is removed
   (punctuation, symbols); an apostrophe is kept only between two letters or digits ("DON'T",
   "NADIA'S"), so quotation marks made of apostrophes go;
6. runs of whitespace become one space, and the ends are stripped.
Digits are kept as they are: spell numbers out in the transcripts if the model should say them.

A vocabulary built from training text (``build_vocabulary``) has the layout of the English
wav2vec 2.0 checkpoints: ``<pad>`` = 0 (also the CTC blank), ``<s>`` = 1, ``</s>`` = 2,
``<unk>`` = 3, the word delimiter ``|`` = 4, then every character of the normalised text in code
point order. A vocabulary file (``--vocab FILE``, a ``vocab.json``) or a checkpoint's tokenizer is
used as it is.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Dict, Iterable, List

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
WORD_DELIMITER = "|"

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_SEPARATORS = re.compile(r"[-\u2010-\u2015/]")
_STRAY_APOSTROPHE = re.compile(r"(?<![^\W_])'|'(?![^\W_])")  # not between two letters/digits


def normalize_text(text: str) -> str:
    """The transcript a CTC model learns; see the module docstring for the rules."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).upper()
    text = _SEPARATORS.sub(" ", text)
    kept = "".join(c if c.isalnum() or c == "'" or c.isspace() else "" for c in text)
    kept = _STRAY_APOSTROPHE.sub("", kept)
    return " ".join(kept.split())


def build_vocabulary(texts: Iterable[str]) -> Dict[str, int]:
    """``{token: id}`` from training transcripts (normalised here); see the module docstring."""
    characters = set()
    for text in texts:
        characters.update(normalize_text(text))
    characters.discard(" ")
    tokens = [*SPECIAL_TOKENS, WORD_DELIMITER, *sorted(characters)]
    return {token: index for index, token in enumerate(tokens)}


def ctc_tokenizer(vocab: Dict[str, int]):
    """The library's CTC tokenizer for ``vocab``: ``|`` as the word delimiter, no case folding
    (the text is upper-cased by ``normalize_text`` before encoding)."""
    from ..tokenization import Wav2Vec2CTCTokenizer

    missing = [t for t in ("<pad>", "<unk>", WORD_DELIMITER) if t not in vocab]
    if missing:
        raise ValueError(f"the vocabulary lacks {', '.join(map(repr, missing))}")
    return Wav2Vec2CTCTokenizer(dict(vocab), word_delimiter_token=WORD_DELIMITER, do_lower_case=False)


def check_tokenizer(tokenizer, config) -> None:
    """Raise ValueError when a tokenizer cannot label a CTC model with ``config``: the blank must be
    the pad token at ``config.pad_token_id`` and every id must fit ``config.vocab_size``."""
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id != config.pad_token_id:
        raise ValueError(
            f"the tokenizer's pad token {tokenizer.pad_token!r} has id {tokenizer.pad_token_id}, but the model's "
            f"CTC blank (pad_token_id) is {config.pad_token_id}"
        )
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens, more than the model's vocab_size={config.vocab_size}"
        )


def encode(tokenizer, text: str) -> List[int]:
    """Token ids of the normalised ``text``."""
    return tokenizer.encode(normalize_text(text))


def unknown_characters(tokenizer, texts: Iterable[str]) -> Counter:
    """Characters of the normalised texts that the tokenizer maps to ``<unk>``, with their counts."""
    vocab = tokenizer.get_vocab()
    counts = Counter()
    for text in texts:
        counts.update(c for c in normalize_text(text).replace(" ", "") if c not in vocab)
    return counts


def label_vocabulary(labels: Iterable[str]) -> Dict[int, str]:
    """``id2label`` for classification: the distinct labels in sorted order."""
    return dict(enumerate(sorted(set(labels))))

"""The decoder's alphabet: one label per logit, named as the reference decoder (pyctcdecode) names them.

A CTC vocabulary becomes an alphabet by three renamings, so that alphabets (``alphabet.json``)
written by either library are the same: the padding token (``<pad>``, ``[PAD]``, ...) is the CTC
blank ``""``; the word delimiter ``|`` is the space ``" "`` (when the vocabulary has no space of its
own); the unknown token (``<unk>``, ``[UNK]``) is ``"⁇"``. Every other label is text, appended to
the word being spelled; the space ends a word.
"""
from __future__ import annotations

import re
from typing import Iterable, List

BLANK = ""
SPACE = " "
UNKNOWN = "⁇"

_PAD_TOKEN = re.compile(r"^[<\[]pad[>\]]$", flags=re.IGNORECASE)
_UNKNOWN_TOKEN = re.compile(r"^[<\[]unk[>\]]$", flags=re.IGNORECASE)
# Word-piece vocabularies mark word starts with these; the beam search here spells words from characters.
_WORD_PIECE_MARKERS = ("##", "▁")


def alphabet_label(token: str, word_delimiter: str = "|") -> str:
    """The alphabet's name for one vocabulary token (the renamings above)."""
    if _PAD_TOKEN.match(token):
        return BLANK
    if token == word_delimiter:
        return SPACE
    if _UNKNOWN_TOKEN.match(token):
        return UNKNOWN
    return token


def build_alphabet(labels: Iterable[str]) -> List[str]:
    """The alphabet of a vocabulary given as its tokens in id order.

    Also as the reference builds it: "_" is the blank when no padding token is found, and a blank
    is appended when there is none at all (the logits then need one more column).
    """
    labels = list(labels)
    check_labels(labels)
    if len(set(labels)) != len(labels):
        raise ValueError("the vocabulary has duplicate tokens; the decoder needs one label per logit")
    alphabet = list(labels)
    if "|" in alphabet and SPACE not in alphabet:
        alphabet[alphabet.index("|")] = SPACE
    alphabet = [BLANK if _PAD_TOKEN.match(label) else label for label in alphabet]
    if "_" in alphabet and BLANK not in alphabet:
        alphabet[alphabet.index("_")] = BLANK
    if BLANK not in alphabet:
        alphabet.append(BLANK)
    return [UNKNOWN if _UNKNOWN_TOKEN.match(label) else label for label in alphabet]


def check_labels(labels: List[str], source: str = "the vocabulary") -> None:
    """Refuse what this decoder cannot spell: non-string labels and word-piece vocabularies."""
    if not all(isinstance(label, str) for label in labels):
        raise ValueError(f"{source}: every label must be a string")
    pieces = sorted(label for label in labels if label.startswith(_WORD_PIECE_MARKERS))
    if pieces:
        raise ValueError(
            f"{source} looks like a word-piece (BPE) vocabulary ({pieces[:3]}...); the beam search here "
            f"spells words from characters, with the word delimiter between them"
        )


def spellings_are_unique(labels: Iterable[str]) -> bool:
    """Whether every string has at most one spelling in these text labels (blank and space aside),
    and no label holds a space: then a prefix is fixed by its parent and last label.

    The Sardinas-Patterson test: the code is uniquely decodable unless some dangling suffix (what is
    left of a word after cutting a codeword, or a dangling suffix, off its front) is a codeword.
    """
    words = {label for label in labels if label not in (BLANK, SPACE)}
    if any(SPACE in word for word in words):
        return False
    if all(len(word) == 1 for word in words):
        return True

    def dangling(fronts, wholes):
        return {w[len(f):] for f in fronts for w in wholes if w != f and w.startswith(f)}

    seen, pending = set(), dangling(words, words)
    while pending:
        if pending & words:
            return False
        seen |= pending
        pending = (dangling(pending, words) | dangling(words, pending)) - seen
    return True

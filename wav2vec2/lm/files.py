"""The reference's decoder files, read and written both ways.

Next to a processor's own files the reference (transformers + pyctcdecode) keeps::

    alphabet.json                {"labels": [...], "is_bpe": false}
    language_model/attrs.json    {"alpha": .., "beta": .., "unk_score_offset": .., "score_boundary": ..}
    language_model/unigrams.txt  the LM's words, one a line
    language_model/<name>.arpa   the KenLM model (or .bin / .binary)

``language_model/`` holds exactly these three files (names starting with "." or "__" aside).
Reading checks every field against what the files hold and names the file at fault. Writing
stages both in a hidden directory and swaps them in whole.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import List

from .alphabet import check_labels
from .decoder import BeamSearchDecoder
from .language_model import LanguageModel

ALPHABET_FILE = "alphabet.json"
LANGUAGE_MODEL_DIRECTORY = "language_model"
ATTRIBUTES_FILE = "attrs.json"
UNIGRAMS_FILE = "unigrams.txt"
KENLM_SUFFIXES = (".arpa", ".bin", ".binary")


def _visible(directory: str) -> List[str]:
    """Entries the reference looks at (it ignores names starting with "." or "__")."""
    return sorted(name for name in os.listdir(directory) if not name.startswith((".", "__")))


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read it as JSON ({e})") from None


def read_alphabet(directory) -> List[str]:
    """The labels of ``alphabet.json`` in ``directory``."""
    path = os.path.join(os.fspath(directory), ALPHABET_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    alphabet = _read_json(path)
    if not isinstance(alphabet, dict) or set(alphabet) != {"labels", "is_bpe"}:
        raise ValueError(f"{path}: expected an object with the keys 'labels' and 'is_bpe'")
    labels, is_bpe = alphabet["labels"], alphabet["is_bpe"]
    if not isinstance(labels, list) or not isinstance(is_bpe, bool):
        raise ValueError(f"{path}: 'labels' must be a list of strings and 'is_bpe' a bool")
    if is_bpe:
        raise ValueError(f"{path}: a word-piece (BPE) alphabet; the beam search here spells words from characters")
    check_labels(labels, source=path)
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path}: duplicate labels")
    return labels


def read_language_model(directory, unigram_encoding: str = "utf-8") -> LanguageModel:
    """The LanguageModel of a ``language_model/`` directory."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: no such directory")
    names = _visible(directory)
    kenlm_files = [n for n in names if n not in (ATTRIBUTES_FILE, UNIGRAMS_FILE)]
    if len(names) != 3 or ATTRIBUTES_FILE not in names or UNIGRAMS_FILE not in names \
            or not kenlm_files[0].endswith(KENLM_SUFFIXES):
        raise ValueError(
            f"{directory}: expected {ATTRIBUTES_FILE}, {UNIGRAMS_FILE} and one KenLM file "
            f"({', '.join(KENLM_SUFFIXES)}), found {names}"
        )
    attributes_path = os.path.join(directory, ATTRIBUTES_FILE)
    attributes = _read_json(attributes_path)
    if not isinstance(attributes, dict) or set(attributes) != set(LanguageModel.ATTRIBUTES):
        raise ValueError(f"{attributes_path}: expected an object with exactly the keys {list(LanguageModel.ATTRIBUTES)}")
    unigrams_path = os.path.join(directory, UNIGRAMS_FILE)
    try:
        with open(unigrams_path, encoding=unigram_encoding) as f:
            unigrams = f.read().splitlines()
    except (OSError, UnicodeDecodeError, LookupError) as e:
        raise ValueError(f"{unigrams_path}: cannot read it as {unigram_encoding} text ({e})") from None
    language_model = LanguageModel.from_file(os.path.join(directory, kenlm_files[0]), unigrams)
    try:
        language_model.set_attributes(**attributes)
    except ValueError as e:
        raise ValueError(f"{attributes_path}: {e}") from None
    return language_model


def load_decoder(directory, unigram_encoding: str = "utf-8") -> BeamSearchDecoder:
    """The decoder of a directory in the reference's layout."""
    directory = os.fspath(directory)
    labels = read_alphabet(directory)
    lm_directory = os.path.join(directory, LANGUAGE_MODEL_DIRECTORY)
    if not os.path.isdir(lm_directory):
        raise ValueError(f"{lm_directory}: no such directory (the language model's files)")
    return BeamSearchDecoder(labels, read_language_model(lm_directory, unigram_encoding))


def save_decoder(decoder: BeamSearchDecoder, directory) -> List[str]:
    """Write ``alphabet.json`` and ``language_model/`` into ``directory``; returns the paths written.

    Both are written into a hidden staging directory first and then moved into place, so a failure
    leaves what was there before; a previous ``language_model/`` is replaced whole.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    language_model = decoder.language_model
    staging = tempfile.mkdtemp(prefix=".decoder-", dir=directory)
    try:
        with open(os.path.join(staging, ALPHABET_FILE), "w", encoding="utf-8") as f:
            json.dump({"labels": decoder.labels, "is_bpe": False}, f)
        staged_lm = os.path.join(staging, LANGUAGE_MODEL_DIRECTORY)
        os.mkdir(staged_lm)
        with open(os.path.join(staged_lm, ATTRIBUTES_FILE), "w", encoding="utf-8") as f:
            json.dump(language_model.attributes, f)
        with open(os.path.join(staged_lm, UNIGRAMS_FILE), "w", encoding="utf-8") as f:
            f.writelines(word + "\n" for word in sorted(language_model.unigrams))
        kenlm_name = os.path.basename(language_model.path)
        if not kenlm_name.endswith(KENLM_SUFFIXES):  # the reference only loads these names
            kenlm_name += ".arpa" if _looks_like_arpa(language_model.path) else ".bin"
        shutil.copy2(language_model.path, os.path.join(staged_lm, kenlm_name))

        lm_directory = os.path.join(directory, LANGUAGE_MODEL_DIRECTORY)
        previous = None
        if os.path.lexists(lm_directory):
            previous = os.path.join(staging, "previous")
            os.replace(lm_directory, previous)
        try:
            os.replace(staged_lm, lm_directory)
        except OSError:
            if previous is not None:
                os.replace(previous, lm_directory)
            raise
        os.replace(os.path.join(staging, ALPHABET_FILE), os.path.join(directory, ALPHABET_FILE))
        saved_kenlm = os.path.join(lm_directory, kenlm_name)
        if os.path.realpath(os.path.dirname(language_model.path)) == os.path.realpath(lm_directory):
            language_model.path = saved_kenlm  # its old copy goes with the directory it replaced
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [os.path.join(directory, ALPHABET_FILE), lm_directory]


def _looks_like_arpa(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(64).lstrip().startswith(b"\\data\\")

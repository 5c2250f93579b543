"""Records as text: one line of text (txt), one JSON object (json), or subtitle cues (srt, vtt)."""
from __future__ import annotations

import json
from typing import Sequence

FORMATS = ("txt", "json", "srt", "vtt")


def _timestamp(seconds: float, decimal: str) -> str:
    millis = int(round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def subtitle_cues(words: Sequence[dict], max_seconds: float = 5.0, max_words: int = 12):
    """Group timed words into cues (start, end, text) of at most ``max_seconds`` / ``max_words``."""
    cues, current = [], []
    for word in words:
        if current and (word["end"] - current[0]["start"] > max_seconds or len(current) == max_words):
            cues.append(current)
            current = []
        current.append(word)
    if current:
        cues.append(current)
    return [(cue[0]["start"], cue[-1]["end"], " ".join(w["word"] for w in cue)) for cue in cues]


def format_srt(record: dict) -> str:
    blocks = [
        f"{i}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
        for i, (start, end, text) in enumerate(subtitle_cues(record["words"]), start=1)
    ]
    return "\n".join(blocks)


def format_vtt(record: dict) -> str:
    blocks = [
        f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text}\n"
        for start, end, text in subtitle_cues(record["words"])
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def json_line(record: dict) -> str:
    """A record as one line of JSON (``--format json``, and each line of a results file)."""
    return json.dumps(record, ensure_ascii=False) + "\n"


def format_record(record: dict, fmt: str) -> str:
    """One record as the text ``wav2vec2 transcribe --format fmt`` prints for it."""
    if fmt == "json":
        return json_line(record)
    if fmt == "txt":
        return record["text"] + "\n"
    if fmt == "srt":
        return format_srt(record) + "\n"
    if fmt == "vtt":
        return format_vtt(record) + "\n"
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")

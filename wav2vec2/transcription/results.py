"""The results file of a corpus run: JSON lines that a rerun resumes, and the run's summary.

Each line is a record as ``--format json`` prints it plus ``"sha256"``, the hex digest of the audio
file's bytes (null for a file that could not be read). A file counts as done when a line has its
absolute path and its current digest, so a rerun skips it, and a file changed since is done again.

Nothing is ever half-written: each line goes out in one ``write`` and is fsynced before the next
one, so a killed run loses at most the records it had not written yet. A line cut short anyway
(a power cut, a full disk) is dropped when the file is next opened. The file is locked while a
run appends, so two runs cannot interleave their lines.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Optional

from .formats import json_line


class ResultsFileError(ValueError):
    """The results file cannot be used: not such a file, held by another run, or not writable
    (a full disk). The message names the file."""


def file_sha256(path) -> Optional[str]:
    """Hex SHA-256 of a file's bytes, read in blocks; None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def result_key(path, sha256: Optional[str]) -> tuple:
    return os.path.abspath(os.fspath(path)), sha256


class ResultsFile:
    """An open results file: ``is_done(path, sha256)``, ``append(record)``. Use it as a context manager.

    Raises ResultsFileError naming the file (and line) when it cannot be opened, when an existing
    line is not such a record (the file is then left as it is), or when another run holds it.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._done = set()
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise ResultsFileError(f"cannot open {self.path}: {e.strerror}") from None
        try:
            self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
            if self._regular:  # a pipe or a device (/dev/stdout, /dev/full) has nothing to resume
                self._lock()
                self._load()
        except BaseException:
            os.close(self._fd)
            raise

    def _lock(self):
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResultsFileError(f"{self.path}: another run is writing to this results file") from None

    def _load(self):
        """Read the records already there; cut off a last line that was not finished."""
        complete = 0  # bytes up to the end of the last whole line
        with open(self.path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    break
                self._done.add(self._parse(number, line))
                complete += len(line)
        if os.fstat(self._fd).st_size > complete:
            os.ftruncate(self._fd, complete)

    def _parse(self, number: int, line: bytes) -> tuple:
        where = f"{self.path}: line {number}"
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ResultsFileError(f"{where} is not JSON ({e}); not a results file of wav2vec2 transcribe?") from None
        if not isinstance(record, dict) or not isinstance(record.get("file"), str) or "sha256" not in record:
            raise ResultsFileError(f"{where} is not a record with \"file\" and \"sha256\"; not a results file of wav2vec2 transcribe?")
        return result_key(record["file"], record["sha256"])

    def is_done(self, path, sha256: Optional[str]) -> bool:
        return result_key(path, sha256) in self._done

    def done_keys(self) -> frozenset:
        """(absolute path, sha256) of every record in the file."""
        return frozenset(self._done)

    def append(self, record: dict) -> None:
        """Write one record as one line, whole, and fsync it. On failure (a full disk) the file is
        cut back to where it was and ResultsFileError is raised."""
        data = memoryview(json_line(record).encode("utf-8"))
        size = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(self._fd, data) :]
            if self._regular:
                os.fsync(self._fd)
        except OSError as e:
            if self._regular:
                os.ftruncate(self._fd, size)
            raise ResultsFileError(f"cannot write {self.path}: {e.strerror}") from None
        self._done.add(result_key(record["file"], record.get("sha256")))

    def close(self):
        if self._fd >= 0:
            os.close(self._fd)  # also releases the lock
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


@dataclass
class Summary:
    """What a run did: files done, failed and skipped, and its speed in audio per second."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    audio_seconds: float = 0.0
    actors: set = field(default_factory=set)  # Ray actors that returned records (Ray runs only)
    started: float = field(default_factory=time.monotonic)
    elapsed: Optional[float] = None  # set by finish()

    def count(self, record: dict, audio_seconds: float = 0.0) -> None:
        """One more record; ``audio_seconds``: its length, when the caller knows it record by record."""
        if "error" in record:
            self.failed += 1
        else:
            self.done += 1
            self.audio_seconds += audio_seconds

    def finish(self) -> "Summary":
        self.elapsed = time.monotonic() - self.started
        return self

    def line(self) -> str:
        elapsed = self.elapsed if self.elapsed is not None else time.monotonic() - self.started
        speed = self.audio_seconds / max(elapsed, 1e-9)
        on_actors = f" on {len(self.actors)} Ray actor{'s' if len(self.actors) > 1 else ''}" if self.actors else ""
        return (
            f"{self.done} done, {self.failed} failed, {self.skipped} skipped; {self.audio_seconds / 3600:.4f} h of audio "
            f"in {elapsed:.1f} s{on_actors}: {speed:.1f} s of audio per second ({speed / 3600:.4f} h/s)"
        )

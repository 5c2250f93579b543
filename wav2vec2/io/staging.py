"""A directory written whole or not at all: what ``convert`` and ``export`` write their DST through.

``check_destination(dst, overwrite, inputs)`` refuses, before anything is read or written, a DST that
would be lost or would destroy an input (an input inside DST, DST inside an input). Then
``with staged_directory(dst) as staging:`` gives a fresh directory beside DST to write into; when
the block ends normally every file is flushed and the staging directory swapped in for DST with
renames (``replace_directory``), and on every exit path the staging directory (after a swap: the
old DST) is deleted. ``recover_interrupted(dst)`` cleans up after killed runs; it runs first.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Iterator


def check_destination(dst, overwrite: bool, inputs=()) -> None:
    """Refuse, before anything is touched, a DST that would be lost or would destroy one of ``inputs``.

    Symbolic links are resolved: a DST that is a link has the directory it points to replaced.
    Inputs that are not local paths (hub repo ids) are skipped.
    """
    dst_real = Path(os.path.realpath(dst))
    for given in inputs:
        if not os.path.exists(given):
            continue  # a hub repo id: nothing local can be destroyed
        real = Path(os.path.realpath(given))
        if real == dst_real:
            raise ValueError(f"{given} and {dst} are the same place: converting in place would destroy it")
        if dst_real in real.parents:
            raise ValueError(f"{given} lies inside {dst}, which the conversion would replace")
        if real in dst_real.parents:
            raise ValueError(f"{dst} lies inside {given}: write the conversion somewhere else")
    cwd = Path.cwd().resolve()
    if dst_real == cwd or dst_real in cwd.parents or dst_real.parent == dst_real:
        raise ValueError(
            f"{dst} is (or holds) the current directory or the file system root: give a directory to create"
        )
    if dst_real.exists() and not dst_real.is_dir():
        raise FileExistsError(f"{dst} exists and is not a directory")
    if dst_real.is_dir() and any(dst_real.iterdir()) and not overwrite:
        raise FileExistsError(f"{dst} exists and is not empty (pass overwrite=True / --overwrite to replace it)")


@contextlib.contextmanager
def staged_directory(dst) -> Iterator[Path]:
    """A new staging directory beside DST; swapped in for DST when the block ends without an error."""
    final = Path(os.path.realpath(dst))
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(final), dir=final.parent))
    try:
        yield staging
        _fsync_tree(staging)
        replace_directory(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # after a swap, this is the old DST


def _fsync_tree(directory: Path) -> None:
    """Flush every file and folder below ``directory`` to disk, so that the swap publishes whole files."""
    for root, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_directory(root)


def _fsync_directory(path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows, which cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the data is flushed anyway
    finally:
        os.close(fd)


# Staging folders are named ``.<dst name>.convert-<host>-<pid>-<random>`` (``.old`` appended while a
# replaced DST waits to be deleted), so that a later run can tell those of dead runs on this host.
def _staging_prefix(final: Path) -> str:
    return f".{final.name}.convert-{socket.gethostname()}-{os.getpid()}-"


def recover_interrupted(dst) -> None:
    """Clean up after runs writing DST that were killed on this host: delete their staging folders,
    and put back a replaced DST that the two-rename fallback had parked as ``.old`` when DST is missing.
    Touches nothing else, so it runs before DST is checked."""
    final = Path(os.path.realpath(dst))
    if not final.parent.is_dir():
        return
    pattern = re.compile(re.escape(f".{final.name}.convert-{socket.gethostname()}-") + r"(\d+)-[a-z0-9_]+(\.old)?")
    for entry in final.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        if match.group(2) and not final.exists():
            os.rename(entry, final)
        else:
            shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # (on Windows, os.kill would terminate the process)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or a platform that cannot tell: keep its files
    return True


def replace_directory(staging: Path, final: Path) -> None:
    """Make ``final`` the directory ``staging`` is, whole; afterwards ``staging`` holds the old ``final``
    (or nothing, when there was none).

    On Linux the two are exchanged in one atomic step (``renameat2(RENAME_EXCHANGE)``), so ``final``
    is at every instant the old directory or the new one. Elsewhere the old one is first renamed
    aside, then the new one into place (a missing ``final`` in between is restored by the next run).
    """
    if not final.exists():
        os.rename(staging, final)
        return
    if _exchange(staging, final):
        return
    parked = staging.with_name(staging.name + ".old")
    os.rename(final, parked)
    try:
        os.rename(staging, final)
    except BaseException:
        os.rename(parked, final)
        raise
    os.rename(parked, staging)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the system or the file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without renameat2 (glibc < 2.28, musl < 1.2.?)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(b))

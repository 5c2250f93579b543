"""Resolve a local directory or a hub repo id to files on disk, through huggingface_hub's cache,
and read the JSON settings files found there."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional


def resolve_file(
    path_or_repo_id,
    filename: str,
    *,
    revision: Optional[str] = None,
    cache_dir=None,
    local_files_only: bool = False,
    token=None,
    subfolder: str = "",
    required: bool = True,
) -> Optional[Path]:
    """Path of ``filename`` inside a local directory or a hub repo.

    A local directory is used as it is. Anything else is a repo id looked up with
    ``huggingface_hub.hf_hub_download`` (which honours ``HF_HUB_OFFLINE`` and the cache). A file the
    repo does not have returns None when ``required`` is False, else raises FileNotFoundError.
    """
    path_or_repo_id = os.fspath(path_or_repo_id)
    if os.path.isdir(path_or_repo_id):
        path = Path(path_or_repo_id, subfolder, filename)
        if path.is_file():
            return path
        if required:
            raise FileNotFoundError(f"{path_or_repo_id}: no file named {os.path.join(subfolder, filename)}")
        return None
    # A repo id is "name" or "owner/name"; anything path-like that is not a directory is a mistake.
    if path_or_repo_id.startswith((".", "/", "~", os.path.sep)) or path_or_repo_id.count("/") > 1:
        raise FileNotFoundError(f"{path_or_repo_id}: no such directory (and not a hub repo id)")

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(
            hf_hub_download(
                path_or_repo_id,
                filename,
                subfolder=subfolder or None,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                token=token,
            )
        )
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"{path_or_repo_id}: no such local directory or hub repo") from None
    except RevisionNotFoundError:
        raise FileNotFoundError(f"{path_or_repo_id}: the repo has no revision {revision!r}") from None
    except EntryNotFoundError:
        if required:
            raise FileNotFoundError(f"{path_or_repo_id}: the repo has no file named {filename}") from None
        return None
    except LocalEntryNotFoundError:
        # Offline, or the file is absent from the cache: a missing optional file is not an error,
        # but say plainly when a required one cannot be had.
        if required:
            raise FileNotFoundError(
                f"{path_or_repo_id}: {filename} is not in the local cache and cannot be downloaded "
                f"(offline mode or no network)"
            ) from None
        return None


def read_json_object(path, what: Optional[str] = None) -> dict:
    """The JSON object in the file ``path``, or a ValueError naming the file.

    ``what`` names the object in the error when it is not one ("the vocabulary must be ...").
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        expected = f"the {what} must be a JSON object" if what else "expected a JSON object"
        raise ValueError(f"{path}: {expected}, got {type(data).__name__}")
    return data

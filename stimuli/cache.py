"""A content-keyed cache of finished work (trained models, activations, fitted dictionaries).

Entries are files named by the SHA-256 of a JSON description of their inputs, so a changed
input is a new key and a second run reuses what a first run finished. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$ASSAY_CACHE`` if set, else ``~/.cache/assay``."""
    env = os.environ.get("ASSAY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "assay"


# Bump when a cached stage's code changes what it computes, so old results are not reused.
CODE_REVISION = 2


def cache_key(kind: str, inputs: dict[str, Any]) -> str:
    """A file name for ``kind`` keyed by the SHA-256 of ``inputs`` (JSON, sorted keys)."""
    keyed = {**inputs, "code_revision": CODE_REVISION}
    blob = json.dumps(keyed, sort_keys=True, default=str).encode()
    return f"{kind}-{hashlib.sha256(blob).hexdigest()[:24]}.pt"


class TensorCache:
    """Save and load dicts of tensors (and plain values) under ``directory``."""

    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def path(self, kind: str, inputs: dict[str, Any]) -> Path:
        return self.directory / cache_key(kind, inputs)

    def load(self, kind: str, inputs: dict[str, Any]) -> dict | None:
        path = self.path(kind, inputs)
        if not path.is_file():
            return None
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: recompute it
            log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
            return None
        log.info("reusing %s", path.name)
        return value

    def save(self, kind: str, inputs: dict[str, Any], value: dict) -> Path:
        path = self.path(kind, inputs)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(value, tmp)
        tmp.replace(path)
        return path

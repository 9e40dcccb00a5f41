"""A content-keyed cache of finished work (trained models, activations, fitted dictionaries).

Entries are files named by the SHA-256 of a JSON description of their inputs, so a changed
input is a new key and a second run reuses what a first run finished. The inputs carry the
revision of the code that computes the entry (a source's or a method's ``revision``), so a
changed method recomputes its own work and reuses everyone else's. Writes are atomic.
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


def digest_of(value: Any) -> str:
    """SHA-256 of ``value`` as JSON with sorted keys (configs, cache inputs)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def seed_from(*names: Any) -> int:
    """A 63-bit seed from names (base seed, method id, unit id, config digest...).

    Seeds come from names, never from positions in a list, so adding a method or a unit
    leaves every other seed, and so every other image choice, unchanged.
    """
    blob = "\x1f".join(str(n) for n in names).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") >> 1


def cache_key(kind: str, inputs: dict[str, Any]) -> str:
    """A file name for ``kind`` keyed by the SHA-256 of ``inputs`` (JSON, sorted keys)."""
    return f"{kind}-{digest_of(inputs)[:24]}.pt"


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

"""What the drawing models' training loops share: seeding, content keys, and resumable
per-epoch checkpoints.

A checkpoint is keyed by everything that determines the weights (the corpus's content, the
config, the seed, the code's revision), so a finished one is reused and a changed input
trains anew. It is rewritten after every epoch with the optimizer's state; every epoch draws
its random numbers from a generator seeded by (seed, epoch), so a run interrupted after
epoch k and resumed ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stimuli.cache import TensorCache, seed_from
from stimuli.drawings.corpus import DrawingCorpus

log = logging.getLogger(__name__)


def corpus_digest(corpus: DrawingCorpus) -> str:
    """SHA-256 of a corpus's drawings and labels (what training sees), not of its name."""
    h = hashlib.sha256()
    for array in (corpus.images, corpus.labels):
        array = np.ascontiguousarray(array)
        h.update(f"{array.dtype}{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def module_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state (its weights and buffers)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``factory()`` with its initial weights drawn from ``seed``, leaving the global RNG
    as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_from(seed, "init"))
        return factory()


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of one epoch's random numbers (data order, noise, views)."""
    return torch.Generator().manual_seed(seed_from(seed, "epoch", epoch))


def cosine_lr(optimizer: torch.optim.Optimizer, base: float, step: int, total: int) -> None:
    """Set the learning rate at ``step`` of ``total``: a short linear warm-up, then cosine
    decay to a tenth of ``base`` (a function of the step, so resuming needs no state)."""
    warm = max(1, total // 20)
    decay = 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    lr = base * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * decay)
    for group in optimizer.param_groups:
        group["lr"] = lr


class Checkpoint:
    """The resumable checkpoint of one training run under ``cache_dir`` (None: the default
    cache), keyed by ``kind`` and ``inputs``."""

    def __init__(self, kind: str, inputs: dict[str, Any], cache_dir: Path | None):
        self.kind, self.inputs = kind, inputs
        self.cache = TensorCache(cache_dir)

    @property
    def path(self) -> Path:
        return self.cache.path(self.kind, self.inputs)

    def resume(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
        """Load the last saved epoch into ``model`` and ``optimizer``; returns the number of
        finished epochs (0 when there is no checkpoint) and the extra values saved."""
        entry = self.cache.load(self.kind, self.inputs)
        if entry is None:
            return 0, {}
        model.load_state_dict(entry["model"])
        optimizer.load_state_dict(entry["optimizer"])
        log.info("%s: resuming after epoch %d", self.path.name, entry["epoch"])
        return int(entry["epoch"]), entry.get("extra", {})

    def save(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
             extra: dict | None = None) -> None:
        self.cache.save(self.kind, self.inputs, {
            "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "extra": extra or {}})

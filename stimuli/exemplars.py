"""Exemplar search over an image stream, and the 2AFC split of a unit's extremes.

:class:`ExemplarSearch` streams a source once through the model and keeps, for every unit of
every (layer, kind), only the running top and bottom scores (see
:class:`~stimuli.activations.RunningExtremes`). :func:`split_exemplars` then follows
Zimmermann et al. (2023), after Borowski et al. (2021): a unit's ``n_buckets * n_batches``
most (least) activating images are sorted into ``n_buckets`` buckets of consecutive ranks;
each batch takes one random image from every bucket; some batches give the references, one
is reserved for the catch trial, and the others give one held-out query each (their
most extreme image). Letters: B images in a batch, U units.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from stimuli.activations import RunningExtremes, unit_scores
from stimuli.models import LayerCapture

log = logging.getLogger(__name__)

Encoder = Callable[[torch.Tensor], torch.Tensor]


class ExemplarSearch:
    """Running extremes of every unit in one pass over the images.

    ``units`` maps (layer, kind) to an encoder of position vectors, (M, C) -> (M, K), or None
    for the layer's channels (neurons). After :meth:`fit`, ``extremes_[(layer, kind)]`` is a
    :class:`RunningExtremes` with (U, n_extremes) top and bottom scores and image indices,
    and the scores of the ``subset`` images, (R, U), for percentile ("hard") queries.
    """

    def __init__(
        self,
        n_extremes: int,
        *,
        pooling: str = "mean",
        subset: torch.Tensor | None = None,
        device: str | torch.device = "cpu",
    ):
        self.n_extremes = n_extremes
        self.pooling = pooling
        self.subset = subset
        self.device = device

    @torch.no_grad()
    def fit(
        self,
        model: nn.Module,
        units: Mapping[tuple[str, str], Encoder | None],
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    ) -> ExemplarSearch:
        """Stream ``batches`` of (index (B,), x (B, ...)) through ``model``."""
        if self.n_extremes < 1:
            raise ValueError(f"n_extremes must be positive, not {self.n_extremes}")
        if not units:
            raise ValueError("no units to search")
        layers = sorted({layer for layer, _ in units})
        self.extremes_ = {
            key: RunningExtremes(self.n_extremes, subset=self.subset) for key in units
        }
        with LayerCapture(model, layers) as cap:
            for index, x in batches:
                model(x.to(self.device))
                for key, encoder in units.items():
                    scores = unit_scores(cap.outputs[key[0]], encoder, self.pooling)  # B, U
                    self.extremes_[key].update(index, scores)
        n_seen = {e.n_seen_ for e in self.extremes_.values()}
        self.n_images_ = n_seen.pop() if n_seen else 0
        return self


@dataclass(frozen=True)
class SplitParams:
    """How a unit's extremes become references, queries and a catch trial."""

    n_buckets: int = 9  # images per batch = references per reference batch
    n_reference_batches: int = 1
    n_query_batches: int = 10  # = queries per unit
    catch: bool = True  # reserve one batch for a catch trial
    hard_percentiles: tuple[float, float] | None = None  # e.g. (0.85, 0.95): inner queries

    @property
    def n_batches(self) -> int:
        return self.n_reference_batches + int(self.catch) + self.n_query_batches

    @property
    def n_extremes(self) -> int:
        return self.n_buckets * self.n_batches

    def validate(self) -> None:
        if self.n_buckets < 1 or self.n_reference_batches < 1 or self.n_query_batches < 1:
            raise ValueError("n_buckets, n_reference_batches and n_query_batches must be positive")
        if self.hard_percentiles is not None:
            lo, hi = self.hard_percentiles
            if not 0.5 < lo < hi < 1:
                raise ValueError(f"hard_percentiles must satisfy 0.5 < lo < hi < 1, got {(lo, hi)}")


@dataclass(frozen=True)
class ExemplarSplit:
    """Image indices of one unit's trials; references are most extreme first."""

    references_max: list[int]
    references_min: list[int]
    queries: list[tuple[int, int]]  # (max, min)
    catch: list[tuple[int, int]] = field(default_factory=list)


def _batches(ranked: np.ndarray, params: SplitParams, rng: np.random.Generator) -> np.ndarray:
    """(n_batches, n_buckets) image indices; column j holds bucket j (rank order) permuted."""
    buckets = ranked[: params.n_extremes].reshape(params.n_buckets, params.n_batches)
    shuffled = np.stack([rng.permutation(bucket) for bucket in buckets])  # n_buckets, n_batches
    return shuffled.T


def _side(ranked: np.ndarray, params: SplitParams, rng: np.random.Generator):
    batches = _batches(ranked, params, rng)
    r = params.n_reference_batches
    refs = batches[:r].flatten().tolist()
    catch = [int(batches[r, 0])] if params.catch else []
    queries = [int(b[0]) for b in batches[r + int(params.catch) :]]
    rank = {int(img): i for i, img in enumerate(ranked)}
    refs = sorted(refs + catch, key=rank.__getitem__)  # the catch image must be a reference
    return refs, queries, catch


def split_exemplars(
    top: np.ndarray,
    bottom: np.ndarray,
    params: SplitParams,
    rng: np.random.Generator,
    *,
    subset_index: np.ndarray | None = None,
    subset_scores: np.ndarray | None = None,
) -> ExemplarSplit:
    """Split one unit's ranked extremes (image indices, most extreme first) into trials.

    ``top`` and ``bottom`` need at least ``params.n_extremes`` images each. With
    ``params.hard_percentiles`` = (lo, hi), queries come instead from the images of the
    subset whose score lies between the lo and hi quantiles (max side) or between the
    1 - hi and 1 - lo quantiles (min side), and not among the extremes.
    """
    params.validate()
    for name, ranked in (("top", top), ("bottom", bottom)):
        if len(ranked) < params.n_extremes:
            raise ValueError(
                f"{name} has {len(ranked)} images, the split needs {params.n_extremes}"
            )
    refs_max, q_max, c_max = _side(np.asarray(top), params, rng)
    refs_min, q_min, c_min = _side(np.asarray(bottom), params, rng)
    if params.hard_percentiles is not None:
        if subset_index is None or subset_scores is None:
            raise ValueError("hard queries need the scores of an image subset")
        used = set(top[: params.n_extremes].tolist()) | set(bottom[: params.n_extremes].tolist())
        lo, hi = params.hard_percentiles
        q_max = _inner(subset_index, subset_scores, lo, hi, used, params.n_query_batches, rng)
        q_min = _inner(
            subset_index, subset_scores, 1 - hi, 1 - lo, used, params.n_query_batches, rng
        )
    return ExemplarSplit(
        references_max=refs_max,
        references_min=refs_min,
        queries=list(zip(q_max, q_min, strict=True)),
        catch=list(zip(c_max, c_min, strict=True)),
    )


def _inner(index, scores, lo, hi, used, n, rng) -> list[int]:
    """``n`` images of the subset with scores between the lo and hi quantiles, not in ``used``."""
    qlo, qhi = np.quantile(scores, [lo, hi])
    pool = [
        int(i) for i, s in zip(index, scores, strict=True) if qlo <= s <= qhi and int(i) not in used
    ]
    if len(pool) < n:
        raise ValueError(
            f"only {len(pool)} subset images lie between the {lo:.2f} and {hi:.2f} quantiles; "
            f"{n} hard queries need a larger subset"
        )
    return sorted(rng.choice(pool, size=n, replace=False).tolist(), key=pool.index)


def is_usable(extremes: RunningExtremes, unit: int, n_extremes: int) -> bool:
    """A unit whose extremes are separated: its n-th top score exceeds its n-th bottom score."""
    top = extremes.top_values_[unit]
    bottom = extremes.bottom_values_[unit]
    if len(top) < n_extremes:
        return False
    return bool(top[n_extremes - 1] > bottom[n_extremes - 1])

"""Natural exemplars: a unit's most and least activating images, split for the 2AFC task.

After Zimmermann et al. (2023) and Borowski et al. (2021): a unit's ``n_buckets * n_batches``
most (least) activating images are sorted into ``n_buckets`` buckets of consecutive ranks;
each batch takes one random image from every bucket; some batches give the references, one
is reserved for the catch trial (its image joins the references), and the others give one
held-out query each (their most extreme image). With ``hard_percentiles`` the queries come
from inner percentiles of a scored image subset instead.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field, model_validator

from stimuli.explain_context import ExplainContext, UnitStatistics
from stimuli.methods.base import Explanation, Method, MethodConfig, RoleKind, UnitRef
from stimuli.stimulus_set import Pair


class ExemplarsConfig(MethodConfig):
    n_buckets: int = Field(9, ge=1)  # images per batch = references per reference batch
    n_reference_batches: int = Field(1, ge=1)
    n_query_batches: int = Field(10, ge=1)  # = queries per unit
    catch: bool = True  # reserve one batch for a catch trial
    hard_percentiles: tuple[float, float] | None = None  # e.g. (0.85, 0.95): inner queries
    subset_size: int = Field(2000, ge=0)  # images whose scores are kept for hard queries

    @model_validator(mode="after")
    def _percentiles(self) -> ExemplarsConfig:
        if self.hard_percentiles is not None:
            lo, hi = self.hard_percentiles
            if not 0.5 < lo < hi < 1:
                raise ValueError(f"hard_percentiles must satisfy 0.5 < lo < hi < 1, got {(lo, hi)}")
        return self

    @property
    def n_batches(self) -> int:
        return self.n_reference_batches + int(self.catch) + self.n_query_batches

    @property
    def n_extremes(self) -> int:
        return self.n_buckets * self.n_batches


class Exemplars(Method):
    id = "exemplars"
    revision = 1
    Config = ExemplarsConfig
    description = "most and least activating natural images: references, queries, catch pairs"
    roles: ClassVar[dict[str, RoleKind]] = {
        "max_refs": "images",
        "min_refs": "images",
        "queries": "pairs",
        "catch": "pairs",
    }
    config: ExemplarsConfig

    def n_extremes(self) -> int:
        return self.config.n_extremes

    def explain(self, ctx: ExplainContext, unit: UnitRef, rng: np.random.Generator) -> Explanation:
        stats = ctx.statistics[(unit.layer, unit.source)]
        split = split_exemplars(stats, unit.index, self.config, rng)
        score = _scores(stats, unit.index)

        def ref(i: int):
            return ctx.natural(i, score.get(i))

        def pair(a: int, b: int) -> Pair:
            return Pair(max=ref(a), min=ref(b))

        out: Explanation = {
            "max_refs": [ref(i) for i in split["max_refs"]],
            "min_refs": [ref(i) for i in split["min_refs"]],
            "queries": [pair(a, b) for a, b in split["queries"]],
        }
        if split["catch"]:
            out["catch"] = [pair(a, b) for a, b in split["catch"]]
        return out


def _scores(stats: UnitStatistics, unit: int) -> dict[int, float]:
    """Image index -> the unit's score, for every image the statistics kept."""
    out = dict(zip(stats.subset_index.tolist(), stats.subset_scores[:, unit].tolist(),
                   strict=True))
    for idx, val in ((stats.top_indices, stats.top_values),
                     (stats.bottom_indices, stats.bottom_values)):
        out.update(zip(idx[unit].tolist(), val[unit].tolist(), strict=True))
    return out


def _batches(ranked: np.ndarray, cfg: ExemplarsConfig, rng: np.random.Generator) -> np.ndarray:
    """(n_batches, n_buckets) image indices; column j holds bucket j (rank order) permuted."""
    buckets = ranked[: cfg.n_extremes].reshape(cfg.n_buckets, cfg.n_batches)
    shuffled = np.stack([rng.permutation(bucket) for bucket in buckets])  # n_buckets, n_batches
    return shuffled.T


def _side(ranked: np.ndarray, cfg: ExemplarsConfig, rng: np.random.Generator):
    batches = _batches(ranked, cfg, rng)
    r = cfg.n_reference_batches
    refs = batches[:r].flatten().tolist()
    catch = [int(batches[r, 0])] if cfg.catch else []
    queries = [int(b[0]) for b in batches[r + int(cfg.catch) :]]
    rank = {int(img): i for i, img in enumerate(ranked)}
    refs = sorted(refs + catch, key=rank.__getitem__)  # the catch image must be a reference
    return refs, queries, catch


def split_exemplars(
    stats: UnitStatistics, unit: int, cfg: ExemplarsConfig, rng: np.random.Generator
) -> dict[str, list]:
    """Image indices of one unit's references (most extreme first), query and catch pairs.

    The unit needs ``cfg.n_extremes`` extremes on each side. With ``cfg.hard_percentiles`` =
    (lo, hi), queries come from the subset images whose score lies between the lo and hi
    quantiles (max side) or between the 1 - hi and 1 - lo quantiles (min side), and not
    among the extremes.
    """
    top = stats.top_indices[unit].numpy()
    bottom = stats.bottom_indices[unit].numpy()
    for name, ranked in (("top", top), ("bottom", bottom)):
        if len(ranked) < cfg.n_extremes:
            raise ValueError(f"{name} has {len(ranked)} images, the split needs {cfg.n_extremes}")
    refs_max, q_max, c_max = _side(top, cfg, rng)
    refs_min, q_min, c_min = _side(bottom, cfg, rng)
    if cfg.hard_percentiles is not None:
        index = stats.subset_index.numpy()
        scores = stats.subset_scores[:, unit].numpy()
        used = set(top[: cfg.n_extremes].tolist()) | set(bottom[: cfg.n_extremes].tolist())
        lo, hi = cfg.hard_percentiles
        q_max = _inner(index, scores, lo, hi, used, cfg.n_query_batches, rng)
        q_min = _inner(index, scores, 1 - hi, 1 - lo, used, cfg.n_query_batches, rng)
    return {
        "max_refs": refs_max,
        "min_refs": refs_min,
        "queries": list(zip(q_max, q_min, strict=True)),
        "catch": list(zip(c_max, c_min, strict=True)),
    }


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

"""Streaming activations: spatial pooling, position samples for dictionary fitting, and
running extremes per unit.

Nothing here holds a dataset's activation tensor: batches are reduced as they stream (to a
bounded sample of position vectors, or to running top-k / bottom-k scores per unit).
Letters: N images (B in a batch), C channels, H, W spatial, M position vectors, U units.
Everything here takes channels-first maps as :class:`~stimuli.models.LayerCapture` gives
them: (N, C, H, W), (N, C), and transformer tokens (N, T, C) as (N, C, T', 1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from stimuli.models import LayerCapture

log = logging.getLogger(__name__)

POOLINGS = ("mean", "max")

Encoder = Callable[[torch.Tensor], torch.Tensor]  # (M, C) -> (M, K)


def _check_channels_first(acts: torch.Tensor) -> None:
    if acts.ndim not in (2, 4):
        raise ValueError(
            f"expected activations (N, C) or (N, C, H, W), got shape {tuple(acts.shape)}; "
            "tokens (N, T, C) are read through LayerCapture, which gives (N, C, T', 1)"
        )


def pool(acts: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """Spatial pooling: (N, C, H, W) -> (N, C), so over tokens for (N, C, T', 1); (N, C) is
    returned as it is."""
    if how not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {how!r}")
    _check_channels_first(acts)
    if acts.ndim == 2:
        return acts
    flat = acts.flatten(2)  # N, C, H*W (much faster than reducing over two dims on CPU)
    return flat.mean(dim=2) if how == "mean" else flat.amax(dim=2)


def to_positions(acts: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N*H*W, C) position vectors (one per token for (N, C, T', 1));
    (N, C) is returned as it is."""
    _check_channels_first(acts)
    if acts.ndim == 2:
        return acts
    n, c, h, w = acts.shape
    return acts.permute(0, 2, 3, 1).reshape(n * h * w, c)  # N*H*W, C


def unit_scores(
    acts: torch.Tensor,
    encoder: Encoder | None,
    pooling: str,
    *,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pooled unit activations (N, U): channels if ``encoder`` is None, else dictionary codes.

    With an encoder, every position vector is encoded, (N*H*W, C) -> (N*H*W, K), the codes are
    laid back out as (N, K, H, W) and pooled like channels. ``positions`` is
    ``to_positions(acts)`` if the caller has it (a copy of the layer, shared by its encoders).
    """
    if encoder is None:
        return pool(acts, pooling)
    if acts.ndim == 2:
        return encoder(acts)  # N, K
    n, _, h, w = acts.shape
    codes = encoder(to_positions(acts) if positions is None else positions)  # N*H*W, K
    codes = codes.reshape(n, h, w, -1).permute(0, 3, 1, 2)  # N, K, H, W
    return pool(codes, pooling)


@torch.no_grad()
def sample_positions(
    model: nn.Module,
    layers: Sequence[str],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    per_image: int,
    max_samples: int,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
    cls_token: bool = True,
) -> dict[str, torch.Tensor]:
    """Up to ``max_samples`` position vectors per layer, ``per_image`` random ones per image
    (a position is a spatial place, or a token; the CLS token only if ``cls_token``).

    Returns {layer: float32 (M, C)} on the CPU. Memory is bounded by ``max_samples``.
    """
    if per_image < 1 or max_samples < 1:
        raise ValueError("per_image and max_samples must be positive")
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    count = 0
    with LayerCapture(model, layers, cls_token=cls_token) as cap:
        for _, x in batches:
            model(x.to(device))
            take = 0
            for name in layers:
                acts = cap.outputs[name]
                b = acts.shape[0]
                if acts.ndim == 2:
                    rows = acts  # B, C
                else:
                    hw = acts.shape[2] * acts.shape[3]
                    k = min(per_image, hw)
                    pick = torch.rand(b, hw, generator=generator).argsort(dim=1)[:, :k]  # B, k
                    flat = acts.flatten(2)  # B, C, H*W
                    rows = torch.gather(
                        flat, 2, pick.to(flat.device)[:, None, :].expand(-1, flat.shape[1], -1)
                    )
                    rows = rows.permute(0, 2, 1).reshape(-1, flat.shape[1])  # B*k, C
                rows = rows[: max_samples - count].float().cpu()
                chunks[name].append(rows)
                take = len(rows)
            count += take
            if count >= max_samples:
                break
    return {name: torch.cat(parts) for name, parts in chunks.items()}


class RunningExtremes:
    """Running top-k and bottom-k scores per unit over a stream of batches.

    ``update(index, scores)`` with index int64 (B,) and scores (B, U). Keeps only
    ``top_values_`` / ``top_indices_`` and ``bottom_values_`` / ``bottom_indices_``, each (U, k),
    ordered most extreme first (ties broken by :func:`tie_rank`), and the scores of a
    fixed ``subset`` of image indices, ``subset_scores_`` (R, U), for percentile queries.
    Memory is O(U * (k + R)) whatever the number of images (:meth:`nbytes`).
    """

    def __init__(self, k: int, *, subset: torch.Tensor | None = None):
        self.k = k
        self.subset = subset

    def _init(self, n_units: int, dtype: torch.dtype, device: torch.device) -> None:
        if self.k < 1:
            raise ValueError(f"k must be positive, not {self.k}")
        self._top = _Extremes(self.k, n_units, dtype, device)
        self._bottom = _Extremes(self.k, n_units, dtype, device)
        subset = torch.empty(0, dtype=torch.int64) if self.subset is None else self.subset
        self.subset_index_ = torch.sort(subset.to(torch.int64)).values.to(device)  # R
        self._subset_rows = {int(i): row for row, i in enumerate(self.subset_index_.tolist())}
        self.subset_scores_ = torch.full(
            (len(subset), n_units), float("nan"), dtype=dtype, device=device
        )
        self.n_seen_ = 0

    @property
    def top_values_(self) -> torch.Tensor:
        return self._top.result()[0]

    @property
    def top_indices_(self) -> torch.Tensor:
        return self._top.result()[1]

    @property
    def bottom_values_(self) -> torch.Tensor:
        return self._bottom.result()[0]

    @property
    def bottom_indices_(self) -> torch.Tensor:
        return self._bottom.result()[1]

    def nbytes(self) -> int:
        """The memory the running state holds, in bytes (its buffers and the subset's scores)."""
        subset = self.subset_scores_.numel() * self.subset_scores_.element_size()
        return self._top.nbytes() + self._bottom.nbytes() + subset

    @torch.no_grad()
    def update(self, index: torch.Tensor, scores: torch.Tensor) -> RunningExtremes:
        if scores.ndim != 2 or index.shape != (scores.shape[0],):
            raise ValueError(
                "expected index (B,) and scores (B, U), got "
                f"{tuple(index.shape)} and {tuple(scores.shape)}"
            )
        if not hasattr(self, "_top"):
            self._init(scores.shape[1], scores.dtype, scores.device)
        index = index.to(scores.device)
        n_units = scores.shape[1]
        idx = index[None, :].expand(n_units, -1)  # U, B
        vals = scores.T  # U, B
        ordered = _ordered_bits(vals) * (1 << 32)  # U, B; the same keys as order_keys
        tie = ((1 << 32) - 1 - tie_rank(index))[None, :]  # 1, B
        self._top.add(vals, idx, ordered + tie)
        self._bottom.add(vals, idx, tie - ordered)
        if self._subset_rows:  # a dict lookup: torch.searchsorted is slow on the CPU here
            rows = self._subset_rows
            hits = [(j, rows[i]) for j, i in enumerate(index.tolist()) if i in rows]
            if hits:
                cols, subset_rows = zip(*hits, strict=True)
                self.subset_scores_[list(subset_rows)] = scores[list(cols)]
        self.n_seen_ += int(index.shape[0])
        return self


class _Extremes:
    """One side of :class:`RunningExtremes`: the k values of each unit with the largest keys.

    Merged lazily: candidates wait next to the kept k in buffers of 4 k columns allocated
    once, and one top-k over kept and waiting runs when the buffers are full or read (a
    top-k of k out of k + B per batch costs about as much as one of k out of 4 k). Once k
    are kept, only candidates above a unit's k-th key wait at all; the kept k-th only rises,
    so the test stays valid. The result is the top-k of every key seen, whatever the merging
    schedule. Nothing long-lived is allocated per batch (small tensors kept across batches
    fragment the heap: the process's memory then grows with the stream).
    """

    def __init__(self, k: int, n_units: int, dtype: torch.dtype, device: torch.device):
        self.k = k
        width = 4 * k
        self._values = torch.empty(n_units, width, dtype=dtype, device=device)  # U, 4k
        self._indices = torch.empty(n_units, width, dtype=torch.int64, device=device)
        self._keys = torch.empty(n_units, width, dtype=torch.int64, device=device)
        self._kept = self._end = 0  # columns [0, kept): kept, by key; [kept, end): waiting

    def add(self, values: torch.Tensor, indices: torch.Tensor, keys: torch.Tensor) -> None:
        """Candidates (U, B) each: scores, image indices, order keys (unique)."""
        if self._kept == self.k:  # full: only keys beating a unit's k-th can enter
            m = int((keys > self._keys[:, self.k - 1 : self.k]).sum(dim=1).max())
            if m == 0:
                return
            if m < keys.shape[1]:
                keys, pick = torch.topk(keys, m, dim=1, sorted=False)  # U, m
                values, indices = values.gather(1, pick), indices.gather(1, pick)
        b = keys.shape[1]
        if self._end + b > self._keys.shape[1]:
            self._merge()
        if self._end + b > self._keys.shape[1]:  # wider than the buffers: merge it at once
            self._merge(values, indices, keys)
            return
        self._values[:, self._end : self._end + b] = values
        self._indices[:, self._end : self._end + b] = indices
        self._keys[:, self._end : self._end + b] = keys
        self._end += b

    def _merge(self, *extra: torch.Tensor) -> None:
        """Keep the top k of kept, waiting and ``extra`` (values, indices, keys (U, B))."""
        end = self._end
        keys, values, indices = self._keys[:, :end], self._values[:, :end], self._indices[:, :end]
        if extra:
            values, indices, keys = (
                torch.cat([values, extra[0]], dim=1),
                torch.cat([indices, extra[1]], dim=1),
                torch.cat([keys, extra[2]], dim=1),
            )
        n = min(self.k, keys.shape[1])
        top = torch.topk(keys, n, dim=1, sorted=True)
        self._values[:, :n] = values.gather(1, top.indices)
        self._indices[:, :n] = indices.gather(1, top.indices)
        self._keys[:, :n] = top.values
        self._kept = self._end = n

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self._values, self._indices, self._keys))

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, indices), (U, k) each, most extreme first: copies, as the buffers change."""
        if self._end > self._kept:
            self._merge()
        return self._values[:, : self._kept].clone(), self._indices[:, : self._kept].clone()


TIE_MULTIPLIER = 2654435761  # Knuth's multiplicative hash: a bijection of 32-bit integers


def tie_rank(index: torch.Tensor) -> torch.Tensor:
    """A fixed pseudo-random rank of image indices (< 2**31) for breaking ties in scores."""
    return (index * TIE_MULTIPLIER) % (1 << 32)


def _ordered_bits(values: torch.Tensor) -> torch.Tensor:
    """float -> int64 with the same order (float32 bits mapped to a monotone integer)."""
    bits = values.float().contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def order_keys(values: torch.Tensor, index: torch.Tensor, *, descending: bool) -> torch.Tensor:
    """Unique int64 keys whose descending order is the order of ``values`` (descending or
    ascending), ties broken by the smaller :func:`tie_rank` of ``index`` (so that many tied
    scores, e.g. zeros after a ReLU, do not all favour the first images of the dataset):
    (U, B) float, (U, B) int64 -> (U, B).

    The float32 bits are mapped to an order-preserving int32, shifted above the 32-bit rank.
    """
    ordered = _ordered_bits(values)
    return (ordered if descending else -ordered) * (1 << 32) + ((1 << 32) - 1 - tie_rank(index))

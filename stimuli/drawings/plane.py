"""The originality-recognizability plane of Boutin et al.: one point per drawer (a model,
a regularizer, or people), originality on x and recognizability on y, the human reference
highlighted, so that how close a model's drawings come to people's is read off a figure.

Letters: N drawings, C categories, S side in pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stimuli.drawings.critics import OriginalityCritic, RecognizabilityCritic

if TYPE_CHECKING:
    from matplotlib.axes import Axes

HUMAN = "human"


def mean_by_category(values: np.ndarray, labels: np.ndarray) -> float:
    """The mean over categories of each category's mean of ``values`` (N,), so that a
    category with more drawings weighs no more (LatentMatters averages per category)."""
    values, labels = np.asarray(values, dtype=float), np.asarray(labels)
    if values.shape != labels.shape or values.ndim != 1:
        raise ValueError(f"values {values.shape} and labels {labels.shape} must be (N,)")
    if len(values) == 0:
        raise ValueError("no values to average")
    _, index = np.unique(labels, return_inverse=True)
    return float((np.bincount(index, values) / np.bincount(index)).mean())


def plane_point(originality: OriginalityCritic, recognizability: RecognizabilityCritic,
                drawings: np.ndarray, labels: np.ndarray, exemplars: np.ndarray, *,
                ways: int = 20, episodes: int = 10, seed: int = 0) -> tuple[float, float]:
    """A drawer's point: the mean originality and the recognizability (both averaged per
    category) of its drawings (N, S, S) of the categories ``labels`` (N,) that index
    ``exemplars`` (C, S, S)."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = originality.originality(drawings, exemplars[labels])
    result = recognizability.recognizability(drawings, labels, exemplars, ways=ways,
                                             episodes=episodes, seed=seed)
    return mean_by_category(scores, labels), mean_by_category(result.correct, labels)


def plane(points: dict[str, tuple[float, float]], path_or_axes: str | Path | Axes, *,
          reference: str = HUMAN, title: str | None = None) -> Path | Axes:
    """Draw ``points`` (name -> (originality, recognizability)) with ``reference``
    highlighted; write a figure to a path (returned) or draw on the axes given (returned).

    matplotlib is imported here, not at the top, so that importing the critics (as the
    stimulus build and anything serving its sets do) never loads it."""
    from matplotlib.axes import Axes as _Axes
    from matplotlib.figure import Figure

    if not points:
        raise ValueError("no points to draw")
    if isinstance(path_or_axes, _Axes):
        ax, figure = path_or_axes, None
    else:
        figure = Figure(figsize=(4.5, 4), layout="constrained")
        ax = figure.add_subplot()
    for name, (x, y) in points.items():
        if name == reference:
            ax.scatter([x], [y], s=160, marker="*", color="crimson", zorder=3,
                       edgecolors="black", linewidths=0.6)
        else:
            ax.scatter([x], [y], s=40, color="tab:blue", zorder=2)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8,
                    fontweight="bold" if name == reference else "normal")
    ax.set_xlabel("originality (distance to the exemplar, SimCLR features)")
    ax.set_ylabel("recognizability (one-shot accuracy)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if figure is None:
        return ax
    path = Path(path_or_axes)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path

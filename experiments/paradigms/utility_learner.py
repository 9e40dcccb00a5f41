"""A simulated participant of the utility benchmark: it learns to predict a model's decisions
from what the learning phase shows, and nothing else.

It sees an image as a coarse grid of cells, each described by its mean colour and its
contrast (the features a glance gives). From the learning trials it fits a ridge logistic
regression of the model's decisions on those features; where the learning trials show maps,
it also learns *where* the model looks (the maps' mass per cell) and loosens the prior on the
features of those cells, tightening it elsewhere: an explanation helps exactly as much as it
points at what the model uses. Evaluation answers are its prediction, made noisy by its
skill. It never sees an evaluation trial's key.
"""

from __future__ import annotations

from typing import Any

import numpy as np

GRID = 4  # cells per side
PER_CELL = 4  # mean R, G, B and the luminance's standard deviation
FOCUS = 0.9  # how far the maps' attention replaces a uniform prior over cells
RIDGE = 1.0  # prior precision of a feature when attention is uniform


def cell_features(pixels: np.ndarray, grid: int = GRID) -> np.ndarray:
    """(H, W, 3) in [0, 1] -> (grid * grid * PER_CELL,) cell colours and contrasts."""
    h, w = pixels.shape[:2]
    rows = np.linspace(0, h, grid + 1).round().astype(int)
    cols = np.linspace(0, w, grid + 1).round().astype(int)
    out = []
    for r0, r1 in zip(rows[:-1], rows[1:], strict=True):
        for c0, c1 in zip(cols[:-1], cols[1:], strict=True):
            cell = pixels[r0:r1, c0:c1]
            out.extend(cell.reshape(-1, 3).mean(axis=0))
            out.append(cell.mean(axis=2).std())
    return np.asarray(out, dtype=float)


def cell_mass(heat: np.ndarray, grid: int = GRID) -> np.ndarray:
    """(H, W[, 3]) map -> (grid * grid,) share of its mass in each cell (sums to 1)."""
    heat = heat.mean(axis=2) if heat.ndim == 3 else heat
    h, w = heat.shape
    rows = np.linspace(0, h, grid + 1).round().astype(int)
    cols = np.linspace(0, w, grid + 1).round().astype(int)
    mass = np.array([heat[r0:r1, c0:c1].sum()
                     for r0, r1 in zip(rows[:-1], rows[1:], strict=True)
                     for c0, c1 in zip(cols[:-1], cols[1:], strict=True)])
    total = mass.sum()
    return mass / total if total > 0 else np.full(grid * grid, 1.0 / (grid * grid))


def ridge_logistic(x: np.ndarray, y: np.ndarray, precision: np.ndarray,
                   steps: int = 25) -> tuple[np.ndarray, float]:
    """Weights and intercept of a logistic regression with a Gaussian prior of the given
    per-feature precision (the intercept is free), by Newton's method."""
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    penalty = np.append(precision, 1e-6)
    beta = np.zeros(d + 1)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -30, 30)))
        grad = design.T @ (p - y) + penalty * beta
        hess = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta[:-1], float(beta[-1])


class Learner:
    """A responder (see ``Paradigm.participant``): call it with each trial's view in order."""

    def __init__(self, rng: np.random.Generator, skill: float, pixels: Any):
        self.rng = rng
        self.skill = skill
        self.pixels = pixels
        self.x: list[np.ndarray] = []
        self.y: list[int] = []
        self.attention = np.zeros(GRID * GRID)
        self.n_maps = 0
        self._fit: tuple[np.ndarray, float, np.ndarray, np.ndarray] | None = None

    def __call__(self, view: dict[str, Any]) -> dict[str, Any]:
        if view["phase"] == "learning":
            self.learn(view)
            return {"choice": None}
        return {"choice": self.predict(view)}

    def learn(self, view: dict[str, Any]) -> None:
        self.x.append(cell_features(self.pixels(view["image"])))
        self.y.append(int(view["decision"]))
        if view.get("map"):
            self.attention += cell_mass(self.pixels(view["map"]))
            self.n_maps += 1
        self._fit = None

    def precision(self) -> np.ndarray:
        """Per feature: uniform without maps; with maps, loose where they put their mass."""
        cells = GRID * GRID
        share = np.full(cells, 1.0 / cells)
        if self.n_maps:
            share = (1 - FOCUS) * share + FOCUS * self.attention / self.attention.sum()
        return np.repeat(RIDGE / (cells * share), PER_CELL)

    def predict(self, view: dict[str, Any]) -> int:
        if not self.x:
            return int(self.rng.integers(len(view["classes"])))
        if self._fit is None:
            x = np.stack(self.x)
            mean, std = x.mean(axis=0), x.std(axis=0) + 0.02
            w, b = ridge_logistic((x - mean) / std, np.asarray(self.y, float), self.precision())
            self._fit = (w, b, mean, std)
        w, b, mean, std = self._fit
        z = (cell_features(self.pixels(view["image"])) - mean) / std
        logit = float(z @ w + b)
        return int(self.skill * logit + self.rng.logistic() > 0)

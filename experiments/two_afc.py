"""The 2AFC exemplar paradigm (Borowski et al. 2021; Zimmermann et al. 2021/2023).

A pure function turns (study spec, stimulus manifest, cell, rng) into a trial plan. The plan
is stored with the session, so the server scores every response from it and a reload
resumes at the same trials.

Trial indices: practice attempt ``a`` (1-based) of item ``j`` has index ``(a-1)*P + j``, so
repeated practice blocks never collide; main and catch trials follow from ``P * max_attempts``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from experiments.study import StudySpec
from stimuli.stimulus_set import QueryPair, StimulusManifest, Unit

TrialKind = Literal["practice", "main", "catch"]


class PlanError(ValueError):
    """The stimulus set cannot supply what the study asks for."""


@dataclass(frozen=True)
class Trial:
    index: int
    kind: TrialKind
    block: int  # 0 for practice, 1.. for main blocks
    attempt: int  # practice attempt (1-based); 1 for main and catch trials
    unit_id: str
    unit_kind: str
    layer: str
    ref_max: tuple[str, ...]
    ref_min: tuple[str, ...]
    query_a: str
    query_b: str
    correct: Literal["a", "b"]


@dataclass(frozen=True)
class Cell:
    """An assignment cell: a between-subject condition and a within-subject block order."""

    condition: str
    block_order: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.condition + ("|" + ",".join(self.block_order) if self.block_order else "")


def _units(spec: StudySpec, manifest: StimulusManifest, condition: str) -> list[Unit]:
    kinds = next(c.unit_kinds for c in spec.conditions if c.name == condition)
    return [u for u in manifest.units if u.kind in kinds]


def _block_values(spec: StudySpec, units: list[Unit]) -> list[str]:
    if spec.trials.block_by is None:
        return []
    return sorted({getattr(u, spec.trials.block_by) for u in units})


def cells(spec: StudySpec, manifest: StimulusManifest) -> list[Cell]:
    """All cells, in a fixed order; block orders are the rotations of a Latin square."""
    out = []
    for condition in spec.conditions:
        values = _block_values(spec, _units(spec, manifest, condition.name))
        orders = [tuple(values[i:] + values[:i]) for i in range(len(values))] or [()]
        out.extend(Cell(condition.name, order) for order in orders)
    return out


def check_feasible(spec: StudySpec, manifest: StimulusManifest) -> None:
    """Raise PlanError naming the shortfall, before anything is launched."""
    for condition in spec.conditions:
        units = _units(spec, manifest, condition.name)
        if not units:
            raise PlanError(
                f"condition {condition.name!r}: the stimulus set has no units of kind "
                f"{', '.join(condition.unit_kinds)}"
            )
        available = sum(len(u.queries) for u in units) - spec.practice.trials
        if available < spec.trials.main:
            raise PlanError(
                f"condition {condition.name!r}: the stimulus set has {available} query pairs "
                f"after practice, but trials.main asks for {spec.trials.main}"
            )
        if spec.trials.catch_rate > 0 and not any(u.catch for u in units):
            raise PlanError(
                f"condition {condition.name!r}: catch_rate > 0 but no unit has catch items"
            )
        n_blocks = len(_block_values(spec, units)) or spec.trials.blocks
        if spec.trials.main < n_blocks:
            raise PlanError(
                f"trials.main ({spec.trials.main}) is smaller than the number of blocks"
            )


def _shown(references: list[str], k: int, keep: str | None) -> tuple[str, ...]:
    """The first k references; a catch image beyond them takes the last place."""
    shown = references[:k]
    if keep is not None and keep not in shown:
        shown = [*shown[:-1], keep]
    return tuple(shown)


def _make(
    rng: np.random.Generator, spec: StudySpec, unit: Unit, pair: QueryPair, *, catch: bool = False
) -> dict:
    k = spec.two_afc.n_references
    max_first = bool(rng.integers(2))
    return dict(
        unit_id=unit.id,
        unit_kind=unit.kind,
        layer=unit.layer,
        ref_max=_shown(unit.references.max, k, pair.max if catch else None),
        ref_min=_shown(unit.references.min, k, pair.min if catch else None),
        query_a=pair.max if max_first else pair.min,
        query_b=pair.min if max_first else pair.max,
        correct="a" if max_first else "b",
    )


def plan_trials(
    spec: StudySpec, manifest: StimulusManifest, cell: Cell, rng: np.random.Generator
) -> list[Trial]:
    """Every trial a participant in ``cell`` may see: practice attempts, then main and catch."""
    units = _units(spec, manifest, cell.condition)
    order = rng.permutation(len(units))
    units = [units[i] for i in order]

    # Practice: the last query pair of the first P units (round-robin if fewer units).
    n_practice = spec.practice.trials
    practice_pairs = [(units[j % len(units)], j // len(units)) for j in range(n_practice)]
    used = {(u.id, len(u.queries) - 1 - r) for u, r in practice_pairs}
    practice = [(u, u.queries[len(u.queries) - 1 - r]) for u, r in practice_pairs]

    # Main: round-robin over units so that each unit appears as evenly as the set allows.
    pool: list[tuple[Unit, QueryPair]] = []
    for depth in range(max(len(u.queries) for u in units)):
        for u in units:
            if depth < len(u.queries) and (u.id, depth) not in used:
                pool.append((u, u.queries[depth]))
    n_main = spec.trials.main
    values = list(cell.block_order)
    if values:
        attr = spec.trials.block_by
        per_block = [n_main // len(values) + (i < n_main % len(values)) for i in range(len(values))]
        blocks = []
        for value, n in zip(values, per_block, strict=True):
            chosen = [(u, p) for u, p in pool if getattr(u, attr) == value][:n]
            if len(chosen) < n:
                raise PlanError(f"block {value!r}: only {len(chosen)} query pairs for {n} trials")
            blocks.append(chosen)
    else:
        chosen = pool[:n_main]
        n_blocks = spec.trials.blocks
        bounds = np.linspace(0, n_main, n_blocks + 1).round().astype(int)
        shuffled = [chosen[i] for i in rng.permutation(len(chosen))]
        blocks = [shuffled[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    # Catch trials: spread over blocks, each from a unit of its block (same layer or kind).
    n_catch = round(spec.trials.catch_rate * n_main)
    catch_block = rng.integers(len(blocks), size=n_catch)

    trials: list[Trial] = []
    for attempt in range(1, spec.practice.max_attempts + 1):
        for j, (unit, pair) in enumerate(practice):
            index = (attempt - 1) * n_practice + j
            fields = _make(rng, spec, unit, pair)
            trials.append(Trial(index=index, kind="practice", block=0, attempt=attempt, **fields))
    index = n_practice * spec.practice.max_attempts
    for b, block in enumerate(blocks, start=1):
        items = [("main", u, p) for u, p in block]
        block_units = {u.id for u, _ in block}
        catch_units = [u for u in units if u.catch and u.id in block_units] or [
            u for u in units if u.catch
        ]
        for n, _ in enumerate(np.flatnonzero(catch_block == b - 1)):
            unit = catch_units[n % len(catch_units)]
            items.append(("catch", unit, unit.catch[(n // len(catch_units)) % len(unit.catch)]))
        for i in rng.permutation(len(items)):
            kind, unit, pair = items[i]
            fields = _make(rng, spec, unit, pair, catch=kind == "catch")
            trials.append(Trial(index=index, kind=kind, block=b, attempt=1, **fields))
            index += 1
    return trials


def trial_to_dict(trial: Trial) -> dict:
    data = asdict(trial)
    data["ref_max"] = list(trial.ref_max)
    data["ref_min"] = list(trial.ref_min)
    return data


def trial_from_dict(data: dict) -> Trial:
    return Trial(**{**data, "ref_max": tuple(data["ref_max"]), "ref_min": tuple(data["ref_min"])})

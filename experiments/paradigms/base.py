"""What a paradigm is: the contract every task plugin (2AFC, intruder detection, ...) fulfils.

A paradigm owns its options (the study file's ``[paradigm]`` table, told apart by ``id``),
the roles it needs from the stimulus manifest, its feasibility check, cells, trial plan, the
view the browser receives, the answer it accepts and its scoring, its export columns, a
simulated participant's answer, its jsPsych plugin and, optionally, a section of the report.
Everything here is a pure function of (study spec, manifest, cell, numpy Generator): no
Flask, no database.

A plan is a list of :class:`Trial`. Trial indices: practice attempt ``a`` (1-based) of item
``j`` has index ``(a-1)*P + j``, so repeated practice blocks never collide; main and catch
trials follow from ``P * max_attempts``. :func:`arrange` builds that structure for any
paradigm from per-unit items.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from stimuli.stimulus_set import Entry, EntryType, StimulusManifest

if TYPE_CHECKING:  # the report's types: the participant server never imports them
    import pandas as pd
    from matplotlib.figure import Figure

    from experiments.study import Condition, StudySpec

# "learning": shown to learn from (a model's decisions with their explanation), answered
# by moving on; stored like main trials but not scored as part of the task
TrialKind = Literal["practice", "main", "catch", "learning"]
ImageFeatures = Callable[[str], np.ndarray]  # image URL -> a feature vector (mean RGB, 0-255)
ImagePixels = Callable[[str], np.ndarray]  # image URL -> its pixels (H, W, 3) in [0, 1]
Responder = Callable[[dict[str, Any]], dict[str, Any]]  # a trial's view -> an answer


class PlanError(ValueError):
    """The stimulus set cannot supply what the study asks for."""


class ParadigmOptions(BaseModel):
    """Options every paradigm has; a paradigm's own ``Options`` adds to them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    response_lock_ms: int = Field(default=1500, ge=0, le=60_000)
    feedback: bool = False  # feedback on main trials too (practice always has it)
    progress: bool = True


class Answer(BaseModel):
    """What the browser sends for one trial; a paradigm's own ``Answer`` says what. Strict:
    ``"2"``, ``true`` or ``2.0`` for an integer is a client bug to refuse, not to coerce."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


@dataclass(frozen=True)
class Trial:
    """One planned trial. ``stimuli`` is what the paradigm shows (image digests and the
    like), ``key`` what it scores an answer against; both are stored with the session."""

    index: int
    kind: TrialKind
    block: int  # 0 for practice, 1.. for main blocks
    attempt: int  # practice attempt (1-based); 1 for main and catch trials
    unit_id: str
    source: str
    layer: str
    stimuli: dict[str, Any]
    key: Any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Cell:
    """An assignment cell: a between-subject condition and a within-subject block order."""

    condition: str
    block_order: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.condition + ("|" + ",".join(self.block_order) if self.block_order else "")


@dataclass(frozen=True)
class Section:
    """A paradigm's own part of the report: paragraphs, tables and figures, in that order."""

    title: str
    paragraphs: tuple[str, ...] = ()
    tables: tuple[tuple[str, pd.DataFrame], ...] = ()
    figures: tuple[tuple[str, Figure], ...] = ()


@dataclass(frozen=True)
class Item:
    """One trial's content before it is placed: what is shown and the answer key."""

    stimuli: dict[str, Any]
    key: Any


class Paradigm:
    """Base class of paradigm plugins; subclasses set the class attributes and implement the
    methods that raise NotImplementedError."""

    id: ClassVar[str]
    revision: ClassVar[int]  # bump when its plans, views or scoring change
    Options: ClassVar[type[ParadigmOptions]]
    Answer: ClassVar[type[Answer]]
    description: ClassVar[str] = ""
    # role -> required; a condition maps each role to a method of the manifest (or "none")
    roles: ClassVar[dict[str, bool]]
    # roles a condition may fill from several methods at once (shown side by side)
    combinable: ClassVar[frozenset[str]] = frozenset()
    plugin: ClassVar[str]  # its jsPsych plugin: server/static/js/paradigms/<plugin>.js
    export_columns: ClassVar[tuple[str, ...]]  # from export_row, after the common columns
    # the manifest entries it shows: units (2AFC, intruder) or drawing categories
    entry_type: ClassVar[EntryType] = "unit"
    # whether it plans catch trials at all (a task without an obvious answer to test
    # attention on has none, whatever trials.catch_rate says)
    catch_trials: ClassVar[bool] = True
    # whether it has practice trials (a task whose first phase teaches it has none)
    practice: ClassVar[bool] = True
    # an export column whose levels the report compares by a GLMM beside the conditions'
    # (e.g. the drawer of a drawing), and the level it contrasts the others against
    factor: ClassVar[str | None] = None
    factor_reference: ClassVar[str | None] = None
    # a numeric export column the factor's GLMM crosses it with (e.g. the session number,
    # for learning curves): correct ~ factor * factor_by
    factor_by: ClassVar[str | None] = None

    @property
    def script(self) -> str:
        """Its jsPsych plugin, under server/static/js/paradigms/."""
        return f"{self.plugin}.js"

    @property
    def stylesheet(self) -> str:
        """Its plugin's layout, under server/static/css/paradigms/."""
        return f"{self.plugin}.css"

    # -- launching ------------------------------------------------------------------------
    def unit_roles(self, condition: Condition) -> list[tuple[str, str]]:
        """The (method, role) pairs every unit a condition shows must have; units without
        them are left out of the condition. By default those of the required roles."""
        return [(method, role) for role, required in self.roles.items() if required
                for method in condition.methods_for(role)]

    def check_feasible(self, spec: StudySpec, manifest: StimulusManifest) -> None:
        """Raise PlanError naming the shortfall, before anything is launched."""
        raise NotImplementedError

    def cells(self, spec: StudySpec, manifest: StimulusManifest) -> list[Cell]:
        """All cells in a fixed order; block orders are the rotations of a Latin square."""
        out = []
        for condition in spec.conditions:
            values = block_values(spec, condition_entries(spec, manifest, condition))
            orders = [tuple(values[i:] + values[:i]) for i in range(len(values))] or [()]
            out.extend(Cell(condition.name, order) for order in orders)
        return out

    def plan(self, spec: StudySpec, manifest: StimulusManifest, cell: Cell,
             rng: np.random.Generator) -> list[Trial]:
        """Every trial a participant in ``cell`` may see: practice attempts, main, catch."""
        raise NotImplementedError

    # -- running ------------------------------------------------------------------------
    def view(self, trial: dict[str, Any], image_url: Callable[[str], str]) -> dict[str, Any]:
        """What the browser's plugin needs to show a stored trial (never its key)."""
        raise NotImplementedError

    def score(self, key: Any, answer: Answer) -> float:
        """1.0 for a correct answer, 0.0 for a wrong one."""
        raise NotImplementedError

    def chance(self, options: ParadigmOptions) -> float:
        """The proportion correct of a participant who guesses."""
        raise NotImplementedError

    # -- data ---------------------------------------------------------------------------
    def export_row(self, trial: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        """The paradigm's columns (``export_columns``) of one stored trial."""
        raise NotImplementedError

    def simulate(self, view: dict[str, Any], options: ParadigmOptions, rng: np.random.Generator,
                 skill: float, features: ImageFeatures) -> dict[str, Any]:
        """A simulated participant's answer: a noisy observer of the images' ``features``,
        so that its accuracy depends on the stimuli as a person's would."""
        raise NotImplementedError

    def participant(self, options: ParadigmOptions, rng: np.random.Generator, skill: float,
                    pixels: ImagePixels) -> Responder:
        """One simulated participant, answering trial after trial in the order shown. By
        default each answer is :meth:`simulate`'s, on the images' mean colours; a paradigm
        whose participants learn across trials returns a responder that keeps state."""

        def features(url: str) -> np.ndarray:
            return pixels(url).mean(axis=(0, 1)) * 255.0

        return lambda view: self.simulate(view, options, rng, skill, features)

    def report_sections(self, trials: pd.DataFrame) -> list[Section]:
        """Extra report sections from the flagged trial table (none by default)."""
        return []


# -- helpers shared by paradigms ---------------------------------------------------------
def condition_of(spec: StudySpec, name: str) -> Condition:
    return next(c for c in spec.conditions if c.name == name)


def condition_entries(spec: StudySpec, manifest: StimulusManifest,
                      condition: Condition) -> list[Entry]:
    """The entries a condition shows (of the paradigm's ``entry_type``): its sources, with
    every role it needs present (``Paradigm.unit_roles``)."""
    paradigm = spec.paradigm_class
    needed = paradigm.unit_roles(condition)
    return [
        e for e in manifest.entries
        if e.type == paradigm.entry_type and e.source in condition.source
        and all(e.role(method, role) for method, role in needed)
    ]


def block_values(spec: StudySpec, entries: list[Entry]) -> list[str]:
    if spec.trials.block_by is None:
        return []
    return sorted({getattr(e, spec.trials.block_by) for e in entries})


def check_roles(spec: StudySpec, manifest: StimulusManifest) -> None:
    """Each condition's sources exist, and every method of every role it maps is in the
    manifest with that role."""
    paradigm = spec.paradigm_class
    methods = manifest.methods()
    for condition in spec.conditions:
        units = [e for e in manifest.entries if e.type == "unit" and e.source in condition.source]
        if not units:
            present = sorted({e.source for e in manifest.entries})
            raise PlanError(
                f"condition {condition.name!r}: the stimulus set has no units of source "
                f"{', '.join(condition.source)} (it has {', '.join(present)})"
            )
        for role, required in paradigm.roles.items():
            listed = condition.methods_for(role)
            if not listed and required:
                raise PlanError(f"condition {condition.name!r}: the {paradigm.id} paradigm "
                                f"needs the role {role!r}; it cannot be 'none'")
            for method in listed:
                if method not in methods:
                    raise PlanError(f"condition {condition.name!r}: role {role!r} asks for "
                                    f"method {method!r}, which the stimulus set does not have "
                                    f"(it has {', '.join(sorted(methods))})")
                if not any(e.role(method, role) for e in units):
                    raise PlanError(f"condition {condition.name!r}: no unit has {method} "
                                    f"{role!r} images")
        if not condition_entries(spec, manifest, condition):
            raise PlanError(f"condition {condition.name!r}: no unit has every role it needs")


@dataclass
class Arrangement:
    """Items per unit for :func:`arrange`: ``items(entry)`` the main items of a unit, in the
    order they should be used; ``catch(entry, n)`` its n-th catch item, or None when it has
    none. ``catch`` itself is None for a condition that has no catch trials at all (one
    without references to test attention on), whatever ``trials.catch_rate`` says."""

    items: Callable[[Entry], list[Item]]
    catch: Callable[[Entry, int], Item | None] | None
    cache: dict[str, list[Item]] = field(default_factory=dict)

    def of(self, entry: Entry) -> list[Item]:
        if entry.id not in self.cache:
            self.cache[entry.id] = self.items(entry)
        return self.cache[entry.id]


def n_catch(spec: StudySpec) -> int:
    return round(spec.trials.catch_rate * spec.trials.main)


def available_items(spec: StudySpec, manifest: StimulusManifest, condition: Condition,
                    arrangement: Arrangement) -> int:
    """Main items the condition's units can supply after practice."""
    entries = condition_entries(spec, manifest, condition)
    return sum(len(arrangement.of(e)) for e in entries) - spec.practice.trials


def check_supply(spec: StudySpec, manifest: StimulusManifest, condition: Condition,
                 arrangement: Arrangement, items: str) -> None:
    """The condition's units supply ``trials.main`` items (called ``items`` in the message)
    after practice, catch items when the study asks for them, and at least one main trial
    per block; else PlanError naming the shortfall."""
    name = condition.name
    available = available_items(spec, manifest, condition, arrangement)
    if available < spec.trials.main:
        raise PlanError(f"condition {name!r}: the stimulus set has {available} {items} after "
                        f"practice, but trials.main asks for {spec.trials.main}")
    units = condition_entries(spec, manifest, condition)
    catch = arrangement.catch
    if n_catch(spec) > 0 and catch is not None and all(catch(u, 0) is None for u in units):
        raise PlanError(f"condition {name!r}: catch_rate > 0 but no unit has catch items")
    n_blocks = len(block_values(spec, units)) or spec.trials.blocks
    if spec.trials.main < n_blocks:
        raise PlanError(f"trials.main ({spec.trials.main}) is smaller than the number of blocks")


def arrange(spec: StudySpec, manifest: StimulusManifest, cell: Cell, rng: np.random.Generator,
            arrangement: Arrangement) -> list[Trial]:
    """Practice attempts, then main and catch trials in blocks, from per-unit items.

    Units are shuffled; practice takes each of the first P units' last item (round-robin if
    fewer units); main trials go round-robin over units so that each appears as evenly as
    the set allows; with ``block_by`` each block holds one value's units in the cell's order,
    else trials are shuffled into ``trials.blocks`` blocks; catch trials are spread over the
    blocks, each from a unit of its block (none where the arrangement has no ``catch``).
    """
    condition = condition_of(spec, cell.condition)
    entries = condition_entries(spec, manifest, condition)
    order = rng.permutation(len(entries))
    units = [entries[i] for i in order]

    n_practice = spec.practice.trials
    practice_pairs = [(units[j % len(units)], j // len(units)) for j in range(n_practice)]
    used = {(u.id, len(arrangement.of(u)) - 1 - r) for u, r in practice_pairs}
    practice = [(u, arrangement.of(u)[len(arrangement.of(u)) - 1 - r]) for u, r in practice_pairs]

    pool: list[tuple[Entry, Item]] = []
    for depth in range(max(len(arrangement.of(u)) for u in units)):
        for u in units:
            items = arrangement.of(u)
            if depth < len(items) and (u.id, depth) not in used:
                pool.append((u, items[depth]))
    n_main = spec.trials.main
    values = list(cell.block_order)
    if values:
        attr = spec.trials.block_by
        per_block = [n_main // len(values) + (i < n_main % len(values)) for i in range(len(values))]
        blocks = []
        for value, n in zip(values, per_block, strict=True):
            chosen = [(u, it) for u, it in pool if getattr(u, attr) == value][:n]
            if len(chosen) < n:
                raise PlanError(f"block {value!r}: only {len(chosen)} items for {n} trials")
            blocks.append(chosen)
    else:
        chosen = pool[:n_main]
        if len(chosen) < n_main:
            raise PlanError(f"only {len(chosen)} items for {n_main} main trials")
        bounds = np.linspace(0, n_main, spec.trials.blocks + 1).round().astype(int)
        shuffled = [chosen[i] for i in rng.permutation(len(chosen))]
        blocks = [shuffled[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    catch = arrangement.catch
    catch_block = rng.integers(len(blocks), size=n_catch(spec) if catch is not None else 0)
    trials: list[Trial] = []

    def make(index: int, kind: TrialKind, block: int, attempt: int, unit: Entry,
             item: Item) -> Trial:
        return Trial(index=index, kind=kind, block=block, attempt=attempt, unit_id=unit.id,
                     source=unit.source, layer=unit.layer, stimuli=item.stimuli, key=item.key)

    for attempt in range(1, spec.practice.max_attempts + 1):
        for j, (unit, item) in enumerate(practice):
            trials.append(make((attempt - 1) * n_practice + j, "practice", 0, attempt, unit, item))
    index = n_practice * spec.practice.max_attempts
    with_catch = [u for u in units if catch is not None and catch(u, 0) is not None]
    for b, block in enumerate(blocks, start=1):
        placed: list[tuple[TrialKind, Entry, Item]] = [("main", u, it) for u, it in block]
        block_units = {u.id for u, _ in block}
        catch_units = [u for u in with_catch if u.id in block_units] or with_catch
        for n, _ in enumerate(np.flatnonzero(catch_block == b - 1)):
            unit = catch_units[n % len(catch_units)]
            item = catch(unit, n // len(catch_units)) if catch is not None else None
            if item is not None:
                placed.append(("catch", unit, item))
        for i in rng.permutation(len(placed)):
            kind, unit, item = placed[i]
            trials.append(make(index, kind, b, 1, unit, item))
            index += 1
    return trials


def merged_options(options: ParadigmOptions, overrides: Mapping[str, Any]) -> ParadigmOptions:
    """A condition's options: the study's, with the condition's overrides validated."""
    if not overrides:
        return options
    return type(options).model_validate({**options.model_dump(), **overrides})

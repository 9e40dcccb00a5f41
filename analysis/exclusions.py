"""Pre-registered exclusions, applied in a fixed order and reported rule by rule.

The rules come from a study file's ``[exclusions]`` table (``experiments.study.Exclusions``).
Participants are flagged, never dropped: the trial table gains ``excluded`` and
``exclusion_reason`` (the first rule, in ``ORDER``, that excluded the participant), and the
report says for every rule how many participants it flags on its own and how many it
newly excludes after the rules before it (``ExclusionResult.funnel``: how many participants
and trials remain after each).

The order is fixed: the session must be completed, then the study file's rules in the order
``ORDER`` lists them. Each rule needs a session-level value (see
``analysis.load.session_table``); where the data lack it the rule is reported as not
applied, with the reason, rather than silently passing everyone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.load import session_table
from experiments.study import Exclusions, StudySpec


@dataclass(frozen=True)
class Rule:
    key: str
    label: str  # what the report prints; {} is the threshold
    unset: str = ""  # printed when the study file does not set the rule


ORDER: tuple[Rule, ...] = (
    Rule("incomplete", "session not completed"),
    Rule("catch_min_accuracy", "catch-trial accuracy below {}", "catch-trial accuracy"),
    Rule("instructions_min_seconds", "instructions read in under {} s",
         "minimum instructions time"),
    Rule("total_minutes_min", "total time under {} min", "minimum total time"),
    Rule("total_minutes_max", "total time over {} min", "maximum total time"),
    Rule("max_same_response_fraction", "over {} of responses on one side or button",
         "responses on one side or button"),
    Rule("max_practice_attempts", "over {} practice attempts", "practice attempts"),
    Rule("repeat", "repeat participation"),
)


@dataclass(frozen=True)
class ExclusionResult:
    """``trials`` (flagged), ``sessions`` (one row per participant with a column per rule)
    and ``table`` (one row per rule: rule, threshold, flagged, newly_excluded, remaining,
    note)."""

    trials: pd.DataFrame
    sessions: pd.DataFrame
    table: pd.DataFrame

    @property
    def included(self) -> pd.DataFrame:
        return self.trials[~self.trials["excluded"]]

    @property
    def funnel(self) -> pd.DataFrame:
        """Participants, trials and main trials left after each rule that was set, in order,
        starting from all sessions: the exclusion funnel a pre-registration is checked
        against. A rule that flags nobody new still gets its step, marked when the data
        could not judge it."""
        who = self.trials["participant"].astype("string")
        main = (self.trials["trial_kind"] == "main").to_numpy()
        excluded = pd.Series(False, index=self.sessions.index)
        steps = [("all sessions", excluded)]
        for rule, description, note in self.table[["rule", "description", "note"]].itertuples(
                index=False):
            excluded = excluded | self.sessions[rule]
            if note != "not set":
                mark = " (not applied)" if note.startswith("not applied") else ""
                steps.append((description + mark, excluded))
        rows = []
        for step, out in steps:
            kept = ~who.map(out).astype(bool).to_numpy()
            rows.append((step, int((~out).sum()), int(kept.sum()), int((kept & main).sum())))
        return pd.DataFrame(rows, columns=["step", "participants", "trials", "main_trials"])


def as_rules(rules: StudySpec | Exclusions | dict | None) -> Exclusions:
    """A study spec, its ``Exclusions``, a plain dict of the same fields, or None (no rules)."""
    if rules is None:
        return Exclusions()
    if isinstance(rules, StudySpec):
        return rules.exclusions
    if isinstance(rules, Exclusions):
        return rules
    if isinstance(rules, dict):
        return Exclusions.model_validate(rules)
    raise TypeError(f"exclusion rules must be a StudySpec, Exclusions or dict, "
                    f"not {type(rules).__name__}")


def _flags(key: str, threshold: object, s: pd.DataFrame,
           prior_keys: frozenset[str]) -> tuple[pd.Series, str]:
    """Boolean flags per participant for one rule, and a note ('' when fully applied)."""
    none = pd.Series(False, index=s.index)
    if key == "incomplete":
        return s["status"].astype("string") != "completed", ""
    if key == "catch_min_accuracy":
        acc = s["catch_accuracy"]
        missing = int(acc.isna().sum())
        note = f"{missing} participant(s) without catch trials not judged" if missing else ""
        return (acc < threshold).fillna(False).astype(bool), note
    if key == "instructions_min_seconds":
        secs = s["instructions_seconds"]
        if secs.isna().all():
            return none, "not applied: the data have no instructions_seconds"
        missing = int(secs.isna().sum())
        note = f"{missing} participant(s) without instructions time not judged" if missing else ""
        return (secs < threshold).fillna(False).astype(bool), note
    if key in ("total_minutes_min", "total_minutes_max"):
        minutes = s["total_minutes"]
        if minutes.isna().all():
            return none, "not applied: the data have no timestamps"
        note = "total time from trial timestamps (export lacks started_at/finished_at)" \
            if "total time from trial timestamps" in s["sources"].iloc[0] else ""
        out = minutes < threshold if key == "total_minutes_min" else minutes > threshold
        return out.fillna(False).astype(bool), note
    if key == "max_same_response_fraction":
        frac = np.fmax(s["side_fraction"], s["button_fraction"])
        if frac.isna().all():
            return none, "not applied: the data have no choice column"
        return (frac > threshold).fillna(False).astype(bool), ""
    if key == "max_practice_attempts":
        return (s["practice_attempts"] > threshold).fillna(False).astype(bool), ""
    if key == "repeat":
        keys = s["participant_key"]
        if keys.isna().all():
            return none, "not applied: the data have no participant_key"
        order = s.sort_values("first_seen", kind="stable")
        seen = order["participant_key"].duplicated(keep="first")
        seen |= order["participant_key"].isin(prior_keys)
        return seen.reindex(s.index).fillna(False).astype(bool), ""
    raise ValueError(f"unknown exclusion rule {key!r}")


def apply_exclusions(trials: pd.DataFrame, rules: StudySpec | Exclusions | dict | None,
                     *, completed_only: bool = True,
                     prior_participant_keys: frozenset[str] | set[str] = frozenset(),
                     ) -> ExclusionResult:
    """Flag excluded participants in a tidy trial table (from ``analysis.load``).

    ``completed_only`` applies the first rule (status must be ``completed``).
    ``prior_participant_keys``: ``participant_key`` values of people who took part in earlier
    studies; their sessions here count as repeats, as do all but the first session of a key
    within these data. Rules set to None in the study file are listed as not set.
    """
    if "excluded" in trials.columns:
        raise ValueError("trials are already flagged (column 'excluded' exists)")
    spec = as_rules(rules)
    sessions = session_table(trials)
    thresholds = spec.model_dump()
    thresholds["incomplete"] = True if completed_only else None
    thresholds["repeat"] = True
    excluded = pd.Series(False, index=sessions.index)
    reason = pd.Series(pd.NA, index=sessions.index, dtype="string")
    rows = []
    for rule in ORDER:
        threshold = thresholds[rule.key]
        label = rule.unset if threshold is None else rule.label.format(threshold)
        if threshold is None:
            sessions[rule.key] = False
            rows.append((rule.key, label, None, 0, 0, int((~excluded).sum()), "not set"))
            continue
        flags, note = _flags(rule.key, threshold, sessions, frozenset(prior_participant_keys))
        new = flags & ~excluded
        reason[new] = label
        excluded |= flags
        sessions[rule.key] = flags
        shown = None if threshold is True else threshold
        rows.append((rule.key, label, shown, int(flags.sum()), int(new.sum()),
                     int((~excluded).sum()), note))
    sessions["excluded"] = excluded
    sessions["exclusion_reason"] = reason
    table = pd.DataFrame(rows, columns=["rule", "description", "threshold", "flagged",
                                        "newly_excluded", "remaining", "note"])
    flagged = trials.copy()
    who = flagged["participant"].astype("string")
    flagged["excluded"] = who.map(excluded).astype(bool)
    flagged["exclusion_reason"] = who.map(reason).astype("string")
    return ExclusionResult(trials=flagged, sessions=sessions, table=table)

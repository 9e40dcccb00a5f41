"""The tidy trial table's columns: the export's schema, owned by the analysis.

The server writes exports with these columns (``server.export``); the analysis reads them
(``analysis.load``) and never imports the server. After the common columns come the
paradigm's own (``choice``, ``confidence``, ...; see each paradigm's ``export_columns``; the
2AFC's ``references`` names what each trial showed: ``exemplars``, ``maco``,
``exemplars+maco``, ``none``, ..., and is missing from exports of before it) and one column
per unit covariate of the stimulus set, named ``cov_<name>``.
"""

from __future__ import annotations

COMMON = [
    "study",
    "study_version",
    "paradigm",
    "participant",
    "mode",
    "condition",
    "cell",
    "status",
    "block",
    "trial_index",
    "attempt",
    "trial_kind",
    "unit_id",
    "source",
    "layer",
    "correct",
    "chance",  # proportion correct of a guessing participant in this paradigm and condition
    "rt_ms",
    "presented_at",
    "responded_at",
    "n_events",
]
# Per session, repeated on each of its rows (for the exclusion rules); older exports lack them.
SESSION_COLUMNS = [
    "started_at",
    "finished_at",
    "instructions_seconds",
    "practice_attempts",
    "participant_key",
]
COLUMNS = COMMON + SESSION_COLUMNS
COVARIATE_PREFIX = "cov_"
# Columns of exports written before paradigms became plugins, and their names now.
RENAMED = {"unit_kind": "source"}

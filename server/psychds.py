"""psych-DS export: a study's trials as a psych-DS dataset folder, which R and pandas read
as plain CSV and the psych-DS validator accepts.

    DIR/dataset_description.json   schema.org Dataset (JSON-LD) with variableMeasured
    DIR/README.md
    DIR/data/study-<slug>_data.csv (one file; keywords may not hold '-' in values)

Written against psych-DS schema 1.5.0 (tests/server/data/psych-ds-schema-1.5.0.json).
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

SCHEMA_VERSION = "1.5.0"
DESCRIPTIONS = {
    "study": "the study's slug",
    "study_version": "the launched version of the study the session ran",
    "paradigm": "the paradigm (task) of the trial",
    "participant": "pseudonymous participant id (random per session)",
    "mode": "live, pilot or preview session",
    "condition": "between-participant condition",
    "cell": "condition and block order the participant was assigned to",
    "status": "the session's final status",
    "block": "block of the trial",
    "trial_index": "position of the trial in the participant's plan",
    "attempt": "practice attempt (0 for main trials)",
    "trial_kind": "practice, main or catch",
    "unit_id": "the unit (stimulus item) the trial is about",
    "source": "unit source (neuron, nmf, ...)",
    "layer": "model layer of the unit",
    "correct": "whether the answer was correct (scored on the server)",
    "chance": "proportion correct of a guessing participant",
    "rt_ms": "response time in milliseconds",
    "presented_at": "when the trial was shown (browser clock, UTC)",
    "responded_at": "when the participant answered (browser clock, UTC)",
    "n_events": "focus, visibility and connection events during the trial",
    "started_at": "when the session started (UTC)",
    "finished_at": "when the session finished (UTC)",
    "instructions_seconds": "time spent on the instructions",
    "practice_attempts": "practice attempts made",
    "participant_key": "pseudonym of the platform ID, the same across studies",
}


def keyword_value(text: str) -> str:
    """A psych-DS keyword value: letters and digits only."""
    value = re.sub(r"[^A-Za-z0-9]", "", text)
    if not value:
        raise ValueError(f"{text!r} has no letters or digits to name a psych-DS file by")
    return value


def write_psych_ds(frame: pd.DataFrame, out: Path, *, slug: str, title: str,
                   description: str) -> Path:
    """The dataset folder ``out`` (created; must not hold a dataset already); returns the
    data file's path."""
    out = Path(out)
    if (out / "dataset_description.json").exists():
        raise ValueError(f"{out} already holds a psych-DS dataset")
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    path = data / f"study-{keyword_value(slug)}_data.csv"
    frame.to_csv(path, index=False)
    variables = [{"@type": "PropertyValue", "name": column,
                  "description": DESCRIPTIONS.get(column, _describe(column))}
                 for column in frame.columns]
    metadata = {
        "@context": "https://schema.org",
        "@type": "Dataset",
        "name": title,
        "description": description,
        "schemaVersion": SCHEMA_VERSION,
        "variableMeasured": variables,
        "keywords": ["interpretability", "psychophysics", slug],
    }
    (out / "dataset_description.json").write_text(json.dumps(metadata, indent=2) + "\n")
    (out / "README.md").write_text(
        f"# {title}\n\n{description}\n\nTrial-level data of the Assay study `{slug}`: one row "
        "per stored trial, participants as pseudonyms. The variables are described in "
        "dataset_description.json.\n")
    return path


def describe_study(slug: str, title: str) -> str:
    """The dataset's description, the same from the command line and the dashboard."""
    return f"Trial-level responses of the Assay study {slug!r} ({title})."


def psych_ds_zip(frame: pd.DataFrame, *, slug: str, title: str) -> bytes:
    """The dataset folder ``write_psych_ds`` writes, zipped under one folder
    ``<slug>-psych-ds/``; it is built in a fresh temporary directory, never a given path."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, \
            zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        root = Path(tmp) / f"{slug}-psych-ds"
        write_psych_ds(frame, root, slug=slug, title=title,
                       description=describe_study(slug, title))
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(tmp).as_posix())
    return buffer.getvalue()


def _describe(column: str) -> str:
    if column.startswith("cov_"):
        return f"covariate of the unit from the stimulus set: {column[4:]}"
    return f"the paradigm's answer field {column!r}"

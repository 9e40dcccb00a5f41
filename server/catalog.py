"""Importing stimulus sets and launching study versions: both idempotent."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from experiments.study import StudySpec, stimulus_dir
from server.models import Image, StimulusSetRow, Study, StudyVersion
from stimuli.stimulus_set import StimulusSet, load_stimulus_set


def now() -> datetime:
    return datetime.now(UTC)


def import_stimulus_set(db: Session, stimulus_set: StimulusSet) -> StimulusSetRow:
    """Store a verified set; importing the same set again changes nothing."""
    row = db.scalar(select(StimulusSetRow).where(StimulusSetRow.digest == stimulus_set.digest))
    if row is not None:
        return row
    have = set(db.scalars(select(Image.digest).where(Image.digest.in_(list(stimulus_set.images)))))
    db.add_all(Image(digest=d, data=b) for d, b in stimulus_set.images.items() if d not in have)
    row = StimulusSetRow(
        digest=stimulus_set.digest,
        name=stimulus_set.manifest.name,
        manifest=stimulus_set.manifest.model_dump(mode="json"),
        imported_at=now(),
    )
    db.add(row)
    db.flush()
    return row


@dataclass(frozen=True)
class Launched:
    slug: str
    version: int
    created: bool
    n_cells: int


def launch_study(db: Session, spec: StudySpec, study_file: Path) -> Launched:
    """Validate against the stimulus set and create a version unless this exact one exists."""
    stimulus_set = load_stimulus_set(stimulus_dir(spec, study_file))
    paradigm = spec.paradigm_class
    paradigm.check_feasible(spec, stimulus_set.manifest)
    set_row = import_stimulus_set(db, stimulus_set)
    study = db.scalar(select(Study).where(Study.slug == spec.slug).with_for_update())
    if study is None:
        study = Study(slug=spec.slug, created_at=now())
        db.add(study)
        db.flush()
    # A version is the spec together with the exact stimulus set it was launched on.
    digest = hashlib.sha256(f"{spec.digest()}:{set_row.digest}".encode()).hexdigest()
    existing = db.scalar(
        select(StudyVersion).where(
            StudyVersion.study_id == study.id, StudyVersion.spec_digest == digest
        )
    )
    if existing is not None:
        return Launched(spec.slug, existing.version, False, len(existing.cells))
    latest = db.scalar(
        select(func.max(StudyVersion.version)).where(StudyVersion.study_id == study.id)
    )
    all_cells = paradigm.cells(spec, stimulus_set.manifest)
    version = StudyVersion(
        study_id=study.id,
        version=(latest or 0) + 1,
        spec=spec.model_dump(mode="json"),
        spec_digest=digest,
        cells=[{"condition": c.condition, "block_order": list(c.block_order)} for c in all_cells],
        stimulus_set_id=set_row.id,
        created_at=now(),
    )
    db.add(version)
    db.flush()
    return Launched(spec.slug, version.version, True, len(all_cells))


def latest_version(db: Session, slug: str) -> StudyVersion | None:
    return db.scalar(
        select(StudyVersion)
        .join(Study)
        .where(Study.slug == slug)
        .order_by(StudyVersion.version.desc())
        .limit(1)
    )

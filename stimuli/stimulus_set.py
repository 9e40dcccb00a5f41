"""The versioned stimulus-set format: a manifest plus content-addressed PNG images.

A set is a directory::

    manifest.json          # StimulusManifest, written with sorted keys
    images/<sha256>.png    # each image named by the SHA-256 of its bytes

The set's version is the SHA-256 of ``manifest.json``: the manifest names every image by
content, so equal digests mean equal sets. See docs/stimulus-sets.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
IMAGE_DIR = "images"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class StimulusSetError(ValueError):
    """A stimulus set that is corrupt or inconsistent; the message names the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueryPair(_Strict):
    """Two query images for one trial: one strongly (max) and one weakly (min) activating."""

    max: str
    min: str


class References(_Strict):
    """Reference images of a unit, most extreme first."""

    max: list[str] = Field(min_length=1)
    min: list[str] = Field(min_length=1)


class Unit(_Strict):
    """One explained unit: a neuron (channel) or a dictionary feature of a layer."""

    id: str = Field(min_length=1, max_length=200)
    kind: str = Field(min_length=1, max_length=50)
    layer: str = Field(min_length=1, max_length=200)
    covariates: dict[str, float | int | str | bool | None] = Field(default_factory=dict)
    references: References
    queries: list[QueryPair] = Field(min_length=1)
    catch: list[QueryPair] = Field(default_factory=list)

    @model_validator(mode="after")
    def _catch_from_references(self) -> Unit:
        for pair in self.catch:
            if pair.max not in self.references.max or pair.min not in self.references.min:
                raise ValueError(
                    f"unit {self.id!r}: catch images must be among the unit's references"
                )
        return self

    def image_digests(self) -> set[str]:
        pairs = [*self.queries, *self.catch]
        return {*self.references.max, *self.references.min} | {
            d for p in pairs for d in (p.max, p.min)
        }


class StimulusManifest(_Strict):
    schema_version: int
    name: str = Field(min_length=1, max_length=200)
    provenance: dict = Field(default_factory=dict)
    units: list[Unit] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> StimulusManifest:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported (expected {SCHEMA_VERSION})"
            )
        seen: set[str] = set()
        for unit in self.units:
            if unit.id in seen:
                raise ValueError(f"unit id {unit.id!r} appears twice")
            seen.add(unit.id)
            bad = sorted(d for d in unit.image_digests() if not _SHA256.match(d))
            if bad:
                raise ValueError(f"unit {unit.id!r}: {bad[0]!r} is not a SHA-256 hex digest")
        return self

    def image_digests(self) -> set[str]:
        return set().union(*(u.image_digests() for u in self.units))


@dataclass(frozen=True)
class StimulusSet:
    """A loaded, verified stimulus set; ``images`` maps digest to PNG bytes."""

    manifest: StimulusManifest
    digest: str
    images: dict[str, bytes]

    def unit(self, unit_id: str) -> Unit:
        for u in self.manifest.units:
            if u.id == unit_id:
                return u
        raise KeyError(unit_id)


def image_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes with no metadata, so that equal pixels give equal digests."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def manifest_bytes(manifest: StimulusManifest) -> bytes:
    return (json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()


def write_stimulus_set(
    directory: Path, manifest: StimulusManifest, images: dict[str, bytes]
) -> str:
    """Write a set; images already present with the right name are kept. Returns the digest."""
    missing = manifest.image_digests() - images.keys()
    if missing:
        raise StimulusSetError(
            f"manifest names {len(missing)} image(s) not given, e.g. {min(missing)}"
        )
    image_dir = Path(directory) / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    for digest in sorted(manifest.image_digests()):
        data = images[digest]
        if image_digest(data) != digest:
            raise StimulusSetError(f"image bytes do not match their digest {digest}")
        path = image_dir / f"{digest}.png"
        if not path.exists():
            path.write_bytes(data)
    raw = manifest_bytes(manifest)
    (Path(directory) / MANIFEST_NAME).write_bytes(raw)
    return hashlib.sha256(raw).hexdigest()


def load_stimulus_set(directory: Path) -> StimulusSet:
    """Read and verify a set: manifest schema, every image present, intact and decodable."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise StimulusSetError(f"{directory}: no {MANIFEST_NAME} (is this a stimulus set?)")
    raw = manifest_path.read_bytes()
    try:
        manifest = StimulusManifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise StimulusSetError(f"{manifest_path}: {where}: {first['msg']}") from None
    images: dict[str, bytes] = {}
    for digest in sorted(manifest.image_digests()):
        path = directory / IMAGE_DIR / f"{digest}.png"
        if not path.is_file():
            raise StimulusSetError(f"{directory}: image {digest}.png is missing")
        data = path.read_bytes()
        if image_digest(data) != digest:
            raise StimulusSetError(f"{path}: content does not match its name (corrupt image)")
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise StimulusSetError(f"{path}: not a readable PNG ({exc})") from None
        images[digest] = data
    return StimulusSet(manifest=manifest, digest=hashlib.sha256(raw).hexdigest(), images=images)

"""The versioned stimulus-set format: a manifest plus content-addressed PNG images.

A set is a directory::

    manifest.json          # StimulusManifest, written with sorted keys
    images/<sha256>.png    # each image named by the SHA-256 of its bytes

The set's version is the SHA-256 of ``manifest.json``: the manifest names every image by
content, so equal digests mean equal sets. Version 2 is generic over what is explained: an
entry is a unit (neuron, dictionary feature, concept, class logit), a drawing category, or an
image with the model's decision, and carries ``explanations: {method: {role: [...]}}``.
Version 1 manifests (units with references, queries and catch pairs) still load: they are
read as version 2 entries explained by the ``exemplars`` method. See docs/stimulus-sets.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from PIL import Image, UnidentifiedImageError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"
IMAGE_DIR = "images"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _digest(value: str) -> str:
    if not _SHA256.match(value):
        raise ValueError(f"{value[:80]!r} is not a SHA-256 hex digest")
    return value


Digest = Annotated[str, AfterValidator(_digest)]
Scalar = float | int | str | bool | None
EntryType = Literal["unit", "category", "decision"]


class StimulusSetError(ValueError):
    """A stimulus set that is corrupt or inconsistent; the message names the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageRef(_Strict):
    """One image of an explanation, with what the method knows of it."""

    image: Digest
    map: Digest | None = None  # a per-image map of the same size (transparency, attribution)
    activation: float | None = None  # what the explained unit reached on this image
    meta: dict[str, Scalar] = Field(default_factory=dict)


class Pair(_Strict):
    """An ordered pair for one trial: a strongly (max) and a weakly (min) activating image."""

    max: ImageRef
    min: ImageRef


def _role_kind(value: Any) -> str:
    first = value[0] if isinstance(value, list) and value else None
    return "pairs" if isinstance(first, Pair) or (isinstance(first, dict) and "max" in first) \
        else "images"


# A role is an ordered list of images (references, drawings, maps) or of pairs (queries).
Role = Annotated[
    Annotated[list[Pair], Tag("pairs")] | Annotated[list[ImageRef], Tag("images")],
    Discriminator(_role_kind),
]


def role_images(role: Role) -> list[ImageRef]:
    """Every image a role names, pairs flattened (max first)."""
    out: list[ImageRef] = []
    for item in role:
        out.extend((item.max, item.min) if isinstance(item, Pair) else (item,))
    return out


class Entry(_Strict):
    """One thing explained: a unit of a layer, a drawing category, or a decision on an image."""

    id: str = Field(min_length=1, max_length=200)
    type: EntryType = "unit"
    source: str = Field(min_length=1, max_length=50)  # the unit source (neuron, nmf, ...)
    layer: str = Field(default="", max_length=200)  # "" where there is no layer
    covariates: dict[str, Scalar] = Field(default_factory=dict)
    stimulus: ImageRef | None = None  # the image a decision is about; a category's exemplar
    explanations: dict[str, dict[str, Role]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _catch_from_references(self) -> Entry:
        for method, roles in self.explanations.items():
            shown = {r.image for name in ("max_refs", "min_refs") for r in roles.get(name, [])}
            for pair in roles.get("catch", []):
                if not isinstance(pair, Pair) or not {pair.max.image, pair.min.image} <= shown:
                    raise ValueError(
                        f"entry {self.id!r}: {method} catch images must be among its references"
                    )
        return self

    def role(self, method: str, role: str) -> Role:
        """The role's items, or an empty list when the method or role is absent."""
        return self.explanations.get(method, {}).get(role, [])

    def image_digests(self) -> set[str]:
        refs = [self.stimulus] if self.stimulus is not None else []
        for roles in self.explanations.values():
            for role in roles.values():
                refs.extend(role_images(role))
        return {r.image for r in refs} | {r.map for r in refs if r.map is not None}


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version 1 manifest as version 2: each unit's images become exemplars roles."""

    def ref(digest: Any) -> dict:
        return {"image": digest}

    def pair(p: Any) -> Any:
        return {"max": ref(p["max"]), "min": ref(p["min"])} if isinstance(p, dict) else p

    entries = []
    for unit in data.get("units", []):
        if not isinstance(unit, dict):
            entries.append(unit)
            continue
        unit = dict(unit)
        refs = unit.pop("references", None) or {}
        exemplars = {
            "max_refs": [ref(d) for d in refs.get("max", [])],
            "min_refs": [ref(d) for d in refs.get("min", [])],
            "queries": [pair(p) for p in unit.pop("queries", [])],
        }
        catch = unit.pop("catch", [])
        if catch:
            exemplars["catch"] = [pair(p) for p in catch]
        entry = {"source": unit.pop("kind", None), **unit, "explanations": {"exemplars": exemplars}}
        entries.append({k: v for k, v in entry.items() if v is not None})
    out = {k: v for k, v in data.items() if k != "units"}
    return {**out, "schema_version": SCHEMA_VERSION, "entries": entries}


class StimulusManifest(_Strict):
    schema_version: Literal[2]
    name: str = Field(min_length=1, max_length=200)
    provenance: dict = Field(default_factory=dict)
    entries: list[Entry] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _read_older(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        version = data.get("schema_version")
        if version == 1:
            return _upgrade_v1(data)
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {version} is not supported (expected 1 or {SCHEMA_VERSION})"
            )
        return data

    @model_validator(mode="after")
    def _unique_ids(self) -> StimulusManifest:
        seen: set[str] = set()
        for entry in self.entries:
            if entry.id in seen:
                raise ValueError(f"entry id {entry.id!r} appears twice")
            seen.add(entry.id)
        return self

    def entry(self, entry_id: str) -> Entry:
        for e in self.entries:
            if e.id == entry_id:
                return e
        raise KeyError(entry_id)

    def image_digests(self) -> set[str]:
        return set().union(*(e.image_digests() for e in self.entries))

    def methods(self) -> set[str]:
        return {m for e in self.entries for m in e.explanations}


@dataclass(frozen=True)
class StimulusSet:
    """A loaded, verified stimulus set; ``images`` maps digest to PNG bytes."""

    manifest: StimulusManifest
    digest: str
    images: dict[str, bytes]


def rounded(x: float) -> float:
    """A number as a manifest stores it: six significant digits, so that last-bit noise of a
    computation does not change a set's digest."""
    return float(f"{float(x):.6g}")


def image_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes with no metadata, so that equal pixels give equal digests."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def manifest_bytes(manifest: StimulusManifest) -> bytes:
    return (json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()


def parse_manifest(data: dict | bytes | str, where: str = "manifest") -> StimulusManifest:
    """Validate a manifest (any supported version); the error names the first bad field."""
    try:
        if isinstance(data, dict):
            return StimulusManifest.model_validate(data)
        return StimulusManifest.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise StimulusSetError(f"{where}: {loc + ': ' if loc else ''}{msg}") from None


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
    manifest = parse_manifest(raw, str(manifest_path))
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

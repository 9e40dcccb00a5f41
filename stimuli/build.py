"""Build a stimulus set from a model, its layers, unit sources, explanation methods and an
image pool: ``build_stimuli(path)``. Orchestration only: what is explained lives in
stimuli/sources/, how it is shown in stimuli/methods/, where the model comes from in
stimuli/model_loaders.py.

Stages, each cached under the cache directory keyed by a hash of its inputs and of the
revision of the code that computes it (so a second run reuses finished work, and a changed
method recomputes only its own): position samples, each dictionary's fit, each unit family's
extremes over the pool (one streaming pass for whatever is missing), unit importance, and
each method's explanations. Seeds come from names (build seed, stage, layer, source, unit,
method), never from list positions. The same config and seed give a byte-identical set.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from stimuli.activations import sample_positions
from stimuli.build_config import BuildConfig, load_build_config
from stimuli.cache import TensorCache, digest_of, seed_from
from stimuli.decisions.build import build_decisions, is_decision_build
from stimuli.drawings.build import build_drawings, is_drawing_build
from stimuli.exemplars import ExemplarSearch
from stimuli.explain_context import ExplainContext, UnitStatistics
from stimuli.images import (
    ArrayImages,
    ImageFolder,
    ImageSource,
    ImageTransform,
    center_square,
    iter_batches,
)
from stimuli.importance import unit_importance
from stimuli.methods.base import Method, UnitRef
from stimuli.model_loaders import LoadedModel
from stimuli.models import get_layer, model_checksum
from stimuli.registry import METHODS, MODELS, SOURCES
from stimuli.sources.base import UnitSource
from stimuli.stimulus_set import (
    IMAGE_DIR,
    SCHEMA_VERSION,
    Entry,
    ImageRef,
    Pair,
    StimulusManifest,
    encode_png,
    rounded,
    write_stimulus_set,
)

log = logging.getLogger(__name__)

# Revision of the builder's own stages (position samples, extremes, importance): bump it
# when their code changes what they compute. Sources and methods carry their own.
STAGE_REVISION = 2  # 2: images are centre-cropped squares, not squashed

Family = tuple[str, str]  # (hooked layer, source id); "" is the model's output


def build_stimuli(config_path: str | Path, output: str | Path | None = None) -> str:
    """Build the stimulus set a build TOML describes (into ``output`` if given, instead of
    the config's own); returns the set's digest."""
    if is_drawing_build(Path(config_path)):  # a corpus's categories, not a model's units
        return build_drawings(config_path, output)
    if is_decision_build(Path(config_path)):  # a model's decisions on images, explained
        return build_decisions(config_path, output)
    config = load_build_config(Path(config_path))
    if output is not None:
        config = config.model_copy(update={"output": Path(output).resolve()})
    return StimulusBuilder(config).build()


@dataclass
class _Pool:
    source: ImageSource
    transform: ImageTransform
    fingerprint: str
    description: dict


def _package_version() -> str:
    try:
        return importlib.metadata.version("assay")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"



class StimulusBuilder:
    """Runs the stages of a build for one validated :class:`BuildConfig`."""

    def __init__(self, config: BuildConfig):
        self.config = config
        self.cache = TensorCache(config.cache_dir)
        self.device = torch.device(config.device)
        self.methods: dict[str, Method] = {
            m: METHODS[m](config.plugin_config(m)) for m in config.methods
        }

    # -- model and images ---------------------------------------------------------------
    def _load_model(self) -> LoadedModel:
        options = self.config.model_options
        loaded = MODELS[options.source]().load(  # type: ignore[attr-defined]
            options, seed=self.config.seed, cache_dir=self.cache.directory, device=self.device
        )
        loaded.model = loaded.model.to(self.device).eval()
        for layer in options.layers:
            get_layer(loaded.model, layer)
        loaded.info["checksum"] = model_checksum(loaded.model)
        return loaded

    def _image_pool(self, loaded: LoadedModel) -> _Pool:
        cfg = self.config.images
        if cfg.source == "demo":
            if loaded.images is None:
                raise ValueError(
                    f"images.source = 'demo' needs a model that brings its own images "
                    f"(model.source = 'demo'), not {self.config.model_options.source!r}"
                )
            images = loaded.images[: cfg.limit] if cfg.limit else loaded.images
            source: ImageSource = ArrayImages(images, name=loaded.images_name or "model")
        else:
            source = ImageFolder(Path(cfg.source))
            if cfg.limit:
                source.paths = source.paths[: cfg.limit]
        transform = ImageTransform(cfg.size, cfg.mode, tuple(cfg.mean), tuple(cfg.std))
        fingerprint = source.fingerprint()
        description = {"source": cfg.source if cfg.source == "demo" else Path(cfg.source).name}
        description.update({"n_images": len(source), "fingerprint": fingerprint})
        return _Pool(source, transform, fingerprint, description)

    def _batches(self, pool: _Pool, desc: str, indices=None):
        size = self.config.images.batch_size
        batches = iter_batches(pool.source, pool.transform, batch_size=size, indices=indices)
        total = -(-(len(pool.source) if indices is None else len(indices)) // size)
        return tqdm(batches, total=total, desc=desc, unit="batch", disable=None, leave=False)

    def _families(self) -> list[Family]:
        """Every (layer, source) pair the build explains, in config order."""
        out: list[Family] = []
        for source_id in self.config.sources:
            fixed = SOURCES[source_id].fixed_layer
            layers = [fixed] if fixed is not None else self.config.model_options.layers
            out.extend((layer, source_id) for layer in layers)
        return out

    # -- stages -------------------------------------------------------------------------
    def build(self) -> str:
        cfg = self.config
        loaded = self._load_model()
        pool = self._image_pool(loaded)
        base_key = {
            "model": loaded.info["checksum"],
            "images": pool.fingerprint,
            "transform": repr(pool.transform),
            "cls_token": cfg.model_options.cls_token,
            "seed": cfg.seed,
            "stage_revision": STAGE_REVISION,
        }
        model = loaded.model
        families = self._families()
        sources = self._fit_sources(model, pool, base_key, families)
        stats_keys = {f: self._statistics_key(base_key, f, sources[f]) for f in families}
        statistics = self._statistics(model, pool, families, sources, stats_keys)
        units = self._sample_units(families, statistics)
        importance = self._importance(model, pool, base_key, sources, units)
        ctx = ExplainContext(
            model=model,
            device=self.device,
            sources=sources,
            statistics=statistics,
            render=lambda i: self._display(pool.source.load(i)),
            image_name=pool.source.name,
            display=self._display,
            pool=pool.source,
            transform=pool.transform,
            inputs=lambda indices: torch.stack(
                [pool.transform(pool.source.load(i)) for i in indices]),
            pooling=cfg.units.pooling,
            cls_token=cfg.model_options.cls_token,
            seed=cfg.seed,
            cache_dir=self.cache.directory,
        )
        for m in self._method_order():
            ctx.explained[m] = self._explain(self.methods[m], ctx, units, stats_keys)
        explanations = ctx.explained
        manifest = self._manifest(loaded, pool, sources, statistics, units, importance,
                                  explanations, ctx)
        digest = write_stimulus_set(cfg.output, manifest, ctx.images)
        _remove_stale_images(cfg.output, manifest)
        log.info(
            "wrote stimulus set %s (%d entries) to %s", digest[:12], len(manifest.entries),
            cfg.output,
        )
        return digest

    def _fit_sources(self, model, pool, base_key, families) -> dict[Family, UnitSource]:
        """Every family's source, fitted on position vectors sampled from its layer."""
        cfg = self.config
        out: dict[Family, UnitSource] = {}
        for layer, source_id in families:
            cls = SOURCES[source_id]
            out[(layer, source_id)] = cls(
                cfg.plugin_config(source_id),
                seed=seed_from(cfg.seed, "fit", layer, source_id),
                device=self.device,
            )
        to_fit = [f for f in families if out[f].needs_fit]
        if not to_fit:
            return out
        layers = sorted({layer for layer, _ in to_fit})
        pos_key = {**base_key, "layers": layers, **cfg.positions.model_dump()}
        positions = self.cache.load("positions", pos_key)
        if positions is None:
            # a seeded random subset of the images (in source order), so that a folder sorted
            # by class does not give the dictionaries only its first classes
            gen = torch.Generator().manual_seed(seed_from(cfg.seed, "positions"))
            n_img = min(len(pool.source), -(-cfg.positions.fit_samples // cfg.positions.per_image))
            images = sorted(torch.randperm(len(pool.source), generator=gen)[:n_img].tolist())
            positions = sample_positions(
                model,
                layers,
                self._batches(pool, "sampling activations", images),
                per_image=cfg.positions.per_image,
                max_samples=cfg.positions.fit_samples,
                generator=gen,
                device=self.device,
                cls_token=cfg.model_options.cls_token,
            )
            self.cache.save("positions", pos_key, positions)
        for layer, source_id in to_fit:
            source = out[(layer, source_id)]
            key = {**pos_key, "layer": layer, "source": source_id,
                   "revision": source.revision, "options": source.config.model_dump()}
            state = self.cache.load(f"fit-{source_id}", key)
            if state is None:
                X = positions[layer]  # M, C
                log.info("fitting %s on %s: X %s", source_id, layer, tuple(X.shape))
                source.fit(X)
                self.cache.save(f"fit-{source_id}", key, source.state())
            else:
                source.load_state(state)
        return out

    def _n_extremes(self) -> int:
        return max([1, *(m.n_extremes() for m in self.methods.values())])

    def _statistics_key(self, base_key, family: Family, source: UnitSource) -> dict:
        n_subset = max(
            [0, *(getattr(m.config, "subset_size", 0) for m in self.methods.values())]
        )
        return {**base_key, "family": list(family), "source": source.checksum(),
                "pooling": self.config.units.pooling, "n_extremes": self._n_extremes(),
                "subset": min(n_subset, self.config.images.limit or n_subset)}

    def _statistics(self, model, pool, families, sources, keys) -> dict[Family, UnitStatistics]:
        """Each family's extremes; one streaming pass computes those not cached."""
        out: dict[Family, UnitStatistics] = {}
        for family in families:
            cached = self.cache.load("extremes", keys[family])
            if cached is not None:
                out[family] = UnitStatistics(**cached)
        missing = [f for f in families if f not in out]
        if not missing:
            return out
        n_ext = self._n_extremes()
        n_subset = min(max(k["subset"] for k in keys.values()), len(pool.source))
        gen = torch.Generator().manual_seed(seed_from(self.config.seed, "subset"))
        subset = torch.randperm(len(pool.source), generator=gen)[:n_subset]
        search = ExemplarSearch(
            n_ext, pooling=self.config.units.pooling, subset=subset, device=self.device,
            cls_token=self.config.model_options.cls_token,
        ).fit(model, {f: sources[f].encoder() for f in missing},
              self._batches(pool, "exemplar search"))
        if search.n_images_ < 2 * n_ext:
            raise ValueError(
                f"{search.n_images_} readable images; the methods need at least "
                f"{2 * n_ext} ({n_ext} per side)"
            )
        for family in missing:
            ext = search.extremes_[family]
            out[family] = UnitStatistics(
                top_values=ext.top_values_.cpu(),
                top_indices=ext.top_indices_.cpu(),
                bottom_values=ext.bottom_values_.cpu(),
                bottom_indices=ext.bottom_indices_.cpu(),
                subset_index=ext.subset_index_.cpu(),
                subset_scores=ext.subset_scores_.cpu(),
            )
            self.cache.save("extremes", keys[family], out[family].state())
        return out

    def _sample_units(self, families, statistics) -> dict[Family, list[int]]:
        """Per layer, the same number of usable units of every source, drawn with a seed
        from the layer's and the source's names."""
        cfg = self.config
        n_ext = self._n_extremes()
        by_layer: dict[str, list[Family]] = {}
        for family in families:
            by_layer.setdefault(family[0], []).append(family)
        chosen: dict[Family, list[int]] = {}
        for layer, fams in by_layer.items():
            usable = {
                f: [u for u in range(statistics[f].n_units) if statistics[f].usable(u, n_ext)]
                for f in fams
            }
            n = min(cfg.units.per_layer, *(len(v) for v in usable.values()))
            name = layer or "the model's output"
            if n == 0:
                empty = [f[1] for f, v in usable.items() if not v]
                raise ValueError(
                    f"layer {name!r}: no usable {', '.join(empty)} units (all extremes tied)"
                )
            if n < cfg.units.per_layer:
                log.warning("layer %s: only %d usable units per source (asked %d)", name, n,
                            cfg.units.per_layer)
            for f in fams:
                rng = np.random.default_rng(seed_from(cfg.seed, "units", *f))
                chosen[f] = sorted(rng.choice(usable[f], size=n, replace=False).tolist())
        return chosen

    def _importance(self, model, pool, base_key, sources, units) -> dict[Family, list[float]]:
        cfg = self.config
        todo = [f for f in units if sources[f].has_importance()]
        out: dict[Family, list[float]] = {}
        keys = {f: {**base_key, "family": list(f), "source": sources[f].checksum(),
                    "units": units[f], "n_images": cfg.importance.n_images} for f in todo}
        for f in todo:
            cached = self.cache.load("importance", keys[f])
            if cached is not None:
                out[f] = cached["values"].tolist()
        if all(f in out for f in todo):
            return out
        gen = torch.Generator().manual_seed(seed_from(cfg.seed, "importance"))
        pick = torch.randperm(len(pool.source), generator=gen)[: cfg.importance.n_images].tolist()
        x = torch.cat(
            [xb for _, xb in iter_batches(pool.source, pool.transform, indices=sorted(pick))]
        )
        for f in tqdm([f for f in todo if f not in out], desc="importance", disable=None,
                      leave=False):
            source = sources[f]
            values = unit_importance(
                model, f[0], x, units[f], encoder=source.encoder(),
                dictionary=source.dictionary(), device=self.device,
                cls_token=cfg.model_options.cls_token,
            )
            self.cache.save("importance", keys[f], {"values": values})
            out[f] = values.tolist()
        return out

    def _method_order(self) -> list[str]:
        """The listed methods, each after those it builds on."""
        order: list[str] = []

        def visit(method_id: str) -> None:
            if method_id not in order:
                for needed in self.methods[method_id].required():
                    visit(needed)
                order.append(method_id)

        for method_id in self.config.methods:
            visit(method_id)
        return order

    def _method_key(self, method: Method) -> dict:
        """What a method's output depends on besides the units: its revision and options,
        and those of the methods it builds on."""
        return {m.id: {"revision": m.revision,
                       "options": digest_of(m.config.model_dump(mode="json"))}
                for m in [method, *(self.methods[r] for r in method.required())]}

    def _explain(self, method: Method, ctx: ExplainContext, units, stats_keys) -> dict:
        """Unit id -> the method's roles for it. Each family's units are explained in
        batches of ``method.batch_size()``, each cached under the method's key, so another
        method's change does not recompute it and an interrupted build resumes at the batch."""
        out: dict[str, dict] = {}
        options = digest_of(method.config.model_dump(mode="json"))
        for family, chosen in units.items():
            refs = [self._unit_ref(family, u) for u in chosen]
            size = method.batch_size() or len(refs)
            for start in range(0, len(refs), size):
                batch = refs[start : start + size]
                out.update(self._explain_batch(method, ctx, batch, stats_keys[family], options))
        return out

    def _explain_batch(self, method, ctx, refs, stats_key, options) -> dict:
        key = {"stats": stats_key, "method": self._method_key(method),
               "units": [r.id for r in refs], "display_size": self.config.images.display_size}
        cached = self.cache.load(f"explain-{method.id}", key)
        if cached is not None:
            for digest, tensor in cached["images"].items():
                ctx.images[digest] = tensor.numpy().tobytes()
            ctx.names.update(json.loads(cached["names"]))
            ctx.indices.update(json.loads(cached["indices"]))
            ctx.provenance.update(json.loads(cached["provenance"]))
            return json.loads(cached["explanations"])
        before = set(ctx.images)
        rngs = [np.random.default_rng(seed_from(self.config.seed, method.id, ref.id, options))
                for ref in refs]
        done = {}
        for ref, roles in zip(refs, method.explain_batch(ctx, refs, rngs), strict=True):
            done[ref.id] = {role: [item.model_dump(mode="json") for item in items]
                            for role, items in roles.items()}
        used = {d for roles in done.values() for d in _digests(roles)}
        images = {d: torch.frombuffer(bytearray(ctx.images[d]), dtype=torch.uint8)
                  for d in sorted(used | (set(ctx.images) - before))}
        names = {d: ctx.names[d] for d in images if d in ctx.names}
        indices = {d: ctx.indices[d] for d in images if d in ctx.indices}
        provenance = {method.id: ctx.provenance[method.id]} if method.id in ctx.provenance else {}
        self.cache.save(f"explain-{method.id}", key, {
            "explanations": json.dumps(done, sort_keys=True),
            "images": images, "names": json.dumps(names, sort_keys=True),
            "indices": json.dumps(indices, sort_keys=True),
            "provenance": json.dumps(provenance, sort_keys=True)})
        return done

    def _unit_ref(self, family: Family, index: int) -> UnitRef:
        layer, source_id = family
        name = layer if layer or SOURCES[source_id].fixed_layer is None else \
            SOURCES[source_id].fixed_layer_name
        return UnitRef(source=source_id, layer=layer, index=index,
                       id=f"{name}/{source_id}/{index}")

    # -- output -------------------------------------------------------------------------
    def _params(self) -> dict:
        """The config without machine-specific paths (file names only), for the provenance."""
        params = self.config.model_dump(
            mode="json", include={"seed", "sources", "methods", "images", "units", "positions",
                                  "importance"}
        )
        model = self.config.model_options.model_dump(mode="json")
        if model.get("weights"):
            model["weights"] = Path(model["weights"]).name
        params["model"] = model
        if params["images"]["source"] != "demo":
            params["images"]["source"] = Path(params["images"]["source"]).name
        params["plugins"] = self.config.plugin_tables()
        return params

    def _display(self, image: Image.Image) -> bytes:
        """The PNG a participant sees: the centre square the model saw, at display size (a
        synthetic image is already that square)."""
        size = self.config.images.display_size
        small = size is not None and min(image.size) < size
        resample = Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS
        return encode_png(center_square(image, size, resample))

    def _manifest(self, loaded, pool, sources, statistics, units, importance, explanations,
                  ctx) -> StimulusManifest:
        cfg = self.config
        entries = []
        for family, chosen in units.items():
            stats = statistics[family]
            for pos, index in enumerate(chosen):
                ref = self._unit_ref(family, index)
                covariates: dict = {
                    "unit_index": index,
                    "top_score": rounded(stats.top_values[index, 0]),
                    "bottom_score": rounded(stats.bottom_values[index, 0]),
                }
                if family in importance:
                    covariates["importance"] = rounded(importance[family][pos])
                classes = loaded.classes or []
                if SOURCES[family[1]].fixed_layer == "" and index < len(classes):
                    covariates["class"] = classes[index]
                entries.append(Entry(
                    id=ref.id,
                    type="unit",
                    source=ref.source,
                    layer=ref.id.split("/")[0],
                    covariates=covariates,
                    explanations={m: _roles(explanations[m][ref.id]) for m in cfg.methods},
                ))
        provenance = {
            "generator": "stimuli.build",
            "package_version": _package_version(),
            "model": loaded.info,
            "images": pool.description,
            "layers": cfg.model_options.layers,
            "seed": cfg.seed,
            "params": self._params(),
            "sources": {s: SOURCES[s].revision for s in cfg.sources},
            "methods": {m: METHODS[m].revision for m in cfg.methods},
            "dictionaries": {
                f"{layer}/{source_id}": source.quality()
                for (layer, source_id), source in sorted(sources.items())
                if source.needs_fit
            },
            "method_details": dict(sorted(ctx.provenance.items())),
            "image_names": dict(sorted(ctx.names.items())),
        }
        return StimulusManifest(
            schema_version=SCHEMA_VERSION, name=cfg.name, provenance=provenance, entries=entries
        )


def _digests(roles: dict) -> set[str]:
    """Image digests named in JSON roles (images, maps, both sides of pairs)."""
    out: set[str] = set()
    for items in roles.values():
        for item in items:
            for ref in (item["max"], item["min"]) if "max" in item else (item,):
                out.add(ref["image"])
                if ref.get("map"):
                    out.add(ref["map"])
    return out


def _roles(roles: dict) -> dict:
    """JSON roles as manifest items."""
    return {
        role: [Pair.model_validate(i) if "max" in i else ImageRef.model_validate(i) for i in items]
        for role, items in roles.items()
    }


def _remove_stale_images(directory: Path, manifest: StimulusManifest) -> None:
    """Delete content-addressed PNGs an earlier build left that this manifest does not name."""
    keep = manifest.image_digests()
    for path in sorted((Path(directory) / IMAGE_DIR).glob("*.png")):
        if len(path.stem) == 64 and path.stem not in keep:
            path.unlink()
            log.info("removed stale image %s", path.name)

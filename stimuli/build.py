"""Build a stimulus set from a model, a layer list and an image pool: ``build_stimuli(path)``.

Stages, each cached under the cache directory keyed by a hash of its inputs (so a second run
reuses finished work): the demo model's training, position samples, NMF and SAE fits, the
exemplar search, and unit importance. The same config and seed give a byte-identical set.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from stimuli.activations import sample_positions
from stimuli.build_config import BuildConfig, load_build_config
from stimuli.cache import TensorCache
from stimuli.demo_model import load_demo_model
from stimuli.exemplars import ExemplarSearch, is_usable, split_exemplars
from stimuli.images import ArrayImages, ImageFolder, ImageSource, ImageTransform, iter_batches
from stimuli.importance import unit_importance
from stimuli.models import get_layer, load_factory_model, load_vision_model, model_checksum
from stimuli.nmf import NMF
from stimuli.sae import TopKSAE
from stimuli.stimulus_set import (
    IMAGE_DIR,
    SCHEMA_VERSION,
    QueryPair,
    References,
    StimulusManifest,
    Unit,
    encode_png,
    image_digest,
    write_stimulus_set,
)

log = logging.getLogger(__name__)

KINDS = ("neuron", "nmf", "sae")


def build_stimuli(config_path: str | Path, output: str | Path | None = None) -> str:
    """Build the stimulus set a build TOML describes (into ``output`` if given, instead of
    the config's own); returns the set's digest."""
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


def _round(x: float) -> float:
    return float(f"{float(x):.6g}")


class StimulusBuilder:
    """Runs the stages of a build for one validated :class:`BuildConfig`."""

    def __init__(self, config: BuildConfig):
        self.config = config
        self.cache = TensorCache(config.cache_dir)
        self.device = torch.device(config.device)

    # -- model and images ---------------------------------------------------------------
    def _load_model(self) -> tuple[nn.Module, dict, np.ndarray | None]:
        m = self.config.model
        pool_images = None
        if m.source == "demo":
            demo = load_demo_model(
                data=m.data,
                train_samples=m.train_samples,
                epochs=m.epochs,
                seed=self.config.seed,
                cache_dir=self.cache.directory,
                device=self.device,
            )
            model, pool_images = demo.model, demo.dataset.images
            info = {"source": "demo", "name": "DemoCNN", "data": demo.dataset.name}
            info["held_out_accuracy"] = _round(demo.accuracy)
        elif m.source == "factory":
            model = load_factory_model(m.factory, m.weights)
            info = {"source": "factory", "name": m.factory}
        else:
            model = load_vision_model(m.source, m.arch, m.weights)
            info = {"source": m.source, "name": m.arch}
        model = model.to(self.device).eval()
        for layer in m.layers:
            get_layer(model, layer)
        info["checksum"] = model_checksum(model)
        return model, info, pool_images

    def _image_pool(self, demo_images: np.ndarray | None) -> _Pool:
        cfg = self.config.images
        if cfg.source == "demo":
            if demo_images is None:
                raise ValueError("images.source = 'demo' needs model.source = 'demo'")
            images = demo_images[: cfg.limit] if cfg.limit else demo_images
            source: ImageSource = ArrayImages(images, name="demo")
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
        batches = iter_batches(
            pool.source, pool.transform, batch_size=self.config.images.batch_size, indices=indices
        )
        total = -(
            -(len(pool.source) if indices is None else len(indices))
            // self.config.images.batch_size
        )
        return tqdm(batches, total=total, desc=desc, unit="batch", disable=None, leave=False)

    # -- stages -------------------------------------------------------------------------
    def build(self) -> str:
        cfg = self.config
        model, model_info, demo_images = self._load_model()
        pool = self._image_pool(demo_images)
        base_key = {
            "model": model_info["checksum"],
            "images": pool.fingerprint,
            "transform": repr(pool.transform),
            "seed": cfg.seed,
        }
        dictionaries = self._fit_dictionaries(model, pool, base_key)
        search = self._search(model, pool, base_key, dictionaries)
        units = self._sample_units(search)
        importance = self._importance(model, pool, base_key, dictionaries, units)
        manifest, images = self._manifest(pool, model_info, dictionaries, search, units, importance)
        digest = write_stimulus_set(cfg.output, manifest, images)
        _remove_stale_images(cfg.output, manifest)
        log.info(
            "wrote stimulus set %s (%d units) to %s", digest[:12], len(manifest.units), cfg.output
        )
        return digest

    def _fit_dictionaries(self, model, pool, base_key) -> dict[tuple[str, str], NMF | TopKSAE]:
        cfg, dcfg = self.config, self.config.dictionary
        kinds = [k for k in cfg.units.kinds if k != "neuron"]
        if not kinds:
            return {}
        pos_key = {**base_key, "layers": cfg.model.layers, "fit_samples": dcfg.fit_samples}
        pos_key["positions_per_image"] = dcfg.positions_per_image
        positions = self.cache.load("positions", pos_key)
        if positions is None:
            # a seeded random subset of the images (in source order), so that a folder sorted
            # by class does not give the dictionaries only its first classes
            gen = torch.Generator().manual_seed(cfg.seed)
            n_img = min(len(pool.source), -(-dcfg.fit_samples // dcfg.positions_per_image))
            images = sorted(torch.randperm(len(pool.source), generator=gen)[:n_img].tolist())
            positions = sample_positions(
                model,
                cfg.model.layers,
                self._batches(pool, "sampling activations", images),
                per_image=dcfg.positions_per_image,
                max_samples=dcfg.fit_samples,
                generator=gen,
                device=self.device,
            )
            self.cache.save("positions", pos_key, positions)
        fitted = {}
        for layer in cfg.model.layers:
            X = positions[layer]  # M, C
            k = min(dcfg.n_components, X.shape[1]) if "nmf" in kinds else dcfg.n_components
            for kind in kinds:
                key = {**pos_key, "layer": layer, "kind": kind, "params": dcfg.model_dump()}
                est = self._estimator(kind, k)
                state = self.cache.load(f"dict-{kind}", key)
                if state is None:
                    log.info("fitting %s on %s: X %s", kind, layer, tuple(X.shape))
                    data = X
                    if kind == "nmf" and (X < 0).any():
                        log.warning(
                            "%s has negative activations; NMF sees them clamped at 0", layer
                        )
                        data = X.clamp(min=0)
                    est.fit(data.to(self.device))
                    self.cache.save(f"dict-{kind}", key, est.state())
                else:
                    est.load_state(state)
                fitted[(layer, kind)] = est
        return fitted

    def _estimator(self, kind: str, k: int) -> NMF | TopKSAE:
        d, seed = self.config.dictionary, self.config.seed
        if kind == "nmf":
            return NMF(k, max_iter=d.nmf_max_iter, random_state=seed, device=self.device)
        return TopKSAE(
            k,
            k=min(d.sae_k, k),
            epochs=d.sae_epochs,
            decoder_bias=False,
            random_state=seed,
            device=self.device,
        )

    def _search(self, model, pool, base_key, dictionaries) -> dict:
        cfg = self.config
        params = cfg.exemplars.split_params()
        n_subset = min(cfg.exemplars.subset_size, len(pool.source))
        key = {
            **base_key,
            "layers": cfg.model.layers,
            "kinds": cfg.units.kinds,
            "dictionary": cfg.dictionary.model_dump(),
            "pooling": cfg.units.pooling,
            "n_extremes": params.n_extremes,
            "subset": n_subset,
        }
        cached = self.cache.load("exemplars", key)
        if cached is not None:
            return cached
        gen = torch.Generator().manual_seed(cfg.seed)
        subset = torch.randperm(len(pool.source), generator=gen)[:n_subset]
        units = {}
        for layer in cfg.model.layers:
            for kind in cfg.units.kinds:
                units[(layer, kind)] = (
                    None if kind == "neuron" else dictionaries[(layer, kind)].encode
                )
        search = ExemplarSearch(
            params.n_extremes, pooling=cfg.units.pooling, subset=subset, device=self.device
        ).fit(model, units, self._batches(pool, "exemplar search"))
        if search.n_images_ < 2 * params.n_extremes:
            raise ValueError(
                f"{search.n_images_} readable images; the split needs at least "
                f"{2 * params.n_extremes} ({params.n_extremes} per side)"
            )
        result = {}
        for (layer, kind), ext in search.extremes_.items():
            result[f"{layer}|{kind}"] = {
                "top_values": ext.top_values_.cpu(),
                "top_indices": ext.top_indices_.cpu(),
                "bottom_values": ext.bottom_values_.cpu(),
                "bottom_indices": ext.bottom_indices_.cpu(),
                "subset_index": ext.subset_index_.cpu(),
                "subset_scores": ext.subset_scores_.cpu(),
            }
        self.cache.save("exemplars", key, result)
        return result

    def _sample_units(self, search: dict) -> dict[tuple[str, str], list[int]]:
        """Per layer, the same number of usable units of every kind, drawn with the seed."""
        cfg = self.config
        n_ext = cfg.exemplars.split_params().n_extremes
        chosen = {}
        for li, layer in enumerate(cfg.model.layers):
            usable = {}
            for kind in cfg.units.kinds:
                ext = _Extremes(search[f"{layer}|{kind}"])
                usable[kind] = [u for u in range(ext.n_units) if is_usable(ext, u, n_ext)]
            n = min(cfg.units.per_layer, *(len(v) for v in usable.values()))
            if n == 0:
                empty = [k for k, v in usable.items() if not v]
                raise ValueError(
                    f"layer {layer!r}: no usable {', '.join(empty)} units (all extremes tied)"
                )
            if n < cfg.units.per_layer:
                log.warning(
                    "layer %s: only %d usable units per kind (asked %d)",
                    layer,
                    n,
                    cfg.units.per_layer,
                )
            rng = np.random.default_rng([cfg.seed, li])
            for kind in cfg.units.kinds:
                chosen[(layer, kind)] = sorted(
                    rng.choice(usable[kind], size=n, replace=False).tolist()
                )
        return chosen

    def _importance(self, model, pool, base_key, dictionaries, units) -> dict:
        cfg = self.config
        key = {**base_key, "units": sorted(f"{k[0]}|{k[1]}|{v}" for k, v in units.items())}
        key.update(n_images=cfg.importance.n_images, dictionary=cfg.dictionary.model_dump())
        cached = self.cache.load("importance", key)
        if cached is not None:
            return cached
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        pick = torch.randperm(len(pool.source), generator=gen)[: cfg.importance.n_images].tolist()
        x = torch.cat(
            [xb for _, xb in iter_batches(pool.source, pool.transform, indices=sorted(pick))]
        )
        result = {}
        for (layer, kind), chosen in tqdm(
            units.items(), desc="importance", disable=None, leave=False
        ):
            est = dictionaries.get((layer, kind))
            values = unit_importance(
                model,
                layer,
                x,
                chosen,
                encoder=est.encode if est is not None else None,
                dictionary=est.get_dictionary() if est is not None else None,
                device=self.device,
            )
            result[f"{layer}|{kind}"] = values
        self.cache.save("importance", key, result)
        return result

    # -- output -------------------------------------------------------------------------
    def _params(self) -> dict:
        """The config without machine-specific paths (file names only), for the provenance."""
        params = self.config.model_dump(
            mode="json", exclude={"output", "cache_dir", "device", "name"}
        )
        if params["model"]["weights"]:
            params["model"]["weights"] = Path(params["model"]["weights"]).name
        if params["images"]["source"] != "demo":
            params["images"]["source"] = Path(params["images"]["source"]).name
        return params

    def _render(self, pool: _Pool, index: int) -> bytes:
        image = pool.source.load(index)
        size = self.config.images.display_size
        if size is not None and image.size != (size, size):
            small = max(image.size) < size
            resample = Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS
            image = image.resize((size, size), resample)
        return encode_png(image)

    def _manifest(self, pool, model_info, dictionaries, search, units, importance):
        cfg = self.config
        params = cfg.exemplars.split_params()
        digests: dict[int, str] = {}
        images: dict[str, bytes] = {}

        def png(index: int) -> str:
            if index not in digests:
                data = self._render(pool, index)
                digests[index] = image_digest(data)
                images[digests[index]] = data
            return digests[index]

        manifest_units = []
        for li, layer in enumerate(cfg.model.layers):
            for kind in cfg.units.kinds:
                ext = _Extremes(search[f"{layer}|{kind}"])
                for pos, unit in enumerate(units[(layer, kind)]):
                    rng = np.random.default_rng([cfg.seed, li, KINDS.index(kind), unit])
                    split = split_exemplars(
                        ext.top_indices_[unit].numpy(),
                        ext.bottom_indices_[unit].numpy(),
                        params,
                        rng,
                        subset_index=ext.subset_index_.numpy(),
                        subset_scores=ext.subset_scores_[:, unit].numpy(),
                    )
                    manifest_units.append(
                        Unit(
                            id=f"{layer}/{kind}/{unit}",
                            kind=kind,
                            layer=layer,
                            covariates={
                                "importance": _round(importance[f"{layer}|{kind}"][pos]),
                                "unit_index": unit,
                                "top_score": _round(ext.top_values_[unit, 0]),
                                "bottom_score": _round(ext.bottom_values_[unit, 0]),
                            },
                            references=References(
                                max=[png(i) for i in split.references_max],
                                min=[png(i) for i in split.references_min],
                            ),
                            queries=[QueryPair(max=png(a), min=png(b)) for a, b in split.queries],
                            catch=[QueryPair(max=png(a), min=png(b)) for a, b in split.catch],
                        )
                    )
        provenance = {
            "generator": "stimuli.build",
            "package_version": _package_version(),
            "model": model_info,
            "images": pool.description,
            "layers": cfg.model.layers,
            "seed": cfg.seed,
            "params": self._params(),
            "dictionaries": {
                f"{layer}/{kind}": _quality(est)
                for (layer, kind), est in sorted(dictionaries.items())
            },
            "image_names": {digests[i]: pool.source.name(i) for i in sorted(digests)},
        }
        manifest = StimulusManifest(
            schema_version=SCHEMA_VERSION,
            name=cfg.name,
            provenance=provenance,
            units=manifest_units,
        )
        return manifest, images


class _Extremes:
    """A cached search result read back with :class:`RunningExtremes`' attribute names."""

    def __init__(self, entry: dict):
        self.top_values_ = entry["top_values"]
        self.top_indices_ = entry["top_indices"]
        self.bottom_values_ = entry["bottom_values"]
        self.bottom_indices_ = entry["bottom_indices"]
        self.subset_index_ = entry["subset_index"]
        self.subset_scores_ = entry["subset_scores"]
        self.n_units = self.top_values_.shape[0]


def _quality(est: NMF | TopKSAE) -> dict:
    dead = est.dead_components_ if isinstance(est, NMF) else est.dead_features_
    return {
        "method": "nmf-hals" if isinstance(est, NMF) else "topk-sae",
        "n_components": int(est.get_dictionary().shape[0]),
        "relative_error": _round(est.relative_error_),
        "explained_variance": _round(est.explained_variance_),
        "dead": len(dead),
        "checksum": hashlib.sha256(est.get_dictionary().cpu().numpy().tobytes()).hexdigest(),
    }


def _remove_stale_images(directory: Path, manifest: StimulusManifest) -> None:
    """Delete content-addressed PNGs an earlier build left that this manifest does not name."""
    keep = manifest.image_digests()
    for path in sorted((Path(directory) / IMAGE_DIR).glob("*.png")):
        if len(path.stem) == 64 and path.stem not in keep:
            path.unlink()
            log.info("removed stale image %s", path.name)

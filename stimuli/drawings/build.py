"""A stimulus set of one-shot drawings: per evaluation category of a corpus, its exemplar,
drawings of it by the latent diffusion model of each regularized autoencoder, and the
corpus's own drawings of it (``human``), each scored by the critics.

Everything is trained on the corpus's background categories only; the set's categories are
evaluation categories, so every machine drawing is a one-shot generalization. A build file
with a ``[corpus]`` table is a drawing build (``assay stimuli build`` tells them apart)::

    name = "demo-drawings"
    output = "build/stimuli/drawings"
    methods = ["drawings"]
    [corpus]
    source = "hershey"       # or "omniglot" / "quickdraw" with path = ...
    size = 48
    [drawings]
    regularizers = ["kl", "vq", "classification", "prototype", "simclr", "barlow"]
    categories = 24          # evaluation categories in the set
    per_category = 6         # drawings per drawer and category

The critics' figures (originality and recognizability per drawer, the plane of Boutin et
al.) go into the provenance; each drawing's originality into its ``meta``.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stimuli.cache import TensorCache, default_cache_dir, seed_from
from stimuli.drawings.corpus import DrawingCorpus
from stimuli.methods.base import Method, MethodConfig, RoleKind
from stimuli.stimulus_set import (
    SCHEMA_VERSION,
    Entry,
    ImageRef,
    StimulusManifest,
    encode_png,
    image_digest,
    rounded,
    write_stimulus_set,
)

log = logging.getLogger(__name__)

REGULARIZERS = ("kl", "vq", "classification", "prototype", "simclr", "barlow")
HUMAN = "human"
Regularizer = Literal["kl", "vq", "classification", "prototype", "simclr", "barlow"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusConfig(_Strict):
    source: Literal["hershey", "omniglot", "quickdraw"] = "hershey"
    path: Path | None = None  # omniglot: its folder; quickdraw: its .npz
    size: int = Field(48, ge=16, le=128)
    variants: int = Field(10, ge=2, le=200)  # hershey: drawers (rendered variants) per font
    alphabets: list[str] | None = None  # hershey: these alphabets only (default: all)

    @model_validator(mode="after")
    def _path(self) -> CorpusConfig:
        if self.source != "hershey" and self.path is None:
            raise ValueError(f"corpus.source = {self.source!r} needs corpus.path")
        return self


class DrawingsConfig(MethodConfig):
    regularizers: list[Regularizer] = Field(default_factory=lambda: list(REGULARIZERS),
                                            min_length=1)
    categories: int | None = Field(24, ge=2)  # evaluation categories shown; None: all
    per_category: int = Field(6, ge=1, le=50)  # drawings per drawer and category
    guidance: float | None = None  # classifier-free guidance; None: the model's default
    ways: int = Field(20, ge=2)  # recognizability: N-way one-shot classification
    display_size: int = Field(144, ge=16, le=1024)
    autoencoder: dict[str, Any] = Field(default_factory=dict)  # options but `regularizer`
    diffusion: dict[str, Any] = Field(default_factory=dict)
    originality: dict[str, Any] = Field(default_factory=dict)
    recognizability: dict[str, Any] = Field(default_factory=dict)


class Drawings(Method):
    """The registry's entry for drawing sets (built by :func:`build_drawings`, from a corpus
    rather than from a model's units): one role per drawer."""

    id = "drawings"
    revision = 1
    Config = DrawingsConfig
    description = ("one-shot drawings of held-out categories by regularized latent "
                   "diffusion models, beside the corpus's own ('human')")
    roles: ClassVar[dict[str, RoleKind]] = {d: "images" for d in (HUMAN, *REGULARIZERS)}
    explains_units = False

    def unsupported(self, source) -> str | None:
        return ("it draws the categories of a corpus (a build file with a [corpus] table), "
                "it explains no units")


class DrawingBuildConfig(_Strict):
    name: str = Field(min_length=1, max_length=200)
    output: Path
    seed: int = 0
    device: str = "cpu"
    cache_dir: Path | None = None
    methods: list[Literal["drawings"]] = Field(default_factory=lambda: ["drawings"])
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    drawings: DrawingsConfig = Field(default_factory=DrawingsConfig)


def is_drawing_build(path: Path) -> bool:
    try:
        return "corpus" in tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False


def load_drawing_config(path: Path) -> DrawingBuildConfig:
    """Read and validate a drawing build file; relative paths are relative to it. Every
    problem is reported at once, one line each."""
    from stimuli.build_config import BuildConfigError

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BuildConfigError(f"cannot read build config {path}: {exc}") from None
    base = path.resolve().parent
    for table, key in ((raw, "output"), (raw, "cache_dir"), (raw.get("corpus"), "path")):
        if isinstance(table, dict) and isinstance(table.get(key), str):
            table[key] = str(base / table[key])
    try:
        return DrawingBuildConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                 for e in exc.errors()]
        raise BuildConfigError("\n".join([f"{path}: invalid build config", *lines])) from None


def load_corpus(config: CorpusConfig, *, seed: int, cache_dir: Path) -> DrawingCorpus:
    if config.source == "hershey":
        from stimuli.drawings.hershey import hershey_corpus

        alphabets = tuple(config.alphabets) if config.alphabets is not None else None
        return hershey_corpus(size=config.size, variants=config.variants, seed=seed,
                              cache=TensorCache(cache_dir), alphabets=alphabets)
    from stimuli.drawings import datasets

    if config.path is None:
        raise ValueError(f"corpus.source = {config.source!r} needs corpus.path")
    if config.source == "omniglot":
        return datasets.omniglot_corpus(config.path, size=config.size)
    return datasets.quickdraw_fs_corpus(config.path, size=config.size)


def build_drawings(config_path: str | Path, output: str | Path | None = None) -> str:
    """Build the drawing set a build file describes; returns the set's digest."""
    config = load_drawing_config(Path(config_path))
    if output is not None:
        config = config.model_copy(update={"output": Path(output).resolve()})
    return DrawingBuilder(config).build()


class DrawingBuilder:
    def __init__(self, config: DrawingBuildConfig):
        self.config = config
        self.cache_dir = config.cache_dir or default_cache_dir()

    def build(self) -> str:
        cfg, opts = self.config, self.config.drawings
        corpus = load_corpus(cfg.corpus, seed=cfg.seed, cache_dir=self.cache_dir)
        background, evaluation = corpus.split("background"), corpus.split("evaluation")
        originality, recognizability = self.critics(background)
        chosen, exemplars, human = self.sample(evaluation)
        drawers: dict[str, np.ndarray] = {HUMAN: human}  # drawer -> (E, n, S, S)
        for regularizer in opts.regularizers:
            model = self.model(background, regularizer)
            drawers[regularizer] = model.draw(
                exemplars, opts.per_category, seed=seed_from(cfg.seed, "draw", regularizer),
                guidance=opts.guidance)
        scores = self.scores(drawers, exemplars, chosen, evaluation, originality,
                              recognizability)
        return self._write(corpus, evaluation, chosen, exemplars, drawers, scores)

    def model(self, background: DrawingCorpus, regularizer: str):
        """The regularizer's latent diffusion model, on its autoencoder (both cached)."""
        return self.diffusion(self.autoencoder(background, regularizer), background,
                              regularizer)

    def autoencoder(self, background: DrawingCorpus, regularizer: str):
        from stimuli.drawings.autoencoder import AutoencoderConfig, train_autoencoder

        cfg, opts = self.config, self.config.drawings
        return train_autoencoder(
            background, AutoencoderConfig(regularizer=regularizer, **opts.autoencoder),
            seed=seed_from(cfg.seed, "autoencoder", regularizer), cache_dir=self.cache_dir,
            device=cfg.device)

    def diffusion(self, autoencoder, background: DrawingCorpus, regularizer: str):
        from stimuli.drawings.diffusion import DiffusionConfig, train_diffusion

        cfg, opts = self.config, self.config.drawings
        return train_diffusion(autoencoder, background, DiffusionConfig(**opts.diffusion),
                               seed=seed_from(cfg.seed, "diffusion", regularizer),
                               cache_dir=self.cache_dir, device=cfg.device)

    def critics(self, background: DrawingCorpus):
        """The originality and the recognizability critic (cached)."""
        from stimuli.drawings.critics import (
            OriginalityConfig,
            RecognizabilityConfig,
            train_originality_critic,
            train_recognizability_critic,
        )

        cfg, opts = self.config, self.config.drawings
        train = {"seed": cfg.seed, "cache_dir": self.cache_dir, "device": cfg.device}
        return (train_originality_critic(background, OriginalityConfig(**opts.originality),
                                         **train),
                train_recognizability_critic(
                    background, RecognizabilityConfig(**opts.recognizability), **train))

    def sample(self, evaluation: DrawingCorpus):
        """The categories shown (seeded), each with an exemplar and ``per_category`` other
        drawings of it (the human role), not the exemplar itself."""
        opts = self.config.drawings
        n = opts.per_category
        counts = np.bincount(evaluation.labels, minlength=len(evaluation.categories))
        usable = np.flatnonzero(counts >= n + 1)
        if len(usable) < 2:
            raise ValueError(f"the evaluation split has {len(usable)} categories with at "
                             f"least {n + 1} drawings (an exemplar and per_category = {n})")
        rng = np.random.default_rng(seed_from(self.config.seed, "categories"))
        k = len(usable) if opts.categories is None else min(opts.categories, len(usable))
        chosen = np.sort(rng.choice(usable, size=k, replace=False))
        exemplars, human = [], []
        for c in chosen:
            pick = self._order(evaluation, c)
            exemplars.append(evaluation.images[pick[0]])
            human.append(evaluation.images[pick[1 : n + 1]])
        return chosen, np.stack(exemplars), np.stack(human)

    def scores(self, drawers, exemplars, chosen, evaluation, originality, recognizability):
        """Per drawer: each drawing's originality (E, n), its mean, and the recognizability
        of its drawings among all of the evaluation split's categories."""
        opts = self.config.drawings
        all_exemplars = self._category_exemplars(evaluation)
        out = {}
        for drawer, drawings in drawers.items():
            e, n = drawings.shape[:2]
            flat = drawings.reshape(e * n, *drawings.shape[2:])
            per = originality.originality(flat, np.repeat(exemplars, n, axis=0)).reshape(e, n)
            labels = np.repeat(chosen, n)
            result = recognizability.recognizability(
                flat, labels, all_exemplars, ways=min(opts.ways, len(all_exemplars)),
                seed=seed_from(self.config.seed, "recognizability", drawer))
            out[drawer] = {"per_drawing": per, "originality": float(per.mean()),
                           "recognizability": float(result.accuracy)}
        return out

    def _order(self, evaluation: DrawingCorpus, category: int) -> np.ndarray:
        """The category's drawings (row indices) in a seeded order: the first is its
        exemplar, the next ones its human drawings."""
        rows = np.flatnonzero(evaluation.labels == category)
        rng = np.random.default_rng(
            seed_from(self.config.seed, "exemplar", evaluation.categories[category].id))
        return rng.permutation(rows)

    def _category_exemplars(self, evaluation: DrawingCorpus) -> np.ndarray:
        """One exemplar per evaluation category (C, S, S), the same as the set's for the
        categories it shows."""
        return np.stack([evaluation.images[self._order(evaluation, c)[0]]
                         for c in range(len(evaluation.categories))])

    def _write(self, corpus, evaluation, chosen, exemplars, drawers, scores) -> str:
        cfg, opts = self.config, self.config.drawings
        images: dict[str, bytes] = {}

        def ref(drawing: np.ndarray, meta: dict | None = None) -> ImageRef:
            data = png(drawing, opts.display_size)
            digest = image_digest(data)
            images[digest] = data
            return ImageRef(image=digest, meta=meta or {})

        entries = []
        for i, c in enumerate(chosen):
            category = evaluation.categories[c]
            roles = {
                drawer: [ref(d, {"originality": rounded(scores[drawer]["per_drawing"][i, j])})
                         for j, d in enumerate(drawings[i])]
                for drawer, drawings in drawers.items()
            }
            entries.append(Entry(
                id=category.id, type="category", source=corpus.name.split(":")[0],
                covariates={"alphabet": category.alphabet},
                stimulus=ref(exemplars[i]), explanations={"drawings": roles}))
        provenance = {
            "generator": "stimuli.drawings.build",
            "corpus": {"name": corpus.name, "human": corpus.human, "size": corpus.size,
                       "n_drawings": len(corpus.images),
                       "background_categories": sum(c.split == "background"
                                                    for c in corpus.categories),
                       "evaluation_categories": len(evaluation.categories)},
            "seed": cfg.seed,
            "params": cfg.model_dump(mode="json", exclude={"output", "cache_dir"}),
            "methods": {"drawings": Drawings.revision},
            "critics": {d: {"originality": rounded(s["originality"]),
                            "recognizability": rounded(s["recognizability"])}
                        for d, s in scores.items()},
        }
        if cfg.corpus.path is not None:
            provenance["params"]["corpus"]["path"] = cfg.corpus.path.name
        manifest = StimulusManifest(schema_version=SCHEMA_VERSION, name=cfg.name,
                                    provenance=provenance, entries=entries)
        digest = write_stimulus_set(cfg.output, manifest, images)
        log.info("wrote drawing set %s (%d categories) to %s", digest[:12], len(entries),
                 cfg.output)
        return digest


def png(drawing: np.ndarray, size: int) -> bytes:
    """A drawing (S, S) uint8, ink 255 on 0, as participants see it: dark ink on white."""
    image = Image.fromarray(255 - drawing.astype(np.uint8))  # 2-D uint8: mode L
    return encode_png(image.resize((size, size), Image.Resampling.LANCZOS))

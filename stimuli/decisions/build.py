"""A stimulus set of a model's decisions, explained: for the utility benchmark.

A build file with a ``[scenario]`` table is a decision build (``assay stimuli build`` tells
it apart)::

    name = "demo-utility"
    output = "build/stimuli/utility"
    methods = ["saliency", "gradcam", "lowpass"]
    [model]
    source = "shortcut"        # a CNN trained on a shortcut dataset (stimuli/decisions/models.py)
    arch = "cnn"               # or "lipschitz"
    [scenario]
    kind = "biased"            # or "failures": images the model gets wrong, and as many right
    learning = 48              # images of the learning phase
    evaluation = 48            # images of the evaluation phase

Each image becomes a ``decision`` entry: its PNG, the model's decision and the label (and
the shortcut dataset's latent features) as covariates, and per method an ``explanation``:
the map over the image as participants see it (``image``), the raw map (``map``) and its
faithfulness (deletion, insertion, MuFidelity of the decided class) in ``meta``.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from stimuli.attribution.faithfulness import deletion, insertion, mufidelity
from stimuli.attribution.overlay import overlay
from stimuli.build_config import BuildConfigError, read_build_toml
from stimuli.cache import default_cache_dir, seed_from
from stimuli.decisions.context import DecisionContext
from stimuli.decisions.methods import DECISION_METHODS, DecisionMethod
from stimuli.decisions.models import ShortcutModelConfig, load_shortcut_model
from stimuli.shortcuts import ShortcutData, make_dataset
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioConfig(_Strict):
    kind: Literal["biased", "failures"] = "biased"
    source: str | None = Field(None, min_length=1, max_length=50)  # entries' source (default: kind)
    learning: int = Field(48, ge=2, le=5000)
    evaluation: int = Field(48, ge=2, le=5000)
    # biased: the share of images whose shortcut contradicts their shape (where a biased
    # model's decisions depart from the label); failures: the share the model gets wrong
    conflict: float = Field(0.5, ge=0.0, le=1.0)
    display_size: int = Field(192, ge=16, le=1024)
    batch_size: int = Field(64, ge=1, le=4096)


class FaithfulnessConfig(_Strict):
    steps: int = Field(16, ge=2, le=1024)  # deletion / insertion curve points
    subsets: int = Field(64, ge=8, le=4096)  # MuFidelity random subsets


class DecisionBuildConfig(_Strict):
    model_config = ConfigDict(extra="allow", frozen=True)  # one table per listed method

    name: str = Field(min_length=1, max_length=200)
    output: Path
    seed: int = 0
    device: str = "cpu"
    cache_dir: Path | None = None
    methods: list[str] = Field(min_length=1)
    model: ShortcutModelConfig = Field(default_factory=ShortcutModelConfig)
    scenario: ScenarioConfig = Field(default_factory=ScenarioConfig)
    faithfulness: FaithfulnessConfig = Field(default_factory=FaithfulnessConfig)


def is_decision_build(path: Path) -> bool:
    try:
        return "scenario" in tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False


def load_decision_config(path: Path) -> tuple[DecisionBuildConfig, list[DecisionMethod]]:
    """Read and validate a decision build file and its methods' tables; relative paths are
    relative to it. Every problem is reported at once, one line each."""
    path = Path(path)
    raw, base = read_build_toml(path)
    for key in ("output", "cache_dir"):
        if isinstance(raw.get(key), str):
            raw[key] = str(base / raw[key])
    problems: list[str] = []
    config = None
    try:
        config = DecisionBuildConfig.model_validate(raw)
    except ValidationError as exc:
        problems += [f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                     for e in exc.errors()]
    listed = raw.get("methods") if isinstance(raw.get("methods"), list) else []
    methods = []
    for i, method_id in enumerate(listed):
        cls = DECISION_METHODS.get(method_id)
        if cls is None:
            problems.append(f"methods.{i}: {method_id!r} does not explain decisions (known: "
                            f"{', '.join(DECISION_METHODS)})")
            continue
        try:
            methods.append(cls(cls.Config.model_validate(raw.get(method_id, {}))))
        except ValidationError as exc:
            problems += [f"{method_id}.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                         for e in exc.errors()]
    own = set(DecisionBuildConfig.model_fields)
    for key in sorted(set(raw) - own - set(listed)):
        problems.append(f"{key}: unknown setting (a table must be named after a listed method)")
    if problems or config is None:
        raise BuildConfigError("\n".join([f"{path}: invalid build config",
                                          *(f"  {p}" for p in problems)]))
    return config, methods


def build_decisions(config_path: str | Path, output: str | Path | None = None) -> str:
    """Build the decision set a build file describes; returns the set's digest."""
    config, methods = load_decision_config(Path(config_path))
    if output is not None:
        config = config.model_copy(update={"output": Path(output).resolve()})
    return DecisionBuilder(config, methods).build()


class DecisionBuilder:
    def __init__(self, config: DecisionBuildConfig, methods: list[DecisionMethod]):
        self.config = config
        self.methods = methods
        self.cache_dir = config.cache_dir or default_cache_dir()
        self.device = torch.device(config.device if config.device != "cuda"
                                   or torch.cuda.is_available() else "cpu")

    def build(self) -> str:
        cfg = self.config
        trained = load_shortcut_model(cfg.model, seed=cfg.seed, cache_dir=self.cache_dir,
                                      device=self.device)
        ctx = DecisionContext(trained.model, self.device, cfg.model.data, cfg.seed,
                              trained.classes)
        x, data, decisions, confidence, phase = self.images(ctx)
        explained: dict[str, dict[str, Any]] = {}
        for method in self.methods:
            explained[method.id] = self.explain(ctx, method, x, decisions)
        return self._write(trained, ctx, x, data, decisions, confidence, phase, explained)

    def images(self, ctx: DecisionContext):
        """The scenario's images (N, 3, S, S), their latents, the model's decisions and
        confidences, and each image's phase (learning / evaluation), balanced over
        decisions."""
        cfg = self.config.scenario
        n = cfg.learning + cfg.evaluation
        seed = seed_from(self.config.seed, "scenario", cfg.kind)
        if cfg.kind == "biased":
            n_conflict = round(cfg.conflict * n)
            parts = [make_dataset(self.config.model.data, n_conflict, seed=seed, conflict=True),
                     make_dataset(self.config.model.data, n - n_conflict, seed=seed + 1,
                                  conflict=False)]
        else:
            pool = make_dataset(self.config.model.data, 20 * n, seed=seed)
            wrong = ctx.decide(pool.images)[0] != pool.labels
            n_wrong = min(round(cfg.conflict * n), int(wrong.sum()))
            rows = torch.cat([torch.nonzero(wrong).flatten()[:n_wrong],
                              torch.nonzero(~wrong).flatten()[:n - n_wrong]])
            parts = [take(pool, rows)]
        data = parts[0] if len(parts) == 1 else concat(parts[0], parts[1])
        decisions, confidence = ctx.decide(data.images)
        rng = np.random.default_rng(seed_from(self.config.seed, "phase"))
        phase = np.empty(n, dtype=object)
        for d in np.unique(decisions.numpy()):  # each decision split in proportion
            rows = rng.permutation(np.flatnonzero(decisions.numpy() == d))
            k = round(len(rows) * cfg.learning / n)
            phase[rows[:k]], phase[rows[k:]] = "learning", "evaluation"
        return data.images, data, decisions, confidence, phase

    def explain(self, ctx: DecisionContext, method: DecisionMethod, x: torch.Tensor,
                decisions: torch.Tensor) -> dict[str, Any]:
        """The method's maps (N, H, W) and their faithfulness, batch by batch."""
        cfg, faith = self.config.scenario, self.config.faithfulness
        maps, scores = [], {"deletion": [], "insertion": [], "mufidelity": []}
        seed = seed_from(self.config.seed, "explain", method.id)
        for start in tqdm(range(0, len(x), cfg.batch_size), desc=method.id, leave=False):
            xb, tb = x[start:start + cfg.batch_size], decisions[start:start + cfg.batch_size]
            m = method.maps(ctx, xb.to(self.device), tb.to(self.device), seed + start)
            m = m.detach().float().cpu()
            maps.append(m)
            scores["deletion"].append(deletion(ctx.model, xb, tb, m, steps=faith.steps))
            scores["insertion"].append(insertion(ctx.model, xb, tb, m, steps=faith.steps))
            scores["mufidelity"].append(mufidelity(ctx.model, xb, tb, m, n=faith.subsets,
                                                   seed=seed + start))
        return {"maps": torch.cat(maps),
                **{k: np.concatenate([np.asarray(v) for v in vs]) for k, vs in scores.items()}}

    def _write(self, trained, ctx, x, data, decisions, confidence, phase, explained) -> str:
        cfg = self.config
        size = cfg.scenario.display_size
        source = cfg.scenario.source or cfg.scenario.kind
        images: dict[str, bytes] = {}

        def add(image: Image.Image) -> str:
            data_ = encode_png(image)
            images[image_digest(data_)] = data_
            return image_digest(data_)

        classes = trained.classes
        entries = []
        for i in range(len(x)):
            shown = to_image(x[i], size)
            roles = {}
            for method in self.methods:
                result = explained[method.id]
                heat = result["maps"][i].numpy()
                picture = overlay(shown, heat)
                extra = ctx.shown_beside(method.id, i)
                if extra is not None:
                    picture = beside(picture, extra)
                roles[method.id] = {"explanation": [ImageRef(
                    image=add(picture), map=add(map_image(heat, size)),
                    meta={k: rounded(result[k][i]) for k in ("deletion", "insertion",
                                                             "mufidelity")})]}
            decision, label = int(decisions[i]), int(data.labels[i])
            entries.append(Entry(
                id=f"{source}/{i:04d}", type="decision", source=source,
                covariates={"decision": classes[decision], "label": classes[label],
                            "correct": decision == label, "phase": str(phase[i]),
                            "confidence": rounded(confidence[i]),
                            "core": int(data.core[i]), "shortcut": int(data.shortcut[i]),
                            "conflict": bool(data.core[i] != data.shortcut[i])},
                stimulus=ImageRef(image=add(shown)), explanations=roles))
        provenance = {
            "generator": "stimuli.decisions.build",
            "classes": list(classes),
            "seed": cfg.seed,
            "model": trained.info,
            "scenario": cfg.scenario.model_dump(mode="json"),
            "params": cfg.model_dump(mode="json", exclude={"output", "cache_dir"}),
            "methods": {m.id: m.revision for m in self.methods},
            "method_details": ctx.details,
            "faithfulness": {m.id: {k: rounded(float(np.mean(explained[m.id][k])))
                                    for k in ("deletion", "insertion", "mufidelity")}
                             for m in self.methods},
            "decisions": {"accuracy": rounded(float((decisions == data.labels).float().mean())),
                          "follows_shortcut": rounded(float(
                              (decisions == data.shortcut).float().mean()))},
        }
        manifest = StimulusManifest(schema_version=SCHEMA_VERSION, name=cfg.name,
                                    provenance=provenance, entries=entries)
        digest = write_stimulus_set(cfg.output, manifest, images)
        log.info("wrote decision set %s (%d images, %d methods) to %s", digest[:12],
                 len(entries), len(self.methods), cfg.output)
        return digest


def take(data: ShortcutData, rows: torch.Tensor) -> ShortcutData:
    return ShortcutData(**{f.name: getattr(data, f.name)[rows] for f in fields(data)})


def concat(a: ShortcutData, b: ShortcutData) -> ShortcutData:
    return ShortcutData(**{f.name: torch.cat([getattr(a, f.name), getattr(b, f.name)])
                           for f in fields(a)})


def to_image(x: torch.Tensor, size: int) -> Image.Image:
    """A model input (3, S, S) in [0, 1] as shown: enlarged with crisp pixels."""
    array = (x.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array).resize((size, size), Image.Resampling.NEAREST)


def map_image(heat: np.ndarray, size: int) -> Image.Image:
    """A raw map as a grey image, 0 to its maximum (what a simulated participant reads)."""
    top = float(heat.max())
    scaled = np.clip(heat, 0, None) / top if top > 0 else np.zeros_like(heat)
    return Image.fromarray((scaled * 255).round().astype(np.uint8)).resize(
        (size, size), Image.Resampling.BILINEAR)


def beside(left: Image.Image, right: Image.Image) -> Image.Image:
    """Two images side by side on white, the right one scaled to the left's height."""
    scale = left.height / right.height
    right = right.resize((round(right.width * scale), left.height), Image.Resampling.NEAREST)
    out = Image.new("RGB", (left.width + 8 + right.width, left.height), "white")
    out.paste(left.convert("RGB"), (0, 0))
    out.paste(right.convert("RGB"), (left.width + 8, 0))
    return out

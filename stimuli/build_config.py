"""The build configuration: a TOML file validated by pydantic (see configs/demo-build.toml).

Besides its own tables, a build file has one table per listed unit source and explanation
method, named by its id (``[nmf]``, ``[exemplars]``), validated by that plugin's ``Config``.
Every problem, including a method that cannot explain a listed source, is reported at once,
one line each.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from stimuli.methods.base import MethodConfig
from stimuli.model_loaders import ModelConfig
from stimuli.registry import METHODS, MODELS, SOURCES, load_plugins
from stimuli.sources.base import SourceConfig

log = logging.getLogger(__name__)


class BuildConfigError(ValueError):
    """A build file that cannot be read or does not validate; one line per problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImagesConfig(_Section):
    """The image pool: "demo" (the model's own held-out images) or a folder path."""

    source: str = "demo"
    limit: int | None = Field(None, ge=1)  # use the first `limit` images only
    size: int = Field(28, ge=1)  # model input: shorter side resized, then a centre square
    mode: Literal["RGB", "L"] = "L"
    mean: list[float] = [0.5]
    std: list[float] = [0.5]
    display_size: int | None = Field(112, ge=1)  # side of the PNGs written; None keeps the size
    batch_size: int = Field(256, ge=1)


class UnitsConfig(_Section):
    per_layer: int = Field(12, ge=1)  # units per source and layer (matched across sources)
    pooling: Literal["mean", "max"] = "mean"


class PositionsConfig(_Section):
    """Position vectors sampled from each layer, on which dictionary sources are fitted."""

    fit_samples: int = Field(50000, ge=1)
    per_image: int = Field(8, ge=1)


class ImportanceConfig(_Section):
    n_images: int = Field(256, ge=1)


class BuildConfig(_Section):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    output: Path  # relative paths are relative to the config file
    seed: int = 0
    device: str = "cpu"
    cache_dir: Path | None = None  # default: $ASSAY_CACHE or ~/.cache/assay
    sources: list[str] = Field(["neuron", "nmf", "sae"], min_length=1)
    methods: list[str] = Field(["exemplars"], min_length=1)
    model: dict[str, Any]
    images: ImagesConfig = ImagesConfig()
    units: UnitsConfig = UnitsConfig()
    positions: PositionsConfig = PositionsConfig()
    importance: ImportanceConfig = ImportanceConfig()
    _model: ModelConfig = PrivateAttr()
    _plugins: dict[str, BaseModel] = PrivateAttr()

    @property
    def model_options(self) -> ModelConfig:
        return self._model

    def plugin_config(self, plugin_id: str) -> SourceConfig | MethodConfig:
        """The validated ``[<id>]`` table of a listed source or method (defaults if absent)."""
        return self._plugins[plugin_id]

    def plugin_tables(self) -> dict[str, dict]:
        """Every listed plugin's options, defaults filled (for the provenance)."""
        return {k: v.model_dump(mode="json") for k, v in sorted(self._plugins.items())}


def _lines(exc: ValidationError, prefix: str) -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join([prefix, *(str(p) for p in err["loc"])]).strip(".") or "config"
        out.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return out


def validate_build(raw: dict[str, Any]) -> BuildConfig:
    """Validate a parsed build file; raises BuildConfigError listing every problem."""
    load_plugins()
    problems: list[str] = []
    own = set(BuildConfig.model_fields)
    try:
        config = BuildConfig.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_lines(exc, ""))
        config = None
    sources = raw.get("sources", BuildConfig.model_fields["sources"].default)
    methods = raw.get("methods", BuildConfig.model_fields["methods"].default)
    sources = sources if isinstance(sources, list) else []
    methods = methods if isinstance(methods, list) else []
    for name, registry, kind in (("sources", SOURCES, "a unit source"),
                                 ("methods", METHODS, "an explanation method")):
        listed = sources if name == "sources" else methods
        for i, plugin_id in enumerate(listed):
            if plugin_id not in registry:
                problems.append(f"{name}.{i}: {plugin_id!r} is not {kind} "
                                f"(known: {', '.join(sorted(registry))})")
        if len(set(map(str, listed))) != len(listed):
            problems.append(f"{name}: an id is listed twice")
    plugins: dict[str, BaseModel] = {}
    for plugin_id in [*sources, *methods]:
        cls = SOURCES.get(plugin_id) or METHODS.get(plugin_id)
        if cls is None:
            continue
        table = raw.get(plugin_id, {})
        if not isinstance(table, dict):
            problems.append(f"{plugin_id}: must be a table of {plugin_id}'s options")
            continue
        try:
            plugins[plugin_id] = cls.Config.model_validate(table)
        except ValidationError as exc:
            problems.extend(_lines(exc, plugin_id))
    for key in sorted(set(raw) - own - set(plugins)):
        if key not in SOURCES and key not in METHODS:
            problems.append(f"{key}: unknown setting (a table must be named after a listed "
                            "source or method)")
        elif key not in sources and key not in methods:  # kept for when it is listed again
            log.warning("[%s] is ignored: %r is not listed in %s", key, key,
                        "sources" if key in SOURCES else "methods")
    for source_id in sources:
        for method_id in methods:
            if source_id in SOURCES and method_id in plugins:
                method = METHODS[method_id](plugins[method_id])
                why = method.unsupported(SOURCES[source_id])
                if why:
                    problems.append(f"methods: {method_id!r} cannot explain {source_id!r} "
                                    f"units: {why}")
    for method_id in methods:
        if method_id in plugins:
            why = config and METHODS[method_id](plugins[method_id]).check(config.images)
            if why:
                problems.append(f"{method_id}: {why}")
            for needed in METHODS[method_id](plugins[method_id]).required():
                if needed not in methods:
                    problems.append(f"methods: {method_id!r} builds on {needed!r}, which "
                                    "must be listed too")
    model_raw = raw.get("model")
    model = None
    if isinstance(model_raw, dict):
        source = model_raw.get("source", "demo")
        if source not in MODELS:
            problems.append(f"model.source: {source!r} is not a model source "
                            f"(known: {', '.join(sorted(MODELS))})")
        else:
            try:
                model = MODELS[source].Config.model_validate({"source": source, **model_raw})
            except ValidationError as exc:
                problems.extend(_lines(exc, "model"))
    if problems or config is None or model is None:
        raise BuildConfigError("\n".join(dict.fromkeys(problems)) or "model: a table is needed")
    config._model = model
    config._plugins = plugins
    return config


def read_build_toml(path: Path) -> tuple[dict[str, Any], Path]:
    """A build file's parsed table and the folder its relative paths are relative to."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BuildConfigError(f"cannot read build config {path}: {exc}") from None
    return raw, path.resolve().parent


def load_build_config(path: Path) -> BuildConfig:
    """Read and validate a build TOML; relative paths in it are resolved against its folder."""
    raw, base = read_build_toml(path)

    def resolve(p: Any) -> Any:
        return p if not isinstance(p, str) or Path(p).is_absolute() else str(base / p)

    for key in ("output", "cache_dir"):
        if key in raw:
            raw[key] = resolve(raw[key])
    if isinstance(raw.get("model"), dict) and "weights" in raw["model"]:
        raw["model"]["weights"] = resolve(raw["model"]["weights"])
    images = raw.get("images")
    if isinstance(images, dict) and images.get("source", "demo") != "demo":
        images["source"] = resolve(images["source"])
    for plugin_id, table in raw.items():  # a plugin's path options (a folder of seeds, ...)
        cls = SOURCES.get(plugin_id) or METHODS.get(plugin_id)
        if cls is not None and isinstance(table, dict):
            for key, field in cls.Config.model_fields.items():
                if key in table and Path in get_args(field.annotation) + (
                        field.annotation,):
                    table[key] = resolve(table[key])
    try:
        return validate_build(raw)
    except BuildConfigError as exc:
        lines = str(exc).splitlines()
        raise BuildConfigError("\n".join([f"{path}: invalid build config", *(
            "  " + line for line in lines)])) from None

"""The build configuration: a TOML file validated by pydantic (see examples/demo-build.toml)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stimuli.exemplars import SplitParams


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    """The model: the bundled demo CNN, a factory ``package.module:callable``, or an
    architecture of torchvision / timm with a local weights file."""

    source: Literal["demo", "factory", "torchvision", "timm"] = "demo"
    layers: list[str] = Field(min_length=1)
    data: Literal["auto", "fashion-mnist", "procedural"] = "auto"  # demo only
    train_samples: int = Field(60000, ge=1)  # demo only
    epochs: int = Field(2, ge=1)  # demo only
    factory: str | None = None
    arch: str | None = None
    weights: Path | None = None

    @model_validator(mode="after")
    def _needs(self) -> ModelConfig:
        if self.source == "factory" and not self.factory:
            raise ValueError(
                "model.source = 'factory' needs model.factory = 'package.module:callable'"
            )
        if self.source in ("torchvision", "timm") and not (self.arch and self.weights):
            raise ValueError(f"model.source = {self.source!r} needs model.arch and model.weights")
        return self


class ImagesConfig(_Section):
    """The image pool: "demo" (the demo model's held-out images) or a folder path."""

    source: str = "demo"
    limit: int | None = Field(None, ge=1)  # use the first `limit` images only
    size: int = Field(28, ge=1)  # model input size
    mode: Literal["RGB", "L"] = "L"
    mean: list[float] = [0.5]
    std: list[float] = [0.5]
    display_size: int | None = Field(112, ge=1)  # side of the PNGs written; None keeps the size
    batch_size: int = Field(256, ge=1)


class UnitsConfig(_Section):
    kinds: list[Literal["neuron", "nmf", "sae"]] = ["neuron", "nmf", "sae"]
    per_layer: int = Field(12, ge=1)  # units per kind and layer (matched across kinds)
    pooling: Literal["mean", "max"] = "mean"


class DictionaryConfig(_Section):
    n_components: int = Field(32, ge=1)  # NMF and SAE dictionary size
    sae_k: int = Field(4, ge=1)
    sae_epochs: int = Field(20, ge=1)
    nmf_max_iter: int = Field(200, ge=1)
    fit_samples: int = Field(50000, ge=1)  # position vectors the dictionaries are fitted on
    positions_per_image: int = Field(8, ge=1)


class ExemplarsConfig(_Section):
    n_buckets: int = Field(9, ge=1)
    n_reference_batches: int = Field(1, ge=1)
    n_query_batches: int = Field(10, ge=1)
    catch: bool = True
    hard_percentiles: tuple[float, float] | None = None
    subset_size: int = Field(2000, ge=0)  # images whose scores are kept for hard queries

    def split_params(self) -> SplitParams:
        return SplitParams(
            n_buckets=self.n_buckets,
            n_reference_batches=self.n_reference_batches,
            n_query_batches=self.n_query_batches,
            catch=self.catch,
            hard_percentiles=self.hard_percentiles,
        )


class ImportanceConfig(_Section):
    n_images: int = Field(256, ge=1)


class BuildConfig(_Section):
    name: str = Field(min_length=1, max_length=200)
    output: Path  # relative paths are relative to the config file
    seed: int = 0
    device: str = "cpu"
    cache_dir: Path | None = None  # default: $ASSAY_CACHE or ~/.cache/assay
    model: ModelConfig
    images: ImagesConfig = ImagesConfig()
    units: UnitsConfig = UnitsConfig()
    dictionary: DictionaryConfig = DictionaryConfig()
    exemplars: ExemplarsConfig = ExemplarsConfig()
    importance: ImportanceConfig = ImportanceConfig()


def load_build_config(path: Path) -> BuildConfig:
    """Read and validate a build TOML; relative paths in it are resolved against its folder."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read build config {path}: {exc}") from None
    try:
        config = BuildConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ValueError(f"{path}: {where}: {first['msg']}") from None
    base = path.resolve().parent

    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    updates = {"output": resolve(config.output)}
    if config.cache_dir is not None:
        updates["cache_dir"] = resolve(config.cache_dir)
    if config.model.weights is not None and not config.model.weights.is_absolute():
        updates["model"] = config.model.model_copy(
            update={"weights": resolve(config.model.weights)}
        )
    if config.images.source != "demo" and not Path(config.images.source).is_absolute():
        updates["images"] = config.images.model_copy(
            update={"source": str(base / config.images.source)}
        )
    return config.model_copy(update={k: v for k, v in updates.items() if v is not None})

"""The Fourier magnitude MACO keeps fixed while it optimizes the phase (Fel et al. 2023).

Two sources, both in the same units (|rfft2| of [0, 1] pixels, ``norm="backward"``, RGB in
the decorrelated colour basis of Lucid/Horama), so either can feed the same optimizer:

- ``"images"``: the mean magnitude of the researcher's own images, estimated at the model's
  input size on the centre squares the model sees (the only choice for grayscale models or
  data far from ImageNet). Cached by the images' fingerprint, the transform, the count and
  the seed.
- ``"imagenet"``: the decorrelated ImageNet spectrum published with xplique (MIT licence; the
  file Horama downloads), taken from the xplique wheel with ``pip download`` (never
  imported), checked against a pinned SHA-256 and cached.

Only the shape of the spectrum matters to MACO: it standardizes the image after the inverse
FFT, so the overall scale is left as computed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from stimuli.cache import TensorCache
from stimuli.images import ImageSource, ImageTransform, iter_batches

log = logging.getLogger(__name__)

# Lucid's colour recorrelation (the square root of ImageNet's colour covariance, scaled to a
# largest column norm of 1); rows act on flat pixels: rgb = decorrelated @ COLOR_CORRELATION.
# The one place Assay defines it: MACO recorrelates its images with it.
COLOR_CORRELATION = torch.tensor(
    [
        [0.56282854, 0.58447580, 0.58447580],
        [0.19482528, 0.0, -0.19482528],
        [0.04329450, -0.10823626, 0.06494176],
    ],
    dtype=torch.float64,
)  # 3, 3

XPLIQUE_PACKAGE = "xplique==2.0.2"
XPLIQUE_SPECTRUM_PATH = "xplique/features_visualizations/spectrum_decorrelated.npy"
XPLIQUE_SPECTRUM_SHAPE = (3, 512, 257)
# SHA-256 of the .npy bytes in xplique-2.0.2-py3-none-any.whl, pinned from a real download
XPLIQUE_SPECTRUM_SHA256 = "a4810ea049ef9a0fe4e3f26660188e53222281879b333e8fd61377f7491aafc8"

SPECTRUM_REVISION = 1  # bump when the estimate from images changes: cached estimates are redone


class SpectrumError(ValueError):
    """The ImageNet spectrum cannot be fetched or verified, or a spectrum does not fit."""


class SpectrumConfig(BaseModel):
    """Where MACO's magnitude spectrum comes from (a table the MACO config embeds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["images", "imagenet"] = "images"
    n_images: int = Field(512, ge=1)  # images averaged when source = "images"


def decorrelate(x: torch.Tensor) -> torch.Tensor:
    """RGB (N, 3, H, W) -> the decorrelated colour basis (N, 3, H, W): flat @ pinv(M)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"decorrelate expects (N, 3, H, W), got {tuple(x.shape)}")
    inverse = torch.linalg.pinv(COLOR_CORRELATION).to(x.dtype)  # 3, 3
    return (x.permute(0, 2, 3, 1) @ inverse).permute(0, 3, 1, 2)  # N, H, W, 3 -> N, 3, H, W


def fill_dc(magnitude: torch.Tensor) -> torch.Tensor:
    """Set each channel's DC bin to the mean of its three neighbours (1, 0), (-1, 0), (0, 1).

    The estimate subtracts every image's mean, so its DC is 0, which would pin MACO's mean
    colour to grey; the raw mean |DC| would instead dominate the standardized image. The
    neighbours' level lets the DC phase shift a channel's mean about as much as the lowest
    frequencies vary it. ``magnitude`` is (C, S, S//2+1), S >= 2; a new tensor is returned.
    """
    out = magnitude.clone()
    out[:, 0, 0] = (magnitude[:, 1, 0] + magnitude[:, -1, 0] + magnitude[:, 0, 1]) / 3
    return out


def estimate_spectrum(
    images: ImageSource,
    transform: ImageTransform,
    *,
    limit: int = 512,
    seed: int = 0,
    batch_size: int = 64,
) -> tuple[torch.Tensor, int]:
    """Mean |rfft2| of at most ``limit`` images: float32 (C, S, S//2+1) and the count used.

    Images are the transform's centre squares (S = ``transform.size``) as [0, 1] pixels (the
    transform's normalization is dropped: MACO's images are [0, 1] pixels), RGB decorrelated,
    each image's per-channel mean subtracted, then :func:`fill_dc`. A source with more than
    ``limit`` images is subsampled at random (seeded); unreadable images are skipped.
    """
    if limit < 1:
        raise ValueError(f"limit must be positive, not {limit}")
    if transform.size < 2:
        raise ValueError(f"a spectrum needs a size of at least 2, not {transform.size}")
    if len(images) > limit:
        rng = np.random.default_rng(seed)
        indices = sorted(rng.choice(len(images), size=limit, replace=False).tolist())
    else:
        indices = list(range(len(images)))
    pixels = replace(transform, mean=(0.0,), std=(1.0,))
    total: torch.Tensor | None = None
    count = 0
    for _, x in iter_batches(images, pixels, batch_size=batch_size, indices=indices):
        x = x.double()  # B, C, S, S
        if x.shape[1] == 3:
            x = decorrelate(x)
        x = x - x.mean(dim=(2, 3), keepdim=True)
        mag = torch.fft.rfft2(x).abs().sum(dim=0)  # C, S, S//2+1
        total = mag if total is None else total + mag
        count += x.shape[0]
    if total is None:
        raise ValueError(f"no readable images among the {len(indices)} chosen")
    return fill_dc(total / count).float(), count


def _read_wheel_spectrum(wheel: Path) -> bytes:
    """The spectrum .npy's bytes from an xplique wheel."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(XPLIQUE_SPECTRUM_PATH)
        except KeyError:
            raise SpectrumError(
                f"{wheel.name} holds no {XPLIQUE_SPECTRUM_PATH}; is {XPLIQUE_PACKAGE} the "
                'right release? Use source = "images" to estimate the spectrum from your images'
            ) from None


def _download_wheel(directory: Path, find_links: Path | None) -> Path:
    """Run ``pip download`` for the xplique wheel into ``directory``; its path."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "-d", str(directory),
    ]  # fmt: skip
    if find_links is not None:
        command += ["--no-index", "--find-links", str(find_links)]
    command.append(XPLIQUE_PACKAGE)
    log.info("downloading %s for its ImageNet spectrum", XPLIQUE_PACKAGE)
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(directory.glob("xplique-*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise SpectrumError(
            f"pip could not download {XPLIQUE_PACKAGE} (offline, or no such wheel on the "
            f"index?): {detail[-1] if detail else f'exit status {result.returncode}'}. "
            'Use source = "images" to estimate the spectrum from your own images'
        )
    return wheels[0]


def _check_digest(data: bytes, expected: str | None, where: str) -> str:
    digest = hashlib.sha256(data).hexdigest()
    if expected is not None and digest != expected:
        raise SpectrumError(
            f"{where} has SHA-256 {digest}, expected {expected}: not the published spectrum"
        )
    return digest


def _parse_npy(data: bytes, where: str) -> torch.Tensor:
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.shape != XPLIQUE_SPECTRUM_SHAPE or array.dtype != np.float32:
        raise SpectrumError(
            f"{where} is {array.dtype} {array.shape}, expected float32 {XPLIQUE_SPECTRUM_SHAPE}"
        )
    return torch.from_numpy(array.copy())


def fetch_imagenet_spectrum(
    cache_dir: Path,
    *,
    find_links: Path | None = None,
    expected_sha256: str | None = XPLIQUE_SPECTRUM_SHA256,
) -> tuple[torch.Tensor, str]:
    """xplique's decorrelated ImageNet magnitude, float32 (3, 512, 257), and its .npy's SHA-256.

    Read from ``cache_dir / "spectra"`` when there, else taken from the wheel that
    ``pip download`` fetches from pip's configured index (``find_links``: a local folder
    instead, ``--no-index``). ``expected_sha256=None`` skips the digest check (tests).
    """
    cached = Path(cache_dir) / "spectra" / f"{XPLIQUE_PACKAGE.replace('==', '-')}-spectrum.npy"
    if cached.is_file():
        data = cached.read_bytes()
        where = f"cached spectrum {cached} (delete it to download again)"
        digest = _check_digest(data, expected_sha256, where)
        return _parse_npy(data, where), digest
    with tempfile.TemporaryDirectory(prefix="assay-xplique-") as tmp:
        wheel = _download_wheel(Path(tmp), find_links)
        data = _read_wheel_spectrum(wheel)
        where = f"{XPLIQUE_SPECTRUM_PATH} in {wheel.name}"
    digest = _check_digest(data, expected_sha256, where)
    magnitude = _parse_npy(data, where)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".tmp{os.getpid()}")
    partial.write_bytes(data)
    partial.replace(cached)
    return magnitude, digest


def resize_spectrum(
    magnitude: torch.Tensor, size: int, *, channels: int | None = None
) -> torch.Tensor:
    """A (C, S', S'//2+1) magnitude at image size ``size``: (C, size, size//2+1), as Horama.

    ``channels``: the model's input channels; a spectrum with other channels is an error
    (a decorrelated RGB spectrum says nothing exact about a grayscale model's images).
    """
    if magnitude.ndim != 3:
        raise ValueError(f"a magnitude spectrum is (C, S, S//2+1), not {tuple(magnitude.shape)}")
    if channels is not None and magnitude.shape[0] != channels:
        raise SpectrumError(
            f"a {magnitude.shape[0]}-channel spectrum cannot shape a {channels}-channel "
            'model\'s images; use source = "images" to estimate the spectrum from its own images'
        )
    if size < 2:
        raise ValueError(f"a spectrum needs a size of at least 2, not {size}")
    shape = (size, size // 2 + 1)
    if tuple(magnitude.shape[1:]) == shape:
        return magnitude
    return F.interpolate(
        magnitude[None], size=shape, mode="bilinear", align_corners=False, antialias=True
    )[0]  # C, size, size//2+1


def magnitude_spectrum(
    config: SpectrumConfig,
    *,
    images: ImageSource | None,
    transform: ImageTransform,
    cache_dir: Path,
    seed: int,
) -> tuple[torch.Tensor, dict]:
    """MACO's fixed magnitude, float32 (C, S, S//2+1) at S = ``transform.size``, and its
    provenance for the stimulus manifest (source, SHA-256, images used or package)."""
    channels = 3 if transform.mode == "RGB" else 1
    size = transform.size
    if config.source == "imagenet":
        if channels != 3:
            raise SpectrumError(
                'source = "imagenet" is a 3-channel (decorrelated RGB) spectrum but the model '
                'takes 1 channel; use source = "images" to estimate it from its own images'
            )
        raw, digest = fetch_imagenet_spectrum(cache_dir)
        magnitude = resize_spectrum(raw, size, channels=channels).contiguous()
        return magnitude, {
            "source": "imagenet",
            "package": XPLIQUE_PACKAGE,
            "file": XPLIQUE_SPECTRUM_PATH,
            "sha256": digest,
            "size": size,
        }
    if images is None:
        raise ValueError('source = "images" needs the images to estimate the spectrum from')
    cache = TensorCache(Path(cache_dir) / "spectra")
    key = {
        "revision": SPECTRUM_REVISION,
        "images": images.fingerprint(),
        "transform": repr(transform),
        "n_images": config.n_images,
        "seed": seed,
    }
    entry = cache.load("spectrum", key)
    if entry is None:
        magnitude, count = estimate_spectrum(images, transform, limit=config.n_images, seed=seed)
        entry = {"magnitude": magnitude, "n_images": count}
        cache.save("spectrum", key, entry)
    magnitude = entry["magnitude"]
    return magnitude, {
        "source": "images",
        "sha256": hashlib.sha256(magnitude.numpy().tobytes()).hexdigest(),
        "n_images": int(entry["n_images"]),
        "images": key["images"],
        "size": size,
    }
